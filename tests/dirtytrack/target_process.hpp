// Test helper: runs dt_target (numbers in its commands are hex) (path in env LM_DT_TARGET) with pipes, sends
// commands, reads replies with a timeout; kills and reaps it by its PID.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cinttypes>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/strf.hpp"

namespace lm::test {

class TargetProcess {
 public:
  TargetProcess() {
    ::signal(SIGPIPE, SIG_IGN);  // a dead target must fail a test, not kill it
    const char* bin = std::getenv("LM_DT_TARGET");
    if (!bin) {
      error_ = "LM_DT_TARGET is not set";
      return;
    }
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) {
      error_ = "pipe failed";
      return;
    }
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      execl(bin, bin, nullptr);
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    to_ = in[1];
    from_ = out[0];
  }
  ~TargetProcess() { kill_and_reap(); }
  TargetProcess(const TargetProcess&) = delete;
  TargetProcess& operator=(const TargetProcess&) = delete;

  bool ok() const { return pid_ > 0 && error_.empty(); }
  const std::string& error() const { return error_; }
  pid_t pid() const { return pid_; }

  // Sends one command; returns the reply line ("" on timeout or EOF).
  std::string send(const std::string& line, int timeout_ms = 10000) {
    std::string l = line + "\n";
    if (write(to_, l.data(), l.size()) != ssize_t(l.size())) return "";
    return reply(timeout_ms);
  }
  bool post(const std::string& line) {
    std::string l = line + "\n";
    return write(to_, l.data(), l.size()) == ssize_t(l.size());
  }
  std::string reply(int timeout_ms = 10000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string r = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        return r;
      }
      int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now())
                         .count());
      if (left <= 0) return "";
      pollfd p{from_, POLLIN, 0};
      if (poll(&p, 1, left) <= 0) continue;
      char tmp[4096];
      ssize_t n = read(from_, tmp, sizeof tmp);
      if (n <= 0) return "";
      buf_.append(tmp, size_t(n));
    }
  }
  // Reply fields after "ok", parsed as hex.
  std::vector<uint64_t> values(const std::string& reply_line) {
    std::vector<uint64_t> v;
    std::istringstream in(reply_line);
    std::string word;
    in >> word;
    while (in >> word) v.push_back(std::strtoull(word.c_str(), nullptr, 16));
    return v;
  }
  uint64_t map(uint64_t pages) { return first(send(strf("map %" PRIx64, pages))); }
  // 2 MiB aligned, advised MADV_HUGEPAGE (transparent huge pages once written).
  uint64_t map_huge(uint64_t pages) { return first(send(strf("maphuge %" PRIx64, pages))); }
  bool fill(uint64_t addr, uint64_t pages, uint64_t seed) {
    return send(strf("fill %" PRIx64 " %" PRIx64 " %" PRIx64, addr, pages, seed)) == "ok";
  }
  bool word(uint64_t addr, uint64_t value) { return send(strf("word %" PRIx64 " %" PRIx64, addr, value)) == "ok"; }
  uint64_t first(const std::string& r) {
    auto v = values(r);
    return r.rfind("ok", 0) == 0 && !v.empty() ? v[0] : 0;
  }

  void kill_and_reap() {
    if (pid_ <= 0) return;
    if (to_ >= 0) close(to_);
    if (from_ >= 0) close(from_);
    to_ = from_ = -1;
    ::kill(pid_, SIGKILL);
    int st;
    while (waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  // Asks the target to exit and reaps it; returns its exit status.
  int quit() {
    post("quit");
    int st = -1;
    for (int i = 0; i < 500; i++) {
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return st;
      }
      usleep(10000);
    }
    kill_and_reap();
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
  std::string buf_;
  std::string error_;
};

// Whether pid has no tracer (TracerPid: 0 in /proc/PID/status).
inline bool untraced(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("TracerPid:", 0) == 0) return std::strtol(line.c_str() + 10, nullptr, 10) == 0;
  return false;
}

}  // namespace lm::test
