// `livemig source` refuses targets it must never freeze or kill, with a clear
// error and before anything is attached: pid 1, a kernel thread, its own
// ancestors (here: this test), another user's process, and `--after keep`
// with a destination that would resume the VM (two running copies). A bad
// option value is refused as a usage error before anything is attached.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/strf.hpp"
#include "tests/engine/engine_test_util.hpp"

using namespace lm::engine::test;

namespace {

// Runs `livemig source ARGS...` to its end, capturing stderr.
LivemigOutcome run_source(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"source"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_livemig(argv);
}

// Nothing listens on port 9 of loopback: a refusal must come before any connect.
const char* kNowhere = "tcp:127.0.0.1:9";

void expect_refused(pid_t target, const std::string& why, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--pid", std::to_string(target), "--to", kNowhere};
  args.insert(args.end(), extra.begin(), extra.end());
  LivemigOutcome o = run_source(args);
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

// A child that waits, for a refusal that must leave it untouched.
pid_t idle_child() {
  pid_t child = fork();
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(30);
    for (;;) pause();
  }
  return child;
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
  pid_t child = idle_child();
  expect_refused(child, "would run it twice", {"--ram", "0x10000000:4096", "--after", "keep"});
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
}

// --policy and --prepaging are parsed before anything is attached: a usage
// error (2) that names the value, and the process runs on as it was.
TEST(RefusedOption, BadPolicyOrPrepagingLeavesTheProcessUntouched) {
  pid_t child = idle_child();
  for (auto [flag, value] : {std::pair{"--policy", "fixed:nosuch"}, {"--prepaging", "nosuch"}}) {
    LivemigOutcome o = run_source({"--pid", std::to_string(child), "--to", kNowhere, flag, value});
    ASSERT_TRUE(WIFEXITED(o.status)) << "livemig source did not exit by itself (status " << o.status << ")";
    EXPECT_EQ(WEXITSTATUS(o.status), 2) << o.err;
    EXPECT_NE(o.err.find(flag), std::string::npos) << o.err;
    EXPECT_NE(o.err.find(std::string("'") + value + "'"), std::string::npos) << o.err;
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << "not one line: " << o.err;
    EXPECT_TRUE(alive(child));
    EXPECT_NE(proc_state(child), 't') << "pid " << child << " was left traced";
    EXPECT_NE(proc_state(child), 'T') << "pid " << child << " was left stopped";
    EXPECT_FALSE(has_userfaultfd(child)) << "a userfaultfd was left in pid " << child;
  }
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
}

}  // namespace
