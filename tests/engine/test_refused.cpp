// `livemig source` refuses targets it must never freeze or kill, with a clear
// error and before anything is attached: pid 1, a kernel thread, its own
// ancestors (here: this test), another user's process, and `--after keep`
// with a destination that would resume the VM (two running copies).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/strf.hpp"
#include "tests/engine/engine_test_util.hpp"

using namespace lm::engine::test;

namespace {

struct Outcome {
  int status = -1;
  std::string err;
};

// Runs `livemig source ARGS...` to its end (at most 20 s), capturing stderr.
Outcome run_source(const std::vector<std::string>& args) {
  int p[2];
  EXPECT_EQ(pipe(p), 0);
  const std::string bin = env_or_fail("LM_LIVEMIG_BIN");
  std::vector<const char*> argv{bin.c_str(), "source"};
  for (const auto& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(20);
    dup2(p[1], 2);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execv(bin.c_str(), const_cast<char* const*>(argv.data()));
    _exit(127);
  }
  close(p[1]);
  Outcome o;
  char buf[4096];
  for (ssize_t n; (n = read(p[0], buf, sizeof buf)) > 0;) o.err.append(buf, size_t(n));
  close(p[0]);
  waitpid(pid, &o.status, 0);
  return o;
}

// Nothing listens on port 9 of loopback: a refusal must come before any connect.
const char* kNowhere = "tcp:127.0.0.1:9";

void expect_refused(pid_t target, const std::string& why, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--pid", std::to_string(target), "--to", kNowhere};
  args.insert(args.end(), extra.begin(), extra.end());
  Outcome o = run_source(args);
  ASSERT_TRUE(WIFEXITED(o.status)) << "livemig source did not exit by itself (status " << o.status << ")";
  EXPECT_EQ(WEXITSTATUS(o.status), 1) << o.err;
  EXPECT_NE(o.err.find(why), std::string::npos) << o.err;
  EXPECT_EQ(o.err.find("connect"), std::string::npos) << "refused only after trying to connect: " << o.err;
  if (target > 2) {
    EXPECT_NE(proc_state(target), 't') << "pid " << target << " was left traced";
    EXPECT_NE(proc_state(target), 'T') << "pid " << target << " was left stopped";
    EXPECT_FALSE(has_userfaultfd(target)) << "a userfaultfd was left in pid " << target;
  }
}

TEST(RefusedTarget, Init) { expect_refused(1, "refused as a migration target: it is init"); }

TEST(RefusedTarget, KernelThread) { expect_refused(2, "kernel thread"); }

TEST(RefusedTarget, AncestorOfTheEngine) { expect_refused(getpid(), "ancestor of this livemig process"); }

TEST(RefusedTarget, OtherUserUnlessAllowed) {
  if (getuid() != 0) GTEST_SKIP() << "needs root to start a process of another user";
  pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(30);
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(3);
    for (;;) pause();
  }
  usleep(100000);
  expect_refused(child, "belongs to uid 65534");
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
}

TEST(RefusedTarget, KeepWithAResumingDestination) {
  pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(30);
    for (;;) pause();
  }
  expect_refused(child, "would run it twice", {"--ram", "0x10000000:4096", "--after", "keep"});
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
}

}  // namespace
