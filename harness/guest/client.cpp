#include "harness/guest/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "common/parse.hpp"
#include "common/clock.hpp"
#include "harness/guest/unix_socket.hpp"

namespace lm::guest {

std::map<std::string, std::string, std::less<>> parse_reply_fields(std::string_view reply) {
  std::map<std::string, std::string, std::less<>> out;
  size_t pos = 0;
  bool first = true;
  while (pos < reply.size()) {
    size_t end = reply.find(' ', pos);
    if (end == std::string_view::npos) end = reply.size();
    std::string_view word = reply.substr(pos, end - pos);
    pos = end + 1;
    if (word.empty()) continue;
    size_t eq = word.find('=');
    if (first && eq == std::string_view::npos) {
      first = false;
      continue;
    }
    first = false;
    if (eq != std::string_view::npos) out[std::string(word.substr(0, eq))] = std::string(word.substr(eq + 1));
  }
  return out;
}

namespace {

template <class Map>
Result<uint64_t> field_u64(const Map& fields, std::string_view name, std::string_view reply) {
  auto it = fields.find(name);
  if (it == fields.end())
    return Error::msg(strf("guest reply '%.*s' lacks %.*s=", int(reply.size()), reply.data(), int(name.size()),
                           name.data()));
  return parse_u64(it->second);
}

}  // namespace

Result<ControlClient> ControlClient::connect(const std::string& path, int timeout_ms) {
  ControlClient c;
  c.path_ = path;
  c.fd_ = LM_TRY_CTX(unix_connect(path, SOCK_STREAM, timeout_ms), "guest control");
  return c;
}

Result<std::string> ControlClient::request(std::string_view line, int timeout_ms) {
  std::string what = strf("guest control %s", path_.c_str());
  std::string out(line);
  out += '\n';
  LM_TRY(send_all(fd_.get(), out.data(), out.size(), what));
  for (;;) {
    size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string reply = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      if (reply.rfind("ok", 0) == 0) return reply;
      return Error::msg(strf("%s: '%.*s' -> %s", what.c_str(), int(line.size()), line.data(), reply.c_str()));
    }
    LM_TRY(wait_readable(fd_.get(), timeout_ms, strf("%s (request '%.*s')", what.c_str(), int(line.size()), line.data())));
    char buf[4096];
    ssize_t n = ::recv(fd_.get(), buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno("read from " + what);
    if (n == 0) return Error::msg(what + ": guest closed the connection");
    buffer_.append(buf, size_t(n));
  }
}

Result<GuestStatus> ControlClient::status() {
  std::string reply = LM_TRY(request("status"));
  auto f = parse_reply_fields(reply);
  GuestStatus s;
  s.pid = pid_t(LM_TRY(field_u64(f, "pid", reply)));
  s.ram_addr = LM_TRY(field_u64(f, "ram", reply));
  s.ram_size = LM_TRY(field_u64(f, "size", reply));
  s.steps = LM_TRY(field_u64(f, "steps", reply));
  s.epoch = LM_TRY(field_u64(f, "epoch", reply));
  s.threads = unsigned(LM_TRY(field_u64(f, "threads", reply)));
  auto rate = f.find("rate");
  if (rate == f.end()) return Error::msg("guest status reply lacks rate=: " + reply);
  s.steps_per_s = LM_TRY(parse_double(rate->second));
  return s;
}

Result<uint64_t> ControlClient::next_epoch() {
  std::string reply = LM_TRY(request("epoch"));
  return field_u64(parse_reply_fields(reply), "epoch", reply);
}

Result<uint64_t> ControlClient::verify() {
  std::string reply = LM_TRY(request("verify", 600000));
  return field_u64(parse_reply_fields(reply), "pages", reply);
}

Result<void> ControlClient::pause() {
  LM_TRY(request("pause"));
  return ok();
}

Result<void> ControlClient::resume() {
  LM_TRY(request("resume"));
  return ok();
}

Result<void> ControlClient::quit() {
  LM_TRY(request("quit"));
  return ok();
}

Result<std::vector<WriteLogEpoch>> read_write_log(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "r");
  if (!f) return Error::from_errno(strf("open write log %s", path.c_str()));
  std::vector<WriteLogEpoch> out;
  char line[256];
  unsigned long lineno = 0;
  uint64_t left = 0;
  Result<void> status = ok();
  while (std::fgets(line, sizeof line, f)) {
    lineno++;
    unsigned long long a, b;
    if (left > 0) {
      if (std::sscanf(line, "0x%llx", &a) != 1) {
        status = Error::msg(strf("write log %s line %lu: expected a page address", path.c_str(), lineno));
        break;
      }
      out.back().pages.push_back(a);
      left--;
    } else if (!out.empty() && std::sscanf(line, "unmapped 0x%llx 0x%llx", &a, &b) == 2) {
      out.back().unmapped.push_back({a, b});
    } else if (std::sscanf(line, "epoch %llu pages %llu", &a, &b) == 2) {
      out.push_back(WriteLogEpoch{a, {}});
      out.back().pages.reserve(b);
      left = b;
    } else {
      status = Error::msg(strf("write log %s line %lu: expected 'epoch E pages N'", path.c_str(), lineno));
      break;
    }
  }
  std::fclose(f);
  if (!status) return std::move(status).error();
  if (left > 0)
    return Error::msg(strf("write log %s: last epoch is missing %lu page lines", path.c_str(), (unsigned long)left));
  return out;
}

GuestProcess::~GuestProcess() { kill_and_reap(); }

void GuestProcess::kill_and_reap() {
  if (child_.running()) (void)child_.kill_and_wait();
}

Result<GuestProcess> GuestProcess::launch(const std::string& guest_binary, const std::vector<std::string>& args,
                                          ParentExit on_parent_exit) {
  std::vector<std::string> argv{guest_binary};
  argv.insert(argv.end(), args.begin(), args.end());
  SpawnOptions options;
  options.stdout_to = Stdio::pipe;
  options.on_parent_exit = on_parent_exit;
  GuestProcess g;
  g.child_ = LM_TRY(Subprocess::spawn(argv, options));
  g.stdout_ = g.child_.take_pipe(STDOUT_FILENO);
  return g;
}

Result<void> GuestProcess::wait_ready(int timeout_ms) {
  std::string what = strf("guest pid %d", child_.pid());
  uint64_t deadline = now_ns() + uint64_t(timeout_ms) * 1000000;
  size_t nl;
  while ((nl = stdout_buf_.find('\n')) == std::string::npos) {
    int left = int((int64_t(deadline) - int64_t(now_ns())) / 1000000);
    if (left <= 0) return Error::sys(ETIMEDOUT, what + ": no READY line within " + std::to_string(timeout_ms) + " ms");
    pollfd p[2] = {{stdout_.get(), POLLIN, 0}, {child_.pidfd(), POLLIN, 0}};
    int n = ::poll(p, 2, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno("poll stdout of " + what);
    if (p[0].revents) {
      char buf[512];
      ssize_t r = ::read(stdout_.get(), buf, sizeof buf);
      if (r > 0) {
        stdout_buf_.append(buf, size_t(r));
        continue;
      }
    }
    if (p[1].revents || p[0].revents) {
      const pid_t pid = child_.pid();
      auto st = wait_exit(1000);
      if (st && *st > 128) return Error::msg(guest_exit_text(pid, *st) + " before READY");
      return Error::msg(strf("%s exited before READY (status %d)", what.c_str(), st ? *st : -1));
    }
  }
  std::string line = stdout_buf_.substr(0, nl);
  if (line.rfind("READY ", 0) != 0) return Error::msg(strf("%s printed '%s' instead of READY", what.c_str(), line.c_str()));
  auto f = parse_reply_fields(line);
  ram_addr_ = LM_TRY_CTX(field_u64(f, "ram", line), what);
  ram_size_ = LM_TRY_CTX(field_u64(f, "size", line), what);
  auto control = f.find("control");
  if (control == f.end()) return Error::msg(what + ": READY line lacks control=");
  control_path_ = control->second;
  stdout_.reset();  // the guest prints nothing after READY
  control_ = std::make_unique<ControlClient>(LM_TRY_CTX(ControlClient::connect(control_path_, timeout_ms), what));
  return ok();
}

namespace {

std::string control_socket_path(const std::string& work_dir) {
  return strf("%s/guest-%d-%lx.sock", work_dir.c_str(), int(::getpid()), (unsigned long)(now_ns() & 0xffffffffff));
}

// A guest fills its RAM before READY; a 2 GiB prefilled guest took ~10 s on
// the 2-core test machines, so the wait grows with the RAM.
int ready_timeout_ms(const GuestOptions& o) {
  constexpr uint64_t kBaseMs = 10000, kPerGiBMs = 10000;
  return int(kBaseMs + kPerGiBMs * ((o.ram_bytes + (1ull << 30) - 1) >> 30));
}

}  // namespace

Result<GuestProcess> GuestProcess::spawn(const std::string& guest_binary, const GuestOptions& o,
                                         const std::string& work_dir) {
  std::vector<std::string> args = {"--ram", std::to_string(o.ram_bytes), "--rate", o.rate, "--pattern", o.pattern,
                                   "--content", o.content, "--write", o.write, "--threads",
                                   std::to_string(o.threads), "--seed", std::to_string(o.seed), "--control",
                                   control_socket_path(work_dir)};
  if (o.churn) args.push_back("--churn");
  if (o.prefill) args.push_back("--prefill");
  if (!o.write_log.empty()) {
    args.push_back("--write-log");
    args.push_back(o.write_log);
  }
  args.insert(args.end(), o.extra_args.begin(), o.extra_args.end());
  GuestProcess g = LM_TRY(launch(guest_binary, args, ParentExit::die));
  LM_TRY(g.wait_ready(ready_timeout_ms(o)));
  return g;
}

Result<GuestProcess> GuestProcess::spawn_resume(const std::string& guest_binary, const std::string& handoff_path,
                                                const std::string& work_dir) {
  return launch(guest_binary, {"--resume", "--handoff", handoff_path, "--control", control_socket_path(work_dir)});
}

Result<int> GuestProcess::wait_exit(int timeout_ms) {
  if (!child_.running()) return Error::msg("guest already reaped");
  ExitStatus st = LM_TRY(child_.wait(timeout_ms));
  return st.shell_code();
}

Result<int> GuestProcess::stop(int timeout_ms) {
  if (!child_.running()) return Error::msg("guest already reaped");
  if (!control_ || !control_->quit()) (void)child_.send_signal(SIGTERM);
  auto st = wait_exit(timeout_ms);
  if (st) return st;
  kill_and_reap();
  return Error::msg(strf("guest pid %d did not exit within %d ms; killed", child_.pid(), timeout_ms));
}

std::string guest_exit_text(pid_t pid, int status) {
  if (status > 128) {
    const char* name = sigabbrev_np(status - 128);
    return name ? strf("guest pid %d was killed by SIG%s", pid, name)
                : strf("guest pid %d was killed by signal %d", pid, status - 128);
  }
  return strf("guest pid %d exited with status %d", pid, status);
}

Result<std::string> guest_binary_from_env() {
  const char* bin = std::getenv("LM_GUEST_BIN");
  if (!bin || !*bin)
    return Error::msg("LM_GUEST_BIN is not set: register the test with env: {'LM_GUEST_BIN': guest_exe.full_path()}");
  return std::string(bin);
}

}  // namespace lm::guest
