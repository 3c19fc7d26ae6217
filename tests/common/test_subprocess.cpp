#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "common/clock.hpp"
#include "common/subprocess.hpp"

namespace lm {
namespace {

// A status, or the error message as the failure text.
ExitStatus expect_status(Result<ExitStatus> r) {
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : ExitStatus{-1, -1};
}

Subprocess spawn_ok(const std::vector<std::string>& argv, const SpawnOptions& o = {}) {
  auto s = Subprocess::spawn(argv, o);
  EXPECT_TRUE(s.ok()) << (s.ok() ? "" : s.error().message);
  return s.ok() ? std::move(*s) : Subprocess();
}

bool proc_entry_exists(pid_t pid) { return ::access(("/proc/" + std::to_string(pid)).c_str(), F_OK) == 0; }

TEST(Subprocess, ExitCodes) {
  auto t = spawn_ok({"/bin/true"});
  ExitStatus st = expect_status(t.wait(10000));
  EXPECT_TRUE(st.success());
  EXPECT_EQ(st.text(), "exited with status 0");
  auto f = spawn_ok({"false"});  // found in PATH
  st = expect_status(f.wait(10000));
  EXPECT_FALSE(st.success());
  EXPECT_EQ(st.code, 1);
  EXPECT_EQ(st.text(), "exited with status 1");
  EXPECT_FALSE(f.running());
}

TEST(Subprocess, KilledBySignal) {
  auto s = spawn_ok({"/bin/sh", "-c", "kill -TERM $$; sleep 10"});
  ExitStatus st = expect_status(s.wait(10000));
  EXPECT_EQ(st.signal, SIGTERM);
  EXPECT_EQ(st.shell_code(), 128 + SIGTERM);
  EXPECT_EQ(st.text(), "killed by SIGTERM");
}

TEST(Subprocess, WaitTimesOutAndTheChildRunsOn) {
  auto s = spawn_ok({"/bin/sleep", "60"});
  Stopwatch sw;
  auto r = s.wait(200);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ETIMEDOUT);
  EXPECT_GE(sw.elapsed_ms(), 150);
  EXPECT_NE(r.error().message.find(s.name() + ": did not exit within 200 ms"), std::string::npos)
      << r.error().message;
  EXPECT_TRUE(s.running());
  ExitStatus st = expect_status(s.kill_and_wait());
  EXPECT_EQ(st.text(), "killed by SIGKILL");
}

TEST(Subprocess, WaitOrKillEndsTheChild) {
  auto s = spawn_ok({"/bin/sleep", "60"});
  auto r = s.wait_or_kill(100);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ETIMEDOUT);
  EXPECT_FALSE(s.running());
  EXPECT_FALSE(proc_entry_exists(s.pid()));
}

TEST(Subprocess, DestructorKillsAndReaps) {
  pid_t pid = -1;
  int watch = -1;
  {
    auto s = spawn_ok({"/bin/sleep", "60"});
    pid = s.pid();
    watch = int(::syscall(SYS_pidfd_open, pid, 0));
    ASSERT_GE(watch, 0);
  }
  pollfd p{watch, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 1) << "the child still runs";
  siginfo_t info{};
  EXPECT_NE(::waitid(idtype_t(3) /* P_PIDFD */, id_t(watch), &info, WEXITED | WNOHANG), 0);
  EXPECT_EQ(errno, ECHILD) << "not reaped";
  ::close(watch);
  EXPECT_FALSE(proc_entry_exists(pid));
}

TEST(Subprocess, StdoutThroughAPipe) {
  SpawnOptions o;
  o.stdout_to = Stdio::pipe;
  o.stderr_to = Stdio::null;
  auto s = spawn_ok({"/bin/sh", "-c", "echo hello; echo noise >&2"}, o);
  UniqueFd out = s.take_pipe(STDOUT_FILENO);
  ASSERT_TRUE(out.valid());
  std::string text;
  char buf[256];
  ssize_t n;
  while ((n = ::read(out.get(), buf, sizeof buf)) > 0) text.append(buf, size_t(n));
  EXPECT_EQ(text, "hello\n");
  EXPECT_TRUE(expect_status(s.wait(10000)).success());
}

TEST(Subprocess, EnvironmentAndWorkingDir) {
  SpawnOptions o;
  o.stdout_to = Stdio::pipe;
  o.working_dir = "/proc";
  o.environment = std::vector<std::string>{"PATH=/usr/bin:/bin", "LM_TEST_VALUE=42"};
  for (ParentExit mode : {ParentExit::keep_running, ParentExit::die}) {
    o.on_parent_exit = mode;
    auto s = spawn_ok({"sh", "-c", "echo $LM_TEST_VALUE $(pwd)"}, o);
    UniqueFd out = s.take_pipe(STDOUT_FILENO);
    char buf[256] = {};
    ssize_t n = ::read(out.get(), buf, sizeof buf - 1);
    EXPECT_EQ(std::string(buf, n > 0 ? size_t(n) : 0), "42 /proc\n");
    EXPECT_TRUE(expect_status(s.wait(10000)).success());
  }
}

TEST(Subprocess, MissingProgramIsAClearError) {
  for (ParentExit mode : {ParentExit::keep_running, ParentExit::die}) {
    SpawnOptions o;
    o.on_parent_exit = mode;
    auto s = Subprocess::spawn({"/nonexistent/livemig-no-such-program"}, o);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, ENOENT);
    EXPECT_EQ(s.error().message, "spawn /nonexistent/livemig-no-such-program: No such file or directory");
  }
  auto bare = Subprocess::spawn({"livemig-no-such-program"});
  ASSERT_FALSE(bare.ok());
  EXPECT_EQ(bare.error().code, ENOENT);
  EXPECT_EQ(bare.error().message.rfind("spawn livemig-no-such-program: not found in PATH", 0), 0u)
      << bare.error().message;
}

TEST(Subprocess, ChildGetsAnEmptySignalMask) {
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  for (ParentExit mode : {ParentExit::keep_running, ParentExit::die}) {
    SpawnOptions o;
    o.on_parent_exit = mode;
    auto s = spawn_ok({"/bin/sleep", "60"}, o);
    ASSERT_TRUE(s.send_signal(SIGTERM).ok());
    EXPECT_EQ(expect_status(s.wait(10000)).signal, SIGTERM);
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

TEST(Subprocess, SignalAfterReapIsAnError) {
  auto s = spawn_ok({"/bin/true"});
  ASSERT_TRUE(s.wait(10000).ok());
  auto r = s.send_signal(SIGKILL);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ESRCH);
}

// A middle process (forked here: this test binary is single-threaded) starts
// a grandchild that must die with it, reports its PID and exits. This
// process is a subreaper, so the orphan comes back to it as a zombie.
TEST(Subprocess, ChildOfAChildDiesWithItsParent) {
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  pid_t middle = ::fork();
  ASSERT_GE(middle, 0);
  if (middle == 0) {
    SpawnOptions o;
    o.on_parent_exit = ParentExit::die;
    auto s = Subprocess::spawn({"/bin/sleep", "60"}, o);
    pid_t pid = s ? s->release() : -1;
    (void)!::write(p[1], &pid, sizeof pid);
    ::usleep(100000);
    ::_exit(0);
  }
  ::close(p[1]);
  pid_t grandchild = -1;
  ASSERT_EQ(::read(p[0], &grandchild, sizeof grandchild), ssize_t(sizeof grandchild));
  ::close(p[0]);
  ASSERT_GT(grandchild, 0);
  int st = 0;
  ASSERT_EQ(::waitpid(middle, &st, 0), middle);
  siginfo_t info{};
  Stopwatch sw;
  int r;
  while ((r = ::waitid(P_PID, id_t(grandchild), &info, WEXITED | WNOHANG)) == 0 && info.si_pid == 0 &&
         sw.elapsed_ms() < 5000)
    ::usleep(10000);
  if (r == 0 && info.si_pid == 0) {  // still alive: ours now (subreaper), end it
    ::kill(grandchild, SIGKILL);
    ::waitpid(grandchild, nullptr, 0);
  }
  ASSERT_EQ(r, 0);
  ASSERT_EQ(info.si_pid, grandchild) << "the grandchild outlived its parent";
  EXPECT_EQ(info.si_code, CLD_KILLED);
  EXPECT_EQ(info.si_status, SIGKILL);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

}  // namespace
}  // namespace lm
