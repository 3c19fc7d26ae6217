#include "harness/redis_workload.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include "common/parse.hpp"
#include "common/clock.hpp"
#include "common/fd.hpp"
#include "common/subprocess.hpp"

namespace lm::engine {

namespace {

constexpr const char* kServer = "/usr/bin/redis-server";
constexpr const char* kBenchmark = "/usr/bin/redis-benchmark";

Result<uint16_t> free_loopback_port() {
  UniqueFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return Error::from_errno("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return Error::from_errno("find a free loopback port");
  return ntohs(a.sin_port);
}

// Starts argv[0] with the given arguments, output discarded. It dies with
// the calling thread, which owns the workload (as the source guest does).
Result<Subprocess> spawn(const std::vector<std::string>& argv) {
  SpawnOptions options;
  options.stdin_to = options.stdout_to = options.stderr_to = Stdio::null;
  options.on_parent_exit = ParentExit::die;
  auto child = Subprocess::spawn(argv, options);
  if (!child && child.error().code == ENOENT)
    return Error{ENOENT, child.error().message + " (install Debian's redis-server and redis-tools)"};
  return child;
}

// One RESP request on a fresh connection; returns the whole reply text.
Result<std::string> redis_request(uint16_t port, const std::string& inline_command, int timeout_ms) {
  UniqueFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return Error::from_errno(strf("connect to redis on 127.0.0.1:%u", port));
  std::string req = inline_command + "\r\n";
  if (write(s.get(), req.data(), req.size()) != ssize_t(req.size()))
    return Error::from_errno(strf("send to redis on 127.0.0.1:%u", port));
  std::string reply;
  char buf[4096];
  // A bulk reply: "$<len>\r\n<data>\r\n"; simple replies end at the first CRLF.
  while (true) {
    ssize_t n = read(s.get(), buf, sizeof buf);
    if (n <= 0) break;
    reply.append(buf, size_t(n));
    if (reply[0] != '$' && reply.find("\r\n") != std::string::npos) break;
    if (reply[0] == '$') {
      auto crlf = reply.find("\r\n");
      if (crlf == std::string::npos) continue;
      auto length = parse_u64(std::string_view(reply).substr(1, crlf - 1));
      if (!length) return Error::msg(strf("redis on 127.0.0.1:%u: bad bulk reply length to '%s'", port,
                                          inline_command.c_str()));
      if (reply.size() >= crlf + 2 + *length + 2) break;
    }
  }
  if (reply.empty()) return Error::msg(strf("redis on 127.0.0.1:%u: no reply to '%s'", port, inline_command.c_str()));
  return reply;
}

}  // namespace

RedisWorkload::~RedisWorkload() { stop(); }

void RedisWorkload::stop() {
  if (writers_.running()) (void)writers_.kill_and_wait();
  if (server_.running()) (void)server_.kill_and_wait();
}

Result<RedisWorkload> RedisWorkload::start(const RedisOptions& options) {
  RedisWorkload w;
  w.options_ = options;
  w.port_ = LM_TRY(free_loopback_port());
  w.server_ = LM_TRY(spawn({kServer, "--port", std::to_string(w.port_), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"}));
  Stopwatch sw;
  while (true) {
    auto pong = redis_request(w.port_, "PING", 500);
    if (pong && pong->rfind("+PONG", 0) == 0) break;
    if (sw.elapsed_ms() > 10000)
      return Error::msg(strf("redis-server pid %d on 127.0.0.1:%u did not answer within 10 s", w.server_.pid(), w.port_));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Load: every key of the key space written once (sequential -r keys).
  Subprocess loader = LM_TRY(spawn({kBenchmark, "-p", std::to_string(w.port_), "-t", "set", "-n",
                               std::to_string(options.keys * 2), "-r", std::to_string(options.keys), "-d",
                               std::to_string(options.value_bytes), "-c", std::to_string(options.clients), "-P", "16",
                               "-q"}));
  ExitStatus status = LM_TRY(loader.wait(-1));
  if (!status.success())
    return Error::msg(strf("redis-benchmark (load) on 127.0.0.1:%u: %s %s", w.port_, loader.name().c_str(),
                           status.text().c_str()));
  return w;
}

Result<void> RedisWorkload::start_writers() {
  writers_ = LM_TRY(spawn({kBenchmark, "-p", std::to_string(port_), "-t", "set", "-n", "1000000000", "-r",
                           std::to_string(options_.keys), "-d", std::to_string(options_.value_bytes), "-c",
                           std::to_string(options_.clients), "-q", "-l"}));
  return ok();
}

Result<std::string> RedisWorkload::request(const std::string& inline_command, int timeout_ms) {
  return redis_request(port_, inline_command, timeout_ms);
}

Result<uint64_t> RedisWorkload::commands_processed() {
  auto info = LM_TRY(request("INFO stats"));
  auto at = info.find("total_commands_processed:");
  if (at == std::string::npos) return Error::msg(strf("redis on 127.0.0.1:%u: INFO has no command count", port_));
  auto end = info.find_first_of("\r\n", at + 25);
  return LM_TRY_CTX(parse_u64(std::string_view(info).substr(at + 25, end - (at + 25))),
                    strf("redis on 127.0.0.1:%u: total_commands_processed", port_));
}

Result<double> RedisWorkload::ops_per_second(unsigned window_ms) {
  uint64_t a = LM_TRY(commands_processed());
  Stopwatch sw;
  std::this_thread::sleep_for(std::chrono::milliseconds(window_ms));
  uint64_t b = LM_TRY(commands_processed());
  return double(b - a) / sw.elapsed_s();
}

}  // namespace lm::engine
