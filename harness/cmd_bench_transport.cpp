// livemig bench transport: throughput and CPU cost of the transport backends
// between two processes on loopback, with the plain-socket baselines measured
// in the same run (a minimal send/recv loop, and iperf3 when installed), so
// the figures that matter are ratios, not absolute numbers.
//
// Each measurement starts a receiver process (`livemig bench transport
// --serve-receiver MODE`, exec'd: DPDK's EAL does not survive fork, and the
// sender's threads make fork unsafe) that listens on loopback, accepts N
// channels, one thread each, and reports bytes and its CPU seconds over a
// pipe; the parent sends messages of the given size on N threads for the
// given time, then closes the channels with the close handshake, so every
// byte counted arrived. With --tls each backend B is also measured as "B+tls"
// (TLS 1.3 over it, transport/tls_channel.hpp) right after B, in the same
// repetition, and the ratio to B is reported.
#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "common/json.hpp"
#include "common/subprocess.hpp"
#include "harness/cli.hpp"
#include "harness/commands.hpp"
#include "transport/channel.hpp"
#include "transport/stream.hpp"
#include "transport/tls_channel.hpp"

namespace lm::cmd {
namespace {

using transport::ChannelOptions;
using transport::ConstBuffer;
using transport::Timeout;

struct Config {
  std::vector<std::string> modes;  // backend names, "plain", "iperf3"
  unsigned channels = 1;
  std::vector<uint64_t> sizes;
  double seconds = 3;
  unsigned repeat = 1;
  std::string extra;
  transport::ZeroCopy zero_copy = transport::ZeroCopy::off;
  bool tls = false;  // modes "B+tls" follow each backend B
};

struct Sample {
  double gbps = 0;
  double cpu_send = 0;  // CPU seconds, sending process
  double cpu_recv = 0;  // CPU seconds, receiving process
  double seconds = 0;
  uint64_t bytes = 0;
  std::string error;
};

struct ReceiverReport {
  uint64_t bytes = 0;
  double cpu = 0;
  int ok = 0;
  char error[240] = {};
};

double thread_cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

void write_report(int fd, const ReceiverReport& r) { (void)!::write(fd, &r, sizeof r); }

// A receiver that cannot go on: reports why and exits.
[[noreturn]] void receiver_failed(int report_fd, const std::string& why) {
  ReceiverReport r;
  snprintf(r.error, sizeof r.error, "%s", why.c_str());
  write_report(report_fd, r);
  _exit(1);
}

// Reads the receiver's report and reaps it; kills it if it does not answer
// in time.
bool collect(Subprocess& child, int fd, ReceiverReport* out, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  bool got = poll(&p, 1, timeout_ms) > 0 && ::read(fd, out, sizeof *out) == ssize_t(sizeof *out);
  (void)child.wait_or_kill(got ? 10000 : 0);
  return got;
}

// The common end of a measurement: the sender's figures, then the receiver's
// report, which must account for every byte sent.
void finish(Sample& s, const Config& c, Subprocess& child, int report_fd, uint64_t sent, bool sender_failed,
            double cpu0, const Stopwatch& sw) {
  s.seconds = sw.elapsed_s();
  s.cpu_send = thread_cpu_now() - cpu0;
  ReceiverReport r;
  bool got = collect(child, report_fd, &r, int(c.seconds * 1000) + 40000);
  if (s.error.empty() && (!got || !r.ok)) s.error = got ? std::string("receiver: ") + r.error : "receiver did not report";
  if (s.error.empty() && sender_failed) s.error = "sender failed";
  if (s.error.empty() && r.bytes != sent)
    s.error = strf("receiver counted %llu bytes, sender sent %llu", (unsigned long long)r.bytes,
                   (unsigned long long)sent);
  s.bytes = sent;
  s.cpu_recv = r.cpu;
  s.gbps = double(sent) * 8 / s.seconds / 1e9;
}

// --- Channel backends ------------------------------------------------------------

// The receiving side of a channel measurement: accepts `channels`
// channels, receives until each closes, reports over report_fd, exits.
[[noreturn]] void serve_receiver(transport::Listener& listener, unsigned channels, Timeout io_timeout, int report_fd) {
  ReceiverReport r;
  std::vector<std::unique_ptr<transport::Channel>> chans;
  for (unsigned i = 0; i < channels; ++i) {
    auto ch = listener.accept(Timeout(10000));
    if (!ch) receiver_failed(report_fd, ch.error().message);
    chans.push_back(std::move(*ch));
  }
  double cpu0 = thread_cpu_now();
  std::atomic<uint64_t> bytes{0};
  std::atomic<int> failed{0};
  std::string first_error;
  std::vector<std::thread> threads;
  for (auto& ch : chans)
    threads.emplace_back([&, ch = ch.get()] {
      uint64_t n = 0;
      for (;;) {
        auto m = ch->recv(io_timeout);
        if (!m) {
          if (failed.fetch_add(1) == 0) first_error = m.error().message;
          return;
        }
        if (m->status == transport::RecvStatus::closed) break;
        n += m->bytes.size();
      }
      bytes += n;
      (void)ch->close(Timeout(5000));
    });
  for (auto& t : threads) t.join();
  r.bytes = bytes;
  r.cpu = thread_cpu_now() - cpu0;
  r.ok = failed == 0;
  snprintf(r.error, sizeof r.error, "%s", first_error.c_str());
  write_report(report_fd, r);
  _exit(0);
}

constexpr std::string_view kTlsSuffix = "+tls";

bool is_tls_mode(std::string_view mode) {
  return mode.size() > kTlsSuffix.size() && mode.substr(mode.size() - kTlsSuffix.size()) == kTlsSuffix;
}

// The channel options of a mode ("tcp", "uring+tls") and its backend name.
Result<ChannelOptions> channel_options(const Config& c, const std::string& mode, uint64_t size, std::string* backend) {
  ChannelOptions o;
  o.max_message = std::max<size_t>(size, 1 << 20);
  o.send_window = std::max<size_t>(4 * size, 8 << 20);
  o.zero_copy = c.zero_copy;
  o.extra = c.extra;
  *backend = mode;
  if (is_tls_mode(mode)) {
    backend->resize(mode.size() - kTlsSuffix.size());
    // A fixed key: the benchmark measures the cost of encryption, not secrecy.
    static constexpr char kBenchKey[] = "livemig bench transport key, 32";
    o.tls = LM_TRY(transport::TlsConfig::psk(std::as_bytes(std::span(kBenchKey, 32))));
  }
  return o;
}

// The receiving process of a measurement, the read end of its report pipe
// and the address it listens on.
struct Receiver {
  Subprocess child;
  UniqueFd report;
  std::string address;
};

// Starts `livemig bench transport --serve-receiver MODE ...` (MODE: a
// backend, or "plain") and reads the address it listens on.
Result<Receiver> start_receiver(const Config& c, const std::string& mode, uint64_t size) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return Error::from_errno("pipe for the receiver's report");
  UniqueFd report_read(p[0]), report_write(p[1]);
  if (pipe2(p, O_CLOEXEC) < 0) return Error::from_errno("pipe for the receiver's address");
  UniqueFd address_read(p[0]), address_write(p[1]);
  std::vector<std::string> argv = {"/proc/self/exe", "bench", "transport", "--serve-receiver", mode,
                                   "--channels", std::to_string(c.channels), "--msg-size", std::to_string(size),
                                   "--seconds", strf("%g", c.seconds),
                                   "--report-fd", std::to_string(report_write.get()),
                                   "--address-fd", std::to_string(address_write.get())};
  if (!c.extra.empty()) argv.insert(argv.end(), {"--extra", c.extra});
  if (c.zero_copy == transport::ZeroCopy::on) argv.push_back("--zero-copy");
  SpawnOptions options;
  options.pass_fds = {report_write.get(), address_write.get()};
  options.on_parent_exit = ParentExit::die;
  Receiver r{LM_TRY_CTX(Subprocess::spawn(argv, options), "start the receiver"), std::move(report_read), {}};
  report_write.reset();
  address_write.reset();
  char buf[512] = {};
  pollfd pf{address_read.get(), POLLIN, 0};
  ssize_t n = poll(&pf, 1, 30000) > 0 ? ::read(address_read.get(), buf, sizeof buf - 1) : -1;
  if (n <= 0) {
    ReceiverReport report;
    collect(r.child, r.report.get(), &report, 1000);
    return Error::msg(std::string("receiver did not listen") +
                      (report.error[0] ? std::string(": ") + report.error : ""));
  }
  r.address.assign(buf, size_t(n));
  return r;
}

Sample run_channels(const Config& c, const std::string& mode, uint64_t size) {
  Sample s;
  std::string backend;
  auto options = channel_options(c, mode, size, &backend);
  if (!options) return Sample{.error = options.error().message};
  const ChannelOptions& o = *options;
  Timeout io_timeout(int64_t(c.seconds * 1000) + 30000);
  auto receiver = start_receiver(c, mode, size);
  if (!receiver) return Sample{.error = receiver.error().message};
  const std::string& address = receiver->address;

  std::vector<std::unique_ptr<transport::Channel>> chans;
  for (unsigned i = 0; i < c.channels && s.error.empty(); ++i) {
    auto ch = transport::connect(address, o, Timeout(10000));
    if (!ch)
      s.error = ch.error().message;
    else
      chans.push_back(std::move(*ch));
  }
  double cpu0 = thread_cpu_now();
  Stopwatch sw;
  std::atomic<uint64_t> sent{0};
  std::atomic<bool> failed{false};
  if (s.error.empty()) {
    std::vector<std::thread> threads;
    uint64_t stop_at = now_ns() + uint64_t(c.seconds * 1e9);
    for (auto& ch : chans)
      threads.emplace_back([&, ch = ch.get()] {
        // Four buffers in rotation: a buffer is rewritten only after the channel completed it.
        constexpr int kSlots = 4;
        std::vector<std::vector<std::byte>> bufs(kSlots, std::vector<std::byte>(size, std::byte{0x5a}));
        uint64_t seqs[kSlots] = {};
        uint64_t n = 0;
        for (uint64_t i = 0; now_ns() < stop_at; ++i) {
          int slot = int(i % kSlots);
          if (seqs[slot] && !ch->wait_sent(seqs[slot], io_timeout)) {
            failed = true;
            return;
          }
          bufs[slot][0] = std::byte(i);  // the sender touches its buffer as a producer would
          ConstBuffer piece{bufs[slot].data(), size};
          auto seq = ch->send({&piece, 1}, io_timeout);
          if (!seq) {
            failed = true;
            return;
          }
          seqs[slot] = *seq;
          n += size;
        }
        if (!ch->close(io_timeout)) failed = true;
        sent += n;
      });
    for (auto& t : threads) t.join();
  }
  chans.clear();
  finish(s, c, receiver->child, receiver->report.get(), sent, failed, cpu0, sw);
  return s;
}

// --- plain socket loop (baseline) ------------------------------------------------------

Result<UniqueFd> blocking(Result<UniqueFd> fd) {
  if (!fd) return fd;
  int fl = fcntl(fd->get(), F_GETFL);
  fcntl(fd->get(), F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

// The receiving side of the plain loop: listens, writes its address to
// address_fd, accepts `channels` sockets, receives until each closes,
// reports over report_fd, exits.
[[noreturn]] void serve_plain_receiver(unsigned channels, uint64_t size, int report_fd, int address_fd) {
  ReceiverReport r;
  ChannelOptions o;  // TCP_NODELAY + the same socket buffers as the backends
  std::string bound;
  auto lfd = transport::listen_socket("127.0.0.1:0", &bound);
  if (!lfd) receiver_failed(report_fd, lfd.error().message);
  (void)!::write(address_fd, bound.data(), bound.size());
  close(address_fd);
  std::vector<UniqueFd> fds;
  for (unsigned i = 0; i < channels; ++i) {
    auto fd = blocking(transport::accept_socket(lfd->get(), o, Timeout(10000), "plain"));
    if (!fd) receiver_failed(report_fd, fd.error().message);
    fds.push_back(std::move(*fd));
  }
  double cpu0 = thread_cpu_now();
  std::atomic<uint64_t> bytes{0};
  std::vector<std::thread> threads;
  for (auto& fd : fds)
    threads.emplace_back([&, fd = fd.get()] {
      std::vector<char> buf(size);
      uint64_t n = 0;
      for (;;) {
        ssize_t got = ::recv(fd, buf.data(), buf.size(), 0);
        if (got <= 0) break;
        n += uint64_t(got);
      }
      bytes += n;
    });
  for (auto& t : threads) t.join();
  r.bytes = bytes;
  r.cpu = thread_cpu_now() - cpu0;
  r.ok = 1;
  write_report(report_fd, r);
  _exit(0);
}

Sample run_plain(const Config& c, uint64_t size) {
  Sample s;
  ChannelOptions o;  // TCP_NODELAY + the same socket buffers as the backends
  auto receiver = start_receiver(c, "plain", size);
  if (!receiver) return Sample{.error = receiver.error().message};
  const std::string& bound = receiver->address;
  std::vector<UniqueFd> fds;
  for (unsigned i = 0; i < c.channels && s.error.empty(); ++i) {
    auto fd = blocking(transport::connect_socket(bound, o, Timeout(10000)));
    if (!fd)
      s.error = fd.error().message;
    else
      fds.push_back(std::move(*fd));
  }
  double cpu0 = thread_cpu_now();
  Stopwatch sw;
  std::atomic<uint64_t> sent{0};
  if (s.error.empty()) {
    std::vector<std::thread> threads;
    uint64_t stop_at = now_ns() + uint64_t(c.seconds * 1e9);
    for (auto& fd : fds)
      threads.emplace_back([&, fd = fd.get()] {
        std::vector<char> buf(size, 0x5a);
        uint64_t n = 0;
        while (now_ns() < stop_at) {
          size_t off = 0;
          while (off < size) {
            ssize_t w = ::send(fd, buf.data() + off, size - off, MSG_NOSIGNAL);
            if (w <= 0) return;
            off += size_t(w);
          }
          n += size;
        }
        ::shutdown(fd, SHUT_WR);
        char b;
        (void)!::recv(fd, &b, 1, 0);  // the receiver's close: everything arrived
        sent += n;
      });
    for (auto& t : threads) t.join();
  }
  fds.clear();
  finish(s, c, receiver->child, receiver->report.get(), sent, false, cpu0, sw);
  return s;
}

// --- iperf3 (baseline) ------------------------------------------------------------------

// The number after "key": at or after `from` in `json`.
double json_number(const std::string& json, const std::string& key, size_t from = 0) {
  size_t at = json.find("\"" + key + "\"", from);
  if (at == std::string::npos) return -1;
  at = json.find(':', at);
  return at == std::string::npos ? -1 : std::strtod(json.c_str() + at + 1, nullptr);
}

bool have_iperf3() { return find_program("iperf3").ok(); }

// iperf3 with stderr discarded and stdout discarded or to a pipe.
Result<Subprocess> start_iperf3(const std::vector<std::string>& args, Stdio stdout_to) {
  std::vector<std::string> argv{"iperf3"};
  argv.insert(argv.end(), args.begin(), args.end());
  SpawnOptions options;
  options.stdout_to = stdout_to;
  options.stderr_to = Stdio::null;
  options.on_parent_exit = ParentExit::die;
  return Subprocess::spawn(argv, options);
}

Sample run_iperf3(const Config& c) {
  // A free port: bind to 0, read it, release it for iperf3 (loopback only).
  std::string bound;
  auto probe = transport::listen_socket("127.0.0.1:0", &bound);
  if (!probe) return Sample{.error = probe.error().message};
  std::string port = bound.substr(bound.rfind(':') + 1);
  probe->reset();
  auto server = start_iperf3({"-s", "-1", "-B", "127.0.0.1", "-p", port}, Stdio::null);
  if (!server) return Sample{.error = server.error().message};
  std::string out;
  long secs = std::max(1l, long(std::ceil(c.seconds)));  // iperf3 takes whole seconds; -t 0 means forever
  for (int attempt = 0; attempt < 50; ++attempt) {  // until the server listens
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto client = start_iperf3({"-c", "127.0.0.1", "-p", port, "-t", std::to_string(secs), "-P",
                                std::to_string(c.channels), "-J"},
                               Stdio::pipe);
    if (!client) return Sample{.error = client.error().message};
    UniqueFd from_client = client->take_pipe(STDOUT_FILENO);
    out.clear();
    char buf[65536];
    Stopwatch waited;
    bool timed_out = false;
    for (;;) {  // read its JSON, but never wait past its duration plus a margin
      pollfd pf{from_client.get(), POLLIN, 0};
      int left = int((double(secs) + 20) * 1000 - waited.elapsed_ms());
      if (left <= 0 || poll(&pf, 1, left) <= 0) {
        timed_out = true;
        break;
      }
      ssize_t n = ::read(from_client.get(), buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, size_t(n));
    }
    (void)client->wait_or_kill(timed_out ? 0 : 10000);
    if (out.find("\"sum_received\"") != std::string::npos) break;
    if (out.find("Connection refused") == std::string::npos && out.find("unable to connect") == std::string::npos &&
        !out.empty())
      break;
  }
  if (server->running()) (void)server->kill_and_wait();
  Sample s;
  size_t sum = out.find("\"sum_received\"");
  if (sum == std::string::npos) return Sample{.error = "iperf3 gave no sum_received (output: " + out.substr(0, 200) + ")"};
  s.gbps = json_number(out, "bits_per_second", sum) / 1e9;
  s.seconds = json_number(out, "seconds", sum);
  s.bytes = uint64_t(json_number(out, "bytes", sum));
  size_t cpu = out.find("\"cpu_utilization_percent\"");
  s.cpu_send = json_number(out, "host_total", cpu) / 100 * double(secs);
  s.cpu_recv = json_number(out, "remote_total", cpu) / 100 * double(secs);
  return s;
}

Sample run_one(const Config& c, const std::string& mode, uint64_t size) {
  if (mode == "plain") return run_plain(c, size);
  if (mode == "iperf3") return run_iperf3(c);
  return run_channels(c, mode, size);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct BenchArgs {
  std::vector<std::string> backends{"uring"};
  unsigned channels = 1;
  std::vector<uint64_t> sizes{256 << 10};
  double seconds = 3;
  unsigned repeat = 1;
  bool zero_copy = false;
  std::string extra;
  bool no_baseline = false;
  bool tls = false;
  std::string json;
  // The receiving process of a measurement (internal).
  std::string serve_receiver;
  int report_fd = -1, address_fd = -1;
};

Config config_of(const BenchArgs& a) {
  Config c;
  c.channels = a.channels;
  c.seconds = a.seconds;
  c.repeat = std::max(a.repeat, 1u);
  c.extra = a.extra;
  c.sizes = a.sizes;
  if (a.zero_copy) c.zero_copy = transport::ZeroCopy::on;
  c.tls = a.tls;
  return c;
}

// `--serve-receiver MODE`: the receiving side of one measurement; never returns.
[[noreturn]] void serve(const BenchArgs& a, const Config& c) {
  if (a.serve_receiver == "plain") serve_plain_receiver(c.channels, c.sizes.front(), a.report_fd, a.address_fd);
  std::string backend;
  auto options = channel_options(c, a.serve_receiver, c.sizes.front(), &backend);
  if (!options) receiver_failed(a.report_fd, options.error().message);
  auto listener = transport::listen(backend + ":127.0.0.1:0", *options);
  if (!listener) receiver_failed(a.report_fd, listener.error().message);
  std::string address = (*listener)->address();
  (void)!::write(a.address_fd, address.data(), address.size());
  close(a.address_fd);
  serve_receiver(**listener, c.channels, Timeout(int64_t(c.seconds * 1000) + 30000), a.report_fd);
}

// Every backend asked for exists and works here: 0, or the exit status.
int check_backends(const std::vector<std::string>& backends) {
  for (const auto& b : backends) {
    auto found = transport::find_backend(b);
    if (!found) {
      std::fprintf(stderr, "livemig bench transport: %s\n", found.error().message.c_str());
      return 2;
    }
    auto p = (*found)->probe();
    if (!p.available) {
      std::fprintf(stderr, "livemig bench transport: backend %s unavailable: %s\n", b.c_str(), p.reason.c_str());
      return 1;
    }
  }
  return 0;
}

// The samples of a run: per message size and mode, one per repetition.
struct Samples {
  std::vector<Sample> iperf;
  std::vector<std::vector<std::vector<Sample>>> by_size;  // [size][mode][repetition]
};

// Repetitions outermost and every mode inside each, so slow drift of the
// machine's load hits all modes alike. iperf3 ignores our message size: once
// per repetition.
Samples measure(const Config& c, bool iperf) {
  Samples s;
  s.by_size.assign(c.sizes.size(), std::vector<std::vector<Sample>>(c.modes.size()));
  for (unsigned r = 0; r < c.repeat; ++r) {
    if (iperf) s.iperf.push_back(run_iperf3(c));
    for (size_t z = 0; z < c.sizes.size(); ++z)
      for (size_t m = 0; m < c.modes.size(); ++m) s.by_size[z][m].push_back(run_one(c, c.modes[m], c.sizes[z]));
  }
  return s;
}

double median_of(const std::vector<Sample>& v, double Sample::*f) {
  std::vector<double> x;
  for (const auto& s : v)
    if (s.error.empty()) x.push_back(s.*f);
  return median(x);
}

// Ratios are medians of per-repetition ratios (neighbours in time).
double median_ratio(const std::vector<Sample>& v, const std::vector<Sample>& base) {
  std::vector<double> x;
  for (size_t r = 0; r < v.size() && r < base.size(); ++r)
    if (v[r].error.empty() && base[r].error.empty() && base[r].gbps > 0) x.push_back(v[r].gbps / base[r].gbps);
  return median(x);
}

// One row of the table and of the JSON document; false if a sample failed.
// `clear`: for a "+tls" mode, the same backend without TLS (else empty).
bool report_row(JsonWriter& json, const Config& c, const std::string& mode, uint64_t size, bool per_size,
                const std::vector<Sample>& v, const std::vector<Sample>& tcp, const std::vector<Sample>& plain,
                const std::vector<Sample>& iperf, const std::vector<Sample>& clear) {
  bool ok = true;
  for (const auto& s : v)
    if (!s.error.empty()) {
      std::fprintf(stderr, "%s msg %llu: %s\n", mode.c_str(), (unsigned long long)size, s.error.c_str());
      ok = false;
    }
  double g = median_of(v, &Sample::gbps);
  // CPU seconds (both sides) per GB moved: less sensitive to other load than Gbit/s.
  std::vector<double> per_gb;
  for (const auto& x : v)
    if (x.error.empty() && x.bytes) per_gb.push_back((x.cpu_send + x.cpu_recv) / (double(x.bytes) / 1e9));
  double cpu_gb = median(per_gb);
  double vs_tcp = median_ratio(v, tcp);
  double vs_plain = median_ratio(v, plain);
  double vs_iperf = median_ratio(v, iperf);
  double vs_clear = median_ratio(v, clear);
  double cpu_send = median_of(v, &Sample::cpu_send), cpu_recv = median_of(v, &Sample::cpu_recv);
  std::printf("%-9s %3u %8lluK %9.2f %10.2f %10.2f %9.3f %8.3f %8.3f %9.3f", mode.c_str(), c.channels,
              (unsigned long long)(per_size ? size >> 10 : 128), g, cpu_send, cpu_recv, cpu_gb, vs_tcp, vs_plain,
              vs_iperf);
  if (c.tls && !clear.empty())
    std::printf(" %8.3f", vs_clear);
  else if (c.tls)
    std::printf(" %8s", "-");
  std::printf("\n");
  json.begin_object();
  json.field("mode", mode);
  json.field("msg_size", per_size ? size : uint64_t(128 << 10));
  json.field("gbps_median", g);
  json.field("cpu_send_s_median", cpu_send);
  json.field("cpu_recv_s_median", cpu_recv);
  json.field("cpu_s_per_gb_median", cpu_gb);
  json.field("ratio_vs_tcp_median", vs_tcp);
  json.field("ratio_vs_plain_median", vs_plain);
  json.field("ratio_vs_iperf3_median", vs_iperf);
  if (!clear.empty()) json.field("ratio_vs_plaintext_median", vs_clear);
  json.begin_array("gbps");
  for (const auto& s : v) json.value(s.gbps);
  json.end_array();
  json.end_object();
  return ok;
}

// The table and the JSON document of a run; false if any sample failed.
bool report(JsonWriter& json, const Config& c, const Samples& s, bool iperf) {
  json.begin_object();
  json.field("schema", "livemig.bench.transport/1");
  json.field("channels", c.channels);
  json.field("seconds", c.seconds);
  json.field("repeat", c.repeat);
  json.field("zero_copy", c.zero_copy == transport::ZeroCopy::on);
  json.field("extra", c.extra);
  json.field("tls", c.tls);
  json.begin_array("results");
  std::printf("%-9s %3s %9s %9s %10s %10s %9s %8s %8s %9s%s\n", "mode", "ch", "msg", "Gbit/s", "cpu_send_s",
              "cpu_recv_s", "cpu_s/GB", "vs_tcp", "vs_plain", "vs_iperf3", c.tls ? " vs_clear" : "");
  bool ok = true;
  size_t tcp = size_t(std::find(c.modes.begin(), c.modes.end(), "tcp") - c.modes.begin());
  size_t plain = size_t(std::find(c.modes.begin(), c.modes.end(), "plain") - c.modes.begin());
  static const std::vector<Sample> none;
  for (size_t z = 0; z < c.sizes.size(); ++z) {
    for (size_t m = 0; m < c.modes.size(); ++m) {
      const std::vector<Sample>& clear = is_tls_mode(c.modes[m]) ? s.by_size[z][m - 1] : none;  // B precedes B+tls
      const std::vector<Sample>& plain_v = plain < c.modes.size() ? s.by_size[z][plain] : none;
      ok &= report_row(json, c, c.modes[m], c.sizes[z], true, s.by_size[z][m], s.by_size[z][tcp], plain_v, s.iperf,
                       clear);
    }
    if (iperf)
      ok &= report_row(json, c, "iperf3", c.sizes[z], false, s.iperf, s.by_size[z][tcp],
                       plain < c.modes.size() ? s.by_size[z][plain] : none, s.iperf, {});
  }
  json.end_array();
  json.end_object();
  return ok;
}

int run_bench(const BenchArgs& a) {
  Config c = config_of(a);
  if (!a.serve_receiver.empty()) serve(a, c);
  if (int status = check_backends(a.backends); status != 0) return status;
  // The tcp backend is always measured: uring is judged against it.
  c.modes = a.backends;
  if (std::find(c.modes.begin(), c.modes.end(), "tcp") == c.modes.end()) c.modes.push_back("tcp");
  if (a.tls)
    for (size_t m = c.modes.size(); m-- > 0;) c.modes.insert(c.modes.begin() + m + 1, c.modes[m] + std::string(kTlsSuffix));
  bool baseline = !a.no_baseline;
  if (baseline) c.modes.push_back("plain");
  bool iperf = baseline && have_iperf3();
  if (baseline && !iperf) std::fprintf(stderr, "note: iperf3 not installed; its baseline is skipped\n");
  JsonWriter json;
  bool ok = report(json, c, measure(c, iperf), iperf);
  std::string path = a.json;
  if (path.empty()) {
    path = strf("results/bench-transport-%lld.json", (long long)time(nullptr));
    mkdir("results", 0755);
  }
  std::ofstream f(path);
  f << json.str() << "\n";
  if (!f) {
    std::fprintf(stderr, "livemig bench transport: cannot write %s\n", path.c_str());
    return 1;
  }
  std::printf("results: %s\n", path.c_str());
  return ok ? 0 : 1;
}

}  // namespace

Run bench_transport(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  app.add_option("--backend", a->backends, "backend(s) to measure, comma separated: tcp, uring, dpdk")
      ->delimiter(',')
      ->allow_extra_args(false)
      ->capture_default_str();
  app.add_option("--channels", a->channels, "parallel channels / streams")
      ->transform(u64_value())
      ->check(CLI::Range(1u, 64u))
      ->capture_default_str();
  app.add_option("--msg-size", a->sizes, "message size(s), comma separated (default 256K)")
      ->delimiter(',')
      ->allow_extra_args(false)
      ->transform(size_value())
      ->check(CLI::Range(uint64_t(1), uint64_t(64) << 20));
  app.add_option("--seconds", a->seconds, "seconds per measurement")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--repeat", a->repeat, "repetitions; medians are reported")
      ->transform(u64_value())
      ->capture_default_str();
  app.add_flag("--zero-copy", a->zero_copy, "MSG_ZEROCOPY / send_zc on the backends");
  app.add_option("--extra", a->extra, "backend options, e.g. sqpoll=1");
  app.add_flag("--no-baseline", a->no_baseline, "skip the plain loop and iperf3");
  app.add_flag("--tls", a->tls, "also measure each backend with TLS 1.3 (mode B+tls, ratio vs_clear to B)");
  app.add_option("--json", a->json, "write the results here (default results/bench-transport-<time>.json)");
  // Internal, not in the help: the receiving process of a measurement.
  app.add_option("--serve-receiver", a->serve_receiver)->group("");
  app.add_option("--report-fd", a->report_fd)->check(CLI::PositiveNumber)->group("");
  app.add_option("--address-fd", a->address_fd)->check(CLI::PositiveNumber)->group("");
  return [a] { return run_bench(*a); };
}

}  // namespace lm::cmd
