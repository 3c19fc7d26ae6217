// Refused migration targets: each is refused before anything is attached,
// with an error naming the pid and the reason; an ordinary child is accepted.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "dirtytrack/target_check.hpp"

namespace {

using lm::dt::check_migration_target;
using lm::dt::OtherUsers;

// A child that sleeps until killed, optionally as another uid.
struct Child {
  pid_t pid = 0;
  explicit Child(uid_t uid = uid_t(-1)) {
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (uid != uid_t(-1) && (setgid(uid) != 0 || setuid(uid) != 0)) _exit(3);
      for (;;) pause();
    }
    // Wait until the uid change (if any) is visible.
    for (int i = 0; i < 200 && uid != uid_t(-1); i++) {
      std::ifstream s("/proc/" + std::to_string(pid) + "/status");
      std::string line;
      bool done = false;
      while (std::getline(s, line))
        if (line.rfind("Uid:", 0) == 0) done = std::strtoul(line.c_str() + 4, nullptr, 10) == uid;
      if (done) break;
      usleep(5000);
    }
  }
  ~Child() {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
};

void expect_refused(pid_t pid, const std::string& why, OtherUsers users = OtherUsers::refuse) {
  auto r = check_migration_target(pid, users);
  ASSERT_FALSE(r.ok()) << "pid " << pid << " must be refused (" << why << ")";
  EXPECT_NE(r.error().message.find("pid " + std::to_string(pid)), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(why), std::string::npos) << r.error().message;
}

TEST(TargetCheck, OrdinaryChildIsAccepted) {
  Child c;
  auto r = check_migration_target(c.pid);
  EXPECT_TRUE(r.ok()) << r.error().message;
}

TEST(TargetCheck, InitIsRefused) { expect_refused(1, "init"); }

TEST(TargetCheck, SelfIsRefused) { expect_refused(getpid(), "this livemig process"); }

TEST(TargetCheck, AncestorsAreRefused) {
  expect_refused(getppid(), "ancestor");
}

TEST(TargetCheck, KernelThreadIsRefused) {
  // kthreadd is pid 2 on Linux; its children are kernel threads too.
  expect_refused(2, "kernel thread");
}

TEST(TargetCheck, MissingProcessIsAnError) {
  Child* c = new Child;
  pid_t gone = c->pid;
  delete c;
  auto r = check_migration_target(gone);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("no such process"), std::string::npos) << r.error().message;
}

TEST(TargetCheck, OtherUserRefusedUnlessAllowed) {
  if (getuid() != 0) GTEST_SKIP() << "needs root to start a process of another user";
  Child c(65534);  // nobody
  expect_refused(c.pid, "uid 65534");
  auto r = check_migration_target(c.pid, OtherUsers::allow);
  EXPECT_TRUE(r.ok()) << r.error().message;
}

}  // namespace
