// Shared by the end-to-end migration tests: scenarios on a small guest, the
// destination as its own process, and the binaries meson points at.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "engine/destination.hpp"
#include "harness/runner.hpp"
#include "harness/guest/client.hpp"
#include "harness/guest_ram_sink.hpp"

namespace lm::engine::test {

// An environment variable meson sets (LM_GUEST_BIN, LM_LIVEMIG_BIN).
inline std::string env_or_fail(const char* name) {
  const char* v = std::getenv(name);
  if (!v) ADD_FAILURE() << name << " is not set (meson sets it)";
  return v ? v : "";
}

inline std::string guest_binary() { return env_or_fail("LM_GUEST_BIN"); }

// A fresh directory under /tmp, removed with everything in it when the test
// process exits (images are tens of MiB); LM_KEEP_TEST_DIRS=1 keeps them to
// look at after a failure.
inline std::string temp_dir() {
  struct Made {
    pid_t owner = getpid();  // a forked child that exits removes nothing
    std::vector<std::string> dirs;
    ~Made() {
      if (getpid() != owner || std::getenv("LM_KEEP_TEST_DIRS")) return;
      for (const auto& d : dirs) {
        std::error_code ignored;
        std::filesystem::remove_all(d, ignored);
      }
    }
  };
  static Made made;
  char t[] = "/tmp/livemig-test-XXXXXX";
  EXPECT_NE(mkdtemp(t), nullptr);
  made.dirs.push_back(t);
  return t;
}

// main() of a test that needs redis-server and redis-benchmark: skipped
// (exit 77) when they are missing.
inline int run_redis_tests(int argc, char** argv) {
  if (access("/usr/bin/redis-server", X_OK) != 0 || access("/usr/bin/redis-benchmark", X_OK) != 0) {
    std::printf("SKIP: redis-server/redis-benchmark not installed (scripts/install-deps.sh installs them)\n");
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

// --- livemig as a child process -------------------------------------------------

struct LivemigOutcome {
  int status = -1;  // as waitpid gives it
  std::string out, err;
};

// Runs `livemig ARGS...` ($LM_LIVEMIG_BIN) to its end (at most 20 s),
// capturing stdout and stderr.
inline LivemigOutcome run_livemig(const std::vector<std::string>& args) {
  int out[2], err[2];
  EXPECT_EQ(pipe(out), 0);
  EXPECT_EQ(pipe(err), 0);
  const std::string bin = env_or_fail("LM_LIVEMIG_BIN");
  std::vector<const char*> argv{bin.c_str()};
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(20);
    dup2(out[1], 1);
    dup2(err[1], 2);
    execv(bin.c_str(), const_cast<char* const*>(argv.data()));
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  LivemigOutcome o;
  // Help texts are small: stdout fits its pipe while stderr is read.
  char buf[4096];
  for (ssize_t n; (n = read(err[0], buf, sizeof buf)) > 0;) o.err.append(buf, size_t(n));
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;) o.out.append(buf, size_t(n));
  close(out[0]);
  close(err[0]);
  waitpid(pid, &o.status, 0);
  return o;
}

// `livemig ARGS...` as a child with a deadline (alarm survives exec) that
// dies with this test; its stdout is read through `out`.
struct Livemig {
  pid_t pid = -1;
  FILE* out = nullptr;

  explicit Livemig(std::vector<std::string> args, unsigned timeout_s = 60) {
    int p[2];
    if (pipe(p) != 0) {
      ADD_FAILURE() << "pipe";
      return;
    }
    const std::string bin = env_or_fail("LM_LIVEMIG_BIN");
    const pid_t parent = getpid();
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      dup2(p[1], 1);
      alarm(timeout_s);
      std::vector<char*> argv{const_cast<char*>(bin.c_str())};
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    close(p[1]);
    out = fdopen(p[0], "r");
  }
  std::string line() {
    char buf[4096] = {};
    return out && fgets(buf, sizeof buf, out) ? std::string(buf) : std::string();
  }
  std::string rest() {
    std::string s;
    for (std::string l = line(); !l.empty(); l = line()) s += l;
    return s;
  }
  // The exit code; -signal if it was killed (the alarm: SIGALRM).
  int wait() {
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, 0) == pid) {
      pid = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
    }
    return -1000;
  }
  ~Livemig() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (out) fclose(out);
  }
};

// --- processes, from /proc ------------------------------------------------------

// The state letter of /proc/PID/stat ('R', 'S', 'T', 'Z', ...), '?' if gone.
inline char proc_state(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), {});
  auto p = s.rfind(')');
  return p == std::string::npos ? '?' : s[p + 2];
}

inline bool alive(pid_t pid) {
  char st = proc_state(pid);
  return st != '?' && st != 'Z';
}

inline bool has_userfaultfd(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = opendir(dir.c_str());
  if (!d) return false;
  bool found = false;
  while (dirent* e = readdir(d)) {
    char target[256] = {};
    if (readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1) > 0 &&
        std::string(target).find("userfaultfd") != std::string::npos)
      found = true;
  }
  closedir(d);
  return found;
}

// PIDs of live processes whose command line contains `needle`.
inline std::vector<pid_t> processes_with(const std::string& needle) {
  std::vector<pid_t> out;
  DIR* d = opendir("/proc");
  while (dirent* e = readdir(d)) {
    pid_t pid = atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream f("/proc/" + std::string(e->d_name) + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(f)), {});
    for (char& c : cmd)
      if (c == '\0') c = ' ';
    if (cmd.find(needle) != std::string::npos && alive(pid)) out.push_back(pid);
  }
  closedir(d);
  return out;
}

// Waits up to `ms` for every such process to end; returns those left.
inline std::vector<pid_t> wait_until_gone(const std::string& needle, int ms) {
  Stopwatch sw;
  auto left = processes_with(needle);
  while (!left.empty() && sw.elapsed_ms() < ms) {
    usleep(20000);
    left = processes_with(needle);
  }
  return left;
}

// A guest migration completed, every page's digest matched, and the guest
// runs on at the destination.
inline void expect_migrated_and_verified(const MigrationResult& r) {
  EXPECT_TRUE(r.completed) << r.error;
  EXPECT_TRUE(r.verify_ok);
  EXPECT_EQ(r.verify_pages, r.ram_total / 4096);
  EXPECT_GT(r.workload_rate_after, 0) << "the guest must run on at the destination";
}

// A 32 MiB guest with mixed content at a moderate rate, then `overrides`.
inline ScenarioConfig small_guest(std::vector<std::string> overrides) {
  overrides.insert(overrides.begin(), {"workload.ram=\"32M\"", "workload.rate=5000", "workload.warmup-ms=100",
                                       "workload.content=\"mixed\"", "migration.address=\"127.0.0.1:0\""});
  auto c = parse_scenario("name = \"test\"\n", "test", overrides);
  EXPECT_TRUE(c.ok()) << c.error().message;
  return *c;
}

inline MigrationResult migrate(const ScenarioConfig& c) {
  RunOptions o;
  o.guest_binary = guest_binary();
  auto r = run_scenario(c, o);
  EXPECT_TRUE(r.ok()) << r.error().message;
  if (!r) return {};
  std::printf("%s", summarize(*r).c_str());
  return *r;
}

// --- guests ---------------------------------------------------------------------

// A guest writing random content to uniformly chosen pages at full speed:
// a migration of it lasts long enough to break something on purpose.
inline Result<guest::GuestProcess> busy_guest(const std::string& dir, uint64_t ram_bytes) {
  guest::GuestOptions go;
  go.ram_bytes = ram_bytes;
  go.rate = "max";
  go.content = "random";
  go.pattern = "uniform";
  auto g = guest::GuestProcess::spawn(env_or_fail("LM_GUEST_BIN"), go, dir);
  usleep(300000);
  return g;
}

// The source guest after a failed migration: running, unchanged, ours only.
void expect_source_unharmed(guest::GuestProcess& g) {
  usleep(100000);
  char st = proc_state(g.pid());
  EXPECT_NE(st, 'T') << "source left stopped";
  EXPECT_NE(st, 't') << "source left ptrace-stopped";
  EXPECT_FALSE(has_userfaultfd(g.pid())) << "a userfaultfd was left in pid " << g.pid();
  // It must make progress; allow for a busy machine (up to 3 s).
  auto a = g.control().status();
  ASSERT_TRUE(a.ok()) << a.error().message;
  uint64_t steps = a->steps;
  for (int i = 0; i < 30 && steps == a->steps; i++) {
    usleep(100000);
    auto b = g.control().status();
    ASSERT_TRUE(b.ok()) << b.error().message;
    steps = b->steps;
  }
  EXPECT_GT(steps, a->steps) << "source does not run on (state " << proc_state(g.pid()) << ")";
  auto v = g.control().verify();
  EXPECT_TRUE(v.ok()) << (v ? "" : v.error().message);
}

// A sink that resumes livemig-guest (LM_GUEST_BIN) with its sockets in `dir`.
inline std::shared_ptr<GuestRamSink> guest_sink(const std::string& dir) {
  return std::make_shared<GuestRamSink>(GuestRamSinkOptions{env_or_fail("LM_GUEST_BIN"), dir});
}

// A guest destination in this process, running on its own thread.
struct InProcessDestination {
  std::shared_ptr<GuestRamSink> sink;
  std::unique_ptr<Destination> dest;
  std::optional<Result<DestinationOutcome>> outcome;
  std::thread thread;
  explicit InProcessDestination(const std::string& dir, transport::Timeout silence = transport::Timeout(5000),
                                transport::Timeout reconnect = transport::Timeout(kDefaultReconnectTimeoutMs)) {
    DestinationOptions o;
    o.listen = "tcp:127.0.0.1:0";
    o.sink = sink = guest_sink(dir);
    o.timeout = silence;
    o.reconnect_timeout = reconnect;
    auto d = Destination::listen(o);
    EXPECT_TRUE(d.ok()) << d.error().message;
    if (!d) return;
    dest = std::move(*d);
    thread = std::thread([this] { outcome = dest->run(); });
  }
  void join() {
    if (thread.joinable()) thread.join();
  }
  ~InProcessDestination() { join(); }
};

// `livemig dest --listen tcp:127.0.0.1:0 --exit-after` as a child process,
// so that a test can really kill it.
struct DestinationProcess {
  pid_t pid = -1;
  std::string address;
  FILE* out = nullptr;

  DestinationProcess() {
    int p[2];
    if (pipe(p) != 0) {
      ADD_FAILURE() << "pipe";
      return;
    }
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the test, even if it is killed
      dup2(p[1], 1);
      alarm(60);
      std::string bin = env_or_fail("LM_LIVEMIG_BIN");
      execl(bin.c_str(), bin.c_str(), "dest", "--listen", "tcp:127.0.0.1:0", "--exit-after", nullptr);
      _exit(127);
    }
    close(p[1]);
    out = fdopen(p[0], "r");
    char line[256] = {};
    if (!fgets(line, sizeof line, out)) {
      ADD_FAILURE() << "livemig dest did not print its address";
      return;
    }
    address = std::string(line).substr(std::string("LISTENING ").size());
    address.erase(address.find_last_not_of("\n") + 1);
  }
  // Waits for it to end (after the test killed it).
  void reap() {
    if (pid > 0) waitpid(pid, nullptr, 0);
    pid = -1;
  }
  ~DestinationProcess() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
    if (out) fclose(out);
  }
};

}  // namespace lm::engine::test
