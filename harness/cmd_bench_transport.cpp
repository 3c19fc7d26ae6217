// livemig bench transport: throughput and CPU cost of the transport backends
// between two processes on loopback, with the plain-socket baselines measured
// in the same run (a minimal send/recv loop, and iperf3 when installed), so
// the figures that matter are ratios, not absolute numbers.
//
// Each measurement starts a receiver process (`livemig bench transport
// --serve-receiver MODE`, exec'd: DPDK's EAL does not survive fork, and the
// sender's threads make fork unsafe) that listens on loopback, accepts N
// channels, one thread each, and reports bytes and its CPU seconds over a
// pipe (it takes messages as pieces in place, transport::recv_pieces, unless
// --contiguous); the parent sends messages of the given size on N threads for the
// given time, then closes the channels with the close handshake, so every
// byte counted arrived. With --tls each backend B is also measured as "B+tls"
// (TLS 1.3 over it, transport/tls_channel.hpp) right after B, in the same
// repetition, and the ratio to B is reported.
//
// Across two hosts (or the two sides of `livemig rig`), like iperf3:
// `--serve HOST:PORT` on one waits for control connections and, for each
// measurement a client asks for, starts the same receiver process listening
// on HOST (or, for dpdk, on `--iface` with af_packet), replies its address,
// and sends the receiver's report back as a text line when it ends;
// `--to HOST:PORT` on the other runs the whole local procedure with the
// receivers started there instead of here.
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
#include "transport/scatter.hpp"
#include "transport/stream.hpp"
#include "transport/tls_channel.hpp"

namespace lm::cmd {
namespace {

using transport::ChannelOptions;
using transport::ConstBuffer;
using transport::Timeout;

enum class RecvMode { pieces, contiguous };

struct Config {
  std::vector<std::string> modes;  // backend names, "plain", "iperf3"
  unsigned channels = 1;
  std::vector<uint64_t> sizes;
  double seconds = 3;
  unsigned repeat = 1;
  std::string extra;
  transport::ZeroCopy zero_copy = transport::ZeroCopy::off;
  // Receivers take each message as pieces in the channel's buffers
  // (transport::recv_pieces, what a decoder reading in place does), or whole
  // (recv: dpdk then copies every frame's payload into one buffer).
  RecvMode recv_mode = RecvMode::pieces;
  bool tls = false;  // modes "B+tls" follow each backend B
  // Across hosts: the client's control address (`--to`), empty in the local mode.
  std::string to;
  // Where receivers listen: an IP address of this host; and the af_packet
  // interface of this side for dpdk (empty: memif on this host).
  std::string listen_host = "127.0.0.1";
  std::string iface;
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

// The receiving process of a measurement, the read end of its report pipe
// and the address it listens on. Across hosts `child` holds nothing and
// `report` is the control connection to `--serve`, which sends the report
// as a text line (report_line).
struct Receiver {
  Subprocess child;
  UniqueFd report;
  std::string address;
  bool remote = false;
};

// A line from a socket, without its newline: false on EOF or timeout.
bool read_line(int fd, int timeout_ms, std::string* line) {
  line->clear();
  Stopwatch waited;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int left = timeout_ms - int(waited.elapsed_ms());
    char ch;
    if (left <= 0 || poll(&p, 1, left) <= 0 || ::read(fd, &ch, 1) != 1) return false;
    if (ch == '\n') return true;
    if (line->size() > 4096) return false;
    line->push_back(ch);
  }
}

bool write_all(int fd, const std::string& text) {
  for (size_t off = 0; off < text.size();) {
    ssize_t n = ::send(fd, text.data() + off, text.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

// Text for the line protocol of --serve: newlines become spaces.
std::string one_line(std::string text) {
  std::replace(text.begin(), text.end(), '\n', ' ');
  return text;
}

// "report <ok> <bytes> <cpu seconds> <error text>": a receiver's report
// from the serving host.
std::string report_line(const ReceiverReport& r) {
  return strf("report %d %llu %.6f %s\n", r.ok, (unsigned long long)r.bytes, r.cpu, one_line(r.error).c_str());
}

bool parse_report_line(const std::string& line, ReceiverReport* r) {
  int consumed = 0;
  unsigned long long bytes = 0;
  if (std::sscanf(line.c_str(), "report %d %llu %lf %n", &r->ok, &bytes, &r->cpu, &consumed) < 3) return false;
  r->bytes = bytes;
  snprintf(r->error, sizeof r->error, "%s", line.c_str() + consumed);
  return true;
}

// Reads the receiver's report and reaps it; kills it if it does not answer
// in time.
bool collect(Receiver& receiver, ReceiverReport* out, int timeout_ms) {
  int fd = receiver.report.get();
  bool got;
  if (receiver.remote) {
    std::string line;
    got = read_line(fd, timeout_ms, &line) && parse_report_line(line, out);
  } else {
    pollfd p{fd, POLLIN, 0};
    got = poll(&p, 1, timeout_ms) > 0 && ::read(fd, out, sizeof *out) == ssize_t(sizeof *out);
  }
  if (receiver.child.holds_process()) (void)receiver.child.wait_or_kill(got ? 10000 : 0);
  return got;
}

// The common end of a measurement: the sender's figures, then the receiver's
// report, which must account for every byte sent.
void finish(Sample& s, const Config& c, Receiver& receiver, uint64_t sent, bool sender_failed, double cpu0,
            const Stopwatch& sw) {
  s.seconds = sw.elapsed_s();
  s.cpu_send = thread_cpu_now() - cpu0;
  ReceiverReport r;
  bool got = collect(receiver, &r, int(c.seconds * 1000) + 40000);
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
[[noreturn]] void serve_receiver(transport::Listener& listener, unsigned channels, RecvMode mode, Timeout io_timeout,
                                 int report_fd) {
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
      std::vector<std::span<const std::byte>> pieces;
      for (;;) {
        Result<transport::RecvStatus> st = transport::RecvStatus::closed;
        if (mode == RecvMode::pieces) {
          st = transport::recv_pieces(*ch, pieces, io_timeout);
          for (auto p : pieces) n += p.size();
        } else if (auto m = ch->recv(io_timeout)) {
          st = m->status;
          n += m->bytes.size();
        } else {
          st = std::move(m).error();
        }
        if (!st) {
          if (failed.fetch_add(1) == 0) first_error = st.error().message;
          return;
        }
        if (*st == transport::RecvStatus::closed) break;
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

// Starts `livemig bench transport --serve-receiver MODE ...` (MODE: a
// backend, or "plain") on this host and reads the address it listens on.
Result<Receiver> start_local_receiver(const Config& c, const std::string& mode, uint64_t size) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) return Error::from_errno("pipe for the receiver's report");
  UniqueFd report_read(p[0]), report_write(p[1]);
  if (pipe2(p, O_CLOEXEC) < 0) return Error::from_errno("pipe for the receiver's address");
  UniqueFd address_read(p[0]), address_write(p[1]);
  std::vector<std::string> argv = {"/proc/self/exe", "bench", "transport", "--serve-receiver", mode,
                                   "--channels", std::to_string(c.channels), "--msg-size", std::to_string(size),
                                   "--seconds", strf("%g", c.seconds),
                                   "--report-fd", std::to_string(report_write.get()),
                                   "--address-fd", std::to_string(address_write.get()),
                                   "--listen-host", c.listen_host};
  if (!c.iface.empty()) argv.insert(argv.end(), {"--iface", c.iface});
  if (!c.extra.empty()) argv.insert(argv.end(), {"--extra", c.extra});
  if (c.zero_copy == transport::ZeroCopy::on) argv.push_back("--zero-copy");
  if (c.recv_mode == RecvMode::contiguous) argv.push_back("--contiguous");
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
    collect(r, &report, 1000);
    return Error::msg(std::string("receiver did not listen") +
                      (report.error[0] ? std::string(": ") + report.error : ""));
  }
  r.address.assign(buf, size_t(n));
  return r;
}

Result<UniqueFd> blocking(Result<UniqueFd> fd) {
  if (!fd) return fd;
  int fl = fcntl(fd->get(), F_GETFL);
  fcntl(fd->get(), F_SETFL, fl & ~O_NONBLOCK);
  return fd;
}

// The first word of a request from a client to `--serve`.
constexpr std::string_view kServeRequest = "livemig-bench-transport/1";

// The address this host dials for a receiver that listens at `served` on the
// serving host: its port at the host this client reached the server by, or,
// for dpdk, this side's af_packet interface.
Result<std::string> dial_address(const Config& c, const std::string& mode, const std::string& served) {
  if (served.rfind("dpdk:", 0) == 0) {
    if (served.rfind("dpdk:af_packet:", 0) != 0)
      return Error::msg("the server listens on " + served + ": dpdk across hosts needs --iface on both sides");
    if (c.iface.empty()) return Error::msg("dpdk across hosts needs --iface (this side's af_packet interface)");
    return "dpdk:af_packet:" + c.iface;
  }
  std::string backend = is_tls_mode(mode) ? mode.substr(0, mode.size() - kTlsSuffix.size()) : mode;
  std::string host = c.to.substr(0, c.to.rfind(':'));
  return (mode == "plain" ? "" : backend + ":") + host + served.substr(served.rfind(':'));
}

// Asks the `--serve` process at c.to to start a receiver; its report comes
// back over the same connection.
Result<Receiver> start_remote_receiver(const Config& c, const std::string& mode, uint64_t size) {
  if (c.extra.find_first_of(" \t\n") != std::string::npos) return Error::msg("--extra must not contain spaces");
  auto fd = LM_TRY_CTX(blocking(transport::connect_socket(c.to, ChannelOptions{}, Timeout(10000))),
                       "bench transport server " + c.to);
  std::string request = strf("%.*s %s %u %llu %g %d %s\n", int(kServeRequest.size()), kServeRequest.data(),
                             mode.c_str(), c.channels, (unsigned long long)size, c.seconds,
                             int(c.zero_copy == transport::ZeroCopy::on), c.extra.empty() ? "-" : c.extra.c_str());
  if (!write_all(fd.get(), request)) return Error::from_errno("send the request to bench transport server " + c.to);
  std::string reply;
  if (!read_line(fd.get(), 40000, &reply))
    return Error::msg("bench transport server " + c.to + " did not answer the request for " + mode);
  if (reply.rfind("ok ", 0) != 0) return Error::msg("bench transport server " + c.to + ": " + reply);
  Receiver r{Subprocess(), std::move(fd), {}, true};
  r.address = LM_TRY(dial_address(c, mode, reply.substr(3)));
  return r;
}

Result<Receiver> start_receiver(const Config& c, const std::string& mode, uint64_t size) {
  return c.to.empty() ? start_local_receiver(c, mode, size) : start_remote_receiver(c, mode, size);
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
  finish(s, c, *receiver, sent, failed, cpu0, sw);
  return s;
}

// --- plain socket loop (baseline) ------------------------------------------------------

// The receiving side of the plain loop: listens, writes its address to
// address_fd, accepts `channels` sockets, receives until each closes,
// reports over report_fd, exits.
[[noreturn]] void serve_plain_receiver(const Config& c, uint64_t size, int report_fd, int address_fd) {
  const unsigned channels = c.channels;
  ReceiverReport r;
  ChannelOptions o;  // TCP_NODELAY + the same socket buffers as the backends
  std::string bound;
  auto lfd = transport::listen_socket(c.listen_host + ":0", &bound);
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
  finish(s, c, *receiver, sent, false, cpu0, sw);
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
  bool contiguous = false;
  std::string extra;
  bool no_baseline = false;
  bool tls = false;
  std::string json;
  std::string serve, to;  // across hosts: HOST:PORT
  std::string iface;
  // The receiving process of a measurement (internal).
  std::string serve_receiver;
  std::string listen_host = "127.0.0.1";
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
  if (a.contiguous) c.recv_mode = RecvMode::contiguous;
  c.tls = a.tls;
  c.to = a.to;
  c.listen_host = a.listen_host;
  c.iface = a.iface;
  return c;
}

// `--serve-receiver MODE`: the receiving side of one measurement; never returns.
[[noreturn]] void serve(const BenchArgs& a, const Config& c) {
  if (a.serve_receiver == "plain") serve_plain_receiver(c, c.sizes.front(), a.report_fd, a.address_fd);
  std::string backend;
  auto options = channel_options(c, a.serve_receiver, c.sizes.front(), &backend);
  if (!options) receiver_failed(a.report_fd, options.error().message);
  auto listener = transport::listen(
      backend == "dpdk" && !c.iface.empty() ? "dpdk:af_packet:" + c.iface : backend + ":" + c.listen_host + ":0",
      *options);
  if (!listener) receiver_failed(a.report_fd, listener.error().message);
  std::string address = (*listener)->address();
  (void)!::write(a.address_fd, address.data(), address.size());
  close(a.address_fd);
  serve_receiver(**listener, c.channels, c.recv_mode, Timeout(int64_t(c.seconds * 1000) + 30000), a.report_fd);
}

// One request of a client to `--serve`: starts the receiver it asks for,
// replies "ok <address>" (or "error <why>"), then forwards its report.
void serve_request(const Config& server, int fd) {
  std::string line;
  if (!read_line(fd, 10000, &line)) return;
  char word[64] = {}, mode[64] = {}, extra[1024] = {};
  unsigned long long size = 0;
  int zero_copy = 0;
  Config c = server;
  if (std::sscanf(line.c_str(), "%63s %63s %u %llu %lf %d %1023s", word, mode, &c.channels, &size, &c.seconds,
                  &zero_copy, extra) != 7 ||
      word != kServeRequest || c.channels < 1 || c.channels > 64 || size < 1 || size > (64ull << 20) ||
      !(c.seconds > 0 && c.seconds < 3600)) {
    (void)write_all(fd, "error bad request: " + one_line(line.substr(0, 200)) + "\n");
    return;
  }
  c.sizes = {size};
  c.zero_copy = zero_copy ? transport::ZeroCopy::on : transport::ZeroCopy::off;
  c.extra = std::string_view(extra) == "-" ? "" : extra;
  std::string peer = transport::socket_pair_name(fd);
  auto receiver = start_local_receiver(c, mode, size);
  if (!receiver) {
    std::printf("%s %s: %s\n", peer.c_str(), mode, receiver.error().message.c_str());
    (void)write_all(fd, "error " + one_line(receiver.error().message) + "\n");
    return;
  }
  if (!write_all(fd, "ok " + receiver->address + "\n")) return;  // the receiver dies with *receiver
  ReceiverReport r;
  if (!collect(*receiver, &r, int(c.seconds * 1000) + 40000))
    snprintf(r.error, sizeof r.error, "receiver on the serving host did not report");
  std::printf("%s %s ch %u msg %lluK: %.3f GB in, receiver cpu %.2f s%s%s\n", peer.c_str(), mode, c.channels,
              size >> 10, double(r.bytes) / 1e9, r.cpu, r.ok ? "" : ", failed: ", r.error);
  std::fflush(stdout);
  (void)write_all(fd, report_line(r));
}

// `--serve HOST:PORT`: serves measurements one at a time until killed.
int run_server(const BenchArgs& a, Config c) {
  std::string bound;
  auto lfd = transport::listen_socket(a.serve, &bound);
  if (!lfd) {
    std::fprintf(stderr, "livemig bench transport --serve %s: %s\n", a.serve.c_str(), lfd.error().message.c_str());
    return 1;
  }
  c.listen_host = bound.substr(0, bound.rfind(':'));
  std::printf("serving on %s%s%s\n", bound.c_str(), c.iface.empty() ? "" : ", dpdk af_packet on ", c.iface.c_str());
  std::fflush(stdout);
  for (;;) {
    auto fd = blocking(transport::accept_socket(lfd->get(), ChannelOptions{}, transport::kForever, "bench transport server"));
    if (!fd) {
      std::fprintf(stderr, "livemig bench transport --serve %s: %s\n", bound.c_str(), fd.error().message.c_str());
      return 1;
    }
    serve_request(c, fd->get());
  }
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
  json.field("recv", c.recv_mode == RecvMode::pieces ? "pieces" : "contiguous");
  json.field("tls", c.tls);
  if (!c.to.empty()) json.field("to", c.to);
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
  if (!a.serve.empty()) return run_server(a, c);
  if (int status = check_backends(a.backends); status != 0) return status;
  // The tcp backend is always measured: uring is judged against it.
  c.modes = a.backends;
  if (std::find(c.modes.begin(), c.modes.end(), "tcp") == c.modes.end()) c.modes.push_back("tcp");
  if (a.tls)
    for (size_t m = c.modes.size(); m-- > 0;) c.modes.insert(c.modes.begin() + m + 1, c.modes[m] + std::string(kTlsSuffix));
  bool baseline = !a.no_baseline;
  if (baseline) c.modes.push_back("plain");
  bool iperf = baseline && c.to.empty() && have_iperf3();
  if (baseline && !c.to.empty()) std::fprintf(stderr, "note: the iperf3 baseline runs on loopback only; skipped\n");
  else if (baseline && !iperf) std::fprintf(stderr, "note: iperf3 not installed; its baseline is skipped\n");
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
  app.add_flag("--contiguous", a->contiguous,
               "receivers take whole messages (recv) instead of pieces in place (recv_pieces); "
               "across hosts, give it to --serve");
  app.add_flag("--no-baseline", a->no_baseline, "skip the plain loop and iperf3");
  app.add_flag("--tls", a->tls, "also measure each backend with TLS 1.3 (mode B+tls, ratio vs_clear to B)");
  app.add_option("--serve", a->serve,
                 "serve measurements to clients (like iperf3 -s): listen on HOST:PORT, receivers on HOST")
      ->type_name("HOST:PORT");
  app.add_option("--to", a->to, "measure to a host running --serve (like iperf3 -c); the receivers run there")
      ->type_name("HOST:PORT")
      ->excludes("--serve");
  app.add_option("--iface", a->iface, "dpdk across hosts: this side's af_packet interface (the veth in a rig)");
  app.add_option("--json", a->json, "write the results here (default results/bench-transport-<time>.json)");
  // Internal, not in the help: the receiving process of a measurement.
  app.add_option("--serve-receiver", a->serve_receiver)->group("");
  app.add_option("--report-fd", a->report_fd)->check(CLI::PositiveNumber)->group("");
  app.add_option("--address-fd", a->address_fd)->check(CLI::PositiveNumber)->group("");
  app.add_option("--listen-host", a->listen_host)->group("");
  return [a] { return run_bench(*a); };
}

}  // namespace lm::cmd
