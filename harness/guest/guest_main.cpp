// livemig-guest: the synthetic reference VM. See docs/guest.md.
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <deque>
#include <string>
#include <vector>

#include "common/args.hpp"
#include "common/clock.hpp"
#include "common/parse.hpp"
#include "harness/guest/churn.hpp"
#include "harness/guest/handoff.hpp"
#include "harness/guest/runtime.hpp"
#include "harness/guest/unix_socket.hpp"

namespace lm::guest {
namespace {

const std::vector<OptionSpec> kOptions = {
    {"ram", true, "RAM region size (default 64M)"},
    {"ram-addr", true, "fixed virtual address of the RAM region (default 0x400000000000)"},
    {"rate", true, "pages written per second, all threads together, or 'max' (default 1000)"},
    {"pattern", true, "uniform | hotspot[:HOT_FRACTION[:HOT_PROB]] | zipf[:S] | sequential | stride[:PAGES]"},
    {"content", true, "zero | text | ints | random | mixed (default mixed)"},
    {"write", true, "page | word: rewrite whole pages or one word per write (default page)"},
    {"threads", true, "writer threads, each owning its own pages (default 1)"},
    {"ram-pages", true, "huge | small: RAM on transparent huge pages (MADV_HUGEPAGE) or 4 KiB pages (default small)"},
    {"cpus", true, "run on these CPUs only, e.g. 1 or 0,2-3 (default: as started)"},
    {"seed", true, "workload seed (default 1)"},
    {"control", true, "unix socket path of the control socket (default /tmp/livemig-guest-PID.sock)"},
    {"write-log", true, "append each closed epoch's written page addresses to this file (tests)"},
    {"prefill", false, "write version 1 of every data page before READY (a fully populated VM)"},
    {"churn", false, "map, unmap, mremap, grow the heap and MADV_DONTNEED outside RAM, all logged"},
    {"resume", false, "resume a frozen image handed over by an engine (needs --handoff)"},
    {"handoff", true, "unix socket of the engine for --resume"},
    {"help", false, "this text"},
};

struct Setup {
  RamView ram;
  uint64_t ram_addr = 0, ram_size = 0;
  UniqueFd handoff_conn;  // resume mode
};

// Pins this process, and the threads it starts afterwards, to a CPU list
// ("1", "0,2-3"): the engine and the guest then do not share a core.
Result<void> pin_to_cpus(const std::string& list) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (size_t at = 0; at <= list.size();) {
    size_t comma = std::min(list.find(',', at), list.size());
    std::string part = list.substr(at, comma - at);
    size_t dash = part.find('-');
    uint64_t lo = LM_TRY(parse_u64(part.substr(0, dash)));
    uint64_t hi = dash == std::string::npos ? lo : LM_TRY(parse_u64(part.substr(dash + 1)));
    if (hi < lo || hi >= CPU_SETSIZE) return Error::msg(strf("bad CPU range '%s' in '%s'", part.c_str(), list.c_str()));
    for (uint64_t c = lo; c <= hi; c++) CPU_SET(int(c), &set);
    at = comma + 1;
  }
  if (::sched_setaffinity(0, sizeof set, &set) != 0)
    return Error::from_errno(strf("pid %d: sched_setaffinity to CPUs %s", int(::getpid()), list.c_str()));
  return ok();
}

Result<Setup> create_ram(const Args& args) {
  WorkloadConfig cfg;
  uint64_t size = LM_TRY(args.get_size("ram", 64ull << 20));
  uint64_t addr = LM_TRY(args.get_u64("ram-addr", kDefaultRamAddr));
  std::string rate = args.get_or("rate", "1000");
  cfg.rate = rate == "max" ? 0 : LM_TRY_CTX(parse_double(rate), "--rate");
  if (cfg.rate < 0) return Error::msg("--rate must be >= 0 or 'max'");
  LM_TRY(parse_pattern(args.get_or("pattern", "uniform"), cfg));
  cfg.content = LM_TRY(parse_content_profile(args.get_or("content", "mixed")));
  cfg.write = LM_TRY(parse_write_mode(args.get_or("write", "page")));
  cfg.threads = uint32_t(LM_TRY(args.get_u64("threads", 1)));
  cfg.seed = LM_TRY(args.get_u64("seed", 1));
  if (addr % kPageSize != 0) return Error::msg(strf("--ram-addr 0x%lx is not page aligned", (unsigned long)addr));
  LM_TRY(plan_layout(size, cfg.threads));
  const RamPages pages = LM_TRY_CTX(parse_ram_pages(args.get_or("ram-pages", "small")), "--ram-pages");
  void* p = LM_TRY(map_new_guest_ram(addr, size, pages));
  Setup s;
  s.ram = LM_TRY(RamView::initialize(p, addr, size, cfg));
  if (args.has("prefill")) {
    for (uint64_t page = 0; page < s.ram.data_pages(); page++) {
      write_page_version(s.ram.data_page(page), cfg.content, cfg.write, cfg.seed, page, 1);
      s.ram.versions[page] = 1;
    }
  }
  s.ram_addr = addr;
  s.ram_size = size;
  return s;
}

Result<Setup> resume_ram(const Args& args) {
  auto path = args.get("handoff");
  if (!path) return Error::msg("--resume needs --handoff SOCKET");
  ResumeRam r = LM_TRY(handoff_resume(*path, 30000));
  Setup s;
  s.ram_addr = r.ram_addr;
  s.ram_size = r.ram_size;
  s.handoff_conn = std::move(r.conn);
  auto view = RamView::attach(r.base, r.ram_addr, r.ram_size);
  if (!view) {
    handoff_report_running(s.handoff_conn.get(), Result<void>(view.error()), now_ns());
    return std::move(view).error().context("resume");
  }
  s.ram = *view;
  return s;
}

// steps/s over about the last second, from samples taken by the control loop.
class RateMeter {
 public:
  void sample(uint64_t steps) {
    uint64_t now = now_ns();
    samples_.push_back({now, steps});
    while (samples_.size() > 2 && samples_[1].first + 1500000000 < now) samples_.pop_front();
  }
  double rate(uint64_t steps) const {
    uint64_t now = now_ns();
    const auto* from = samples_.empty() ? nullptr : &samples_.front();
    for (const auto& s : samples_)
      if (s.first + 1000000000 <= now) from = &s;
    if (!from || from->first >= now) return 0;
    return double(steps - from->second) * 1e9 / double(now - from->first);
  }

 private:
  std::deque<std::pair<uint64_t, uint64_t>> samples_;
};

struct Client {
  UniqueFd fd;
  std::string buffer;
};

class Guest {
 public:
  Guest(Setup s, std::unique_ptr<WriteLog> log, std::string control_path, bool churn)
      : setup_(std::move(s)), rt_(setup_.ram, std::move(log)), control_path_(std::move(control_path)), churn_(churn) {}

  Result<int> run() {
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    UniqueFd sigfd(::signalfd(-1, &sigs, SFD_CLOEXEC));
    if (!sigfd.valid()) return Error::from_errno("signalfd");
    UniqueFd listen_fd = LM_TRY_CTX(unix_listen(control_path_, SOCK_STREAM), "control socket");

    std::vector<std::function<void(WorkerSlot&)>> extra;
    uint64_t seed = setup_.ram.header->seed;
    if (churn_) extra.push_back([this, seed](WorkerSlot& slot) { run_churn(rt_, slot, seed); });
    if (!setup_.handoff_conn.valid()) log_initial_state();
    else rt_.finish_interrupted_steps();
    rt_.start(std::move(extra));
    if (setup_.handoff_conn.valid()) handoff_report_running(setup_.handoff_conn.get(), ok(), now_ns());

    std::printf("READY pid=%d ram=0x%lx size=%lu control=%s\n", int(::getpid()), (unsigned long)setup_.ram_addr,
                (unsigned long)setup_.ram_size, control_path_.c_str());
    std::fflush(stdout);

    bool quit = false;
    while (!quit) {
      // The engine that resumed us: -1 (ignored by poll) once it released us.
      std::vector<pollfd> fds = {{listen_fd.get(), POLLIN, 0}, {sigfd.get(), POLLIN, 0},
                                 {setup_.handoff_conn.get(), POLLIN, 0}};
      for (auto& c : clients_) fds.push_back({c.fd.get(), POLLIN, 0});
      int n = ::poll(fds.data(), fds.size(), churn_ ? 20 : 100);
      if (n < 0 && errno != EINTR) return Error::from_errno("poll control socket");
      meter_.sample(rt_.ram().total_steps());
      if (churn_) heap_.tick(rt_);
      if (n <= 0) continue;
      if (fds[1].revents) break;
      if (fds[0].revents) {
        int c = ::accept4(listen_fd.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) clients_.push_back({UniqueFd(c), {}});
      }
      if (fds[2].revents) {
        auto released = handoff_read_release(setup_.handoff_conn.get());
        if (!released) {
          // Pages it never received would read as zeros: do not run on.
          std::fprintf(stderr, "livemig-guest pid %d: exiting: %s before releasing it\n", int(::getpid()),
                       released.error().message.c_str());
          ::unlink(control_path_.c_str());
          std::fflush(nullptr);
          ::_exit(3);
        }
        setup_.handoff_conn.reset();
      }
      for (size_t i = 3; i < fds.size() && !quit; i++) {
        if (!fds[i].revents) continue;
        quit = serve(clients_[i - 3]);
      }
      std::erase_if(clients_, [](const Client& c) { return !c.fd.valid(); });
    }
    rt_.stop();
    ::unlink(control_path_.c_str());
    if (rt_.logging()) LM_TRY(rt_.next_epoch());  // the last, unclosed epoch
    return 0;
  }

 private:
  // A fresh guest wrote its header and thread states before READY: epoch 0.
  void log_initial_state() {
    const RamView& ram = rt_.ram();
    for (uint64_t off = 0; off < ram.header->version_table_offset; off += kPageSize)
      rt_.log_page(rt_.control_slot(), 0, ram.header->ram_addr + off);
  }

  // Reads what the client sent and answers every complete line; true on quit.
  bool serve(Client& c) {
    char buf[1024];
    ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n <= 0) {
      c.fd.reset();
      return false;
    }
    c.buffer.append(buf, size_t(n));
    if (c.buffer.size() > 4096 && c.buffer.find('\n') == std::string::npos) {  // not our protocol
      c.fd.reset();
      return false;
    }
    size_t nl;
    while ((nl = c.buffer.find('\n')) != std::string::npos) {
      std::string line = c.buffer.substr(0, nl);
      c.buffer.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      bool quit = line == "quit";
      std::string reply = handle(line) + "\n";
      if (!send_all(c.fd.get(), reply.data(), reply.size(), "control client")) c.fd.reset();
      if (quit) return true;
      if (!c.fd.valid()) return false;
    }
    return false;
  }

  std::string handle(const std::string& line) {
    if (line == "status") {
      uint64_t steps = rt_.ram().total_steps();
      return strf("ok pid=%d ram=0x%lx size=%lu steps=%lu rate=%.1f epoch=%lu threads=%u", int(::getpid()),
                  (unsigned long)setup_.ram_addr, (unsigned long)setup_.ram_size, (unsigned long)steps,
                  meter_.rate(steps), (unsigned long)rt_.epoch(), rt_.ram().header->threads);
    }
    if (line == "epoch") {
      auto e = rt_.next_epoch();
      return e ? strf("ok epoch=%lu", (unsigned long)*e) : "error " + e.error().message;
    }
    if (line == "pause") return rt_.pause(), "ok";
    if (line == "resume") return rt_.resume(), "ok";
    if (line == "verify") {
      auto v = rt_.verify();
      return v ? strf("ok pages=%lu", (unsigned long)*v) : "error " + v.error().message;
    }
    if (line == "quit") return "ok";
    return "error unknown request '" + line + "' (status, epoch, pause, resume, verify, quit)";
  }

  Setup setup_;
  GuestRuntime rt_;
  std::string control_path_;
  bool churn_;
  HeapChurn heap_;
  RateMeter meter_;
  std::vector<Client> clients_;
};

Result<int> guest_main(const std::vector<std::string>& argv) {
  Args args = LM_TRY(Args::parse(argv, kOptions));
  if (args.has("help")) {
    std::fprintf(stderr, "usage: livemig-guest [OPTIONS]\n%s", Args::usage(kOptions).c_str());
    return 0;
  }
  // Signals are taken through a signalfd by the control loop: block them
  // before any thread starts so that every thread inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  if (auto cpus = args.get("cpus")) LM_TRY_CTX(pin_to_cpus(*cpus), "--cpus");
  Setup setup = args.has("resume") ? LM_TRY(resume_ram(args)) : LM_TRY(create_ram(args));
  std::unique_ptr<WriteLog> log;
  if (auto path = args.get("write-log")) log = LM_TRY(WriteLog::open(*path));
  std::string control = args.get_or("control", strf("/tmp/livemig-guest-%d.sock", int(::getpid())));
  Guest guest(std::move(setup), std::move(log), control, args.has("churn"));
  return guest.run();
}

}  // namespace
}  // namespace lm::guest

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto r = lm::guest::guest_main(args);
  if (!r) {
    std::fprintf(stderr, "livemig-guest: %s\n", r.error().message.c_str());
    return 1;
  }
  return *r;
}
