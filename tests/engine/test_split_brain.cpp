// No split brain: `livemig source` is killed (SIGKILL, by its own fault
// injection LM_FI_SOURCE_DIE_AT) on entering each phase. Before the commit
// the source guest runs on as it was and the destination discards its copy;
// from the commit on the source guest never executes another step (read
// from its RAM, since a stopped guest cannot answer its control socket) and
// no copy of the VM runs anywhere unless the destination completed it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <optional>
#include <thread>

#include "common/clock.hpp"
#include "engine/destination.hpp"
#include "harness/guest/layout.hpp"
#include "tests/engine/engine_test_util.hpp"

using namespace lm;
using namespace lm::engine;
using namespace lm::engine::test;

namespace {

struct Case {
  const char* mode;   // precopy | postcopy
  const char* phase;  // the source phase on whose entry the engine dies
  bool source_runs_on;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  std::string n = std::string(info.param.mode) + "_" + info.param.phase;
  for (char& c : n)
    if (c == '-') c = '_';
  return n;
}

// The guest's completed steps, summed over its writer threads, read from its
// RAM (its "registers" live there).
Result<uint64_t> steps_in_ram(pid_t pid, uint64_t ram_addr) {
  guest::GuestHeader h{};
  iovec local{&h, sizeof h}, remote{reinterpret_cast<void*>(ram_addr), sizeof h};
  if (process_vm_readv(pid, &local, 1, &remote, 1, 0) != ssize_t(sizeof h))
    return Error::from_errno(strf("read the guest header of pid %d", pid));
  std::vector<guest::ThreadState> t(h.threads);
  local = {t.data(), t.size() * sizeof(guest::ThreadState)};
  remote = {reinterpret_cast<void*>(ram_addr + h.thread_state_offset), local.iov_len};
  if (process_vm_readv(pid, &local, 1, &remote, 1, 0) != ssize_t(local.iov_len))
    return Error::from_errno(strf("read the thread states of pid %d", pid));
  uint64_t steps = 0;
  for (const auto& s : t) steps += s.steps;
  return steps;
}

// `livemig source` for the guest, told to die on entering `phase`.
pid_t spawn_source(const guest::GuestProcess& g, const std::string& to, const Case& c) {
  const std::string bin = env_or_fail("LM_LIVEMIG_BIN");
  const std::string ram = strf("0x%llx:%llu", (unsigned long long)g.ram_addr(), (unsigned long long)g.ram_size());
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    alarm(60);
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    setenv("LM_FI_SOURCE_DIE_AT", c.phase, 1);
    execl(bin.c_str(), bin.c_str(), "source", "--pid", std::to_string(g.pid()).c_str(), "--to", to.c_str(), "--ram",
          ram.c_str(), "--mode", c.mode, "--max-rounds", "2", "--prepaging", "none", "--policy", "fixed:raw",
          "--reconnect-timeout-ms", "0", nullptr);
    _exit(127);
  }
  return pid;
}

class SplitBrain : public testing::TestWithParam<Case> {};

TEST_P(SplitBrain, SourceEngineKilledOnEnteringPhase) {
  const Case c = GetParam();
  const std::string dir = temp_dir();
  auto g = busy_guest(dir, 64ull << 20);
  ASSERT_TRUE(g.ok()) << g.error().message;

  InProcessDestination dest(dir, transport::Timeout(5000), transport::Timeout(0));
  ASSERT_TRUE(dest.dest);

  pid_t source = spawn_source(*g, dest.dest->address(), c);
  int status = 0;
  ASSERT_EQ(waitpid(source, &status, 0), source);
  dest.join();
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "livemig source did not reach phase " << c.phase << " (status " << status << ")";
  ASSERT_TRUE(dest.outcome.has_value());
  EXPECT_FALSE(dest.outcome->ok()) << "the destination cannot keep a VM without the source's verdict";
  EXPECT_TRUE(wait_until_gone(std::string("--handoff ") + dir, 5000).empty())
      << "the destination's guest must be gone";

  if (c.source_runs_on) {
    expect_source_unharmed(*g);
    return;
  }
  // From the commit on: stopped for good, whatever the dying engine left.
  usleep(200000);
  EXPECT_EQ(proc_state(g->pid()), 'T') << "the source must be left stopped (SIGSTOP), not running";
  auto before = steps_in_ram(g->pid(), g->ram_addr());
  ASSERT_TRUE(before.ok()) << before.error().message;
  usleep(500000);
  auto after = steps_in_ram(g->pid(), g->ram_addr());
  ASSERT_TRUE(after.ok()) << after.error().message;
  EXPECT_EQ(*after, *before) << "the source ran " << (*after - *before) << " steps after its engine died";
}

INSTANTIATE_TEST_SUITE_P(Phases, SplitBrain,
                         testing::Values(Case{"precopy", "precopy", true}, Case{"precopy", "stop-and-copy", true},
                                         Case{"precopy", "commit", false}, Case{"precopy", "verify", false},
                                         Case{"postcopy", "stop-and-copy", true},
                                         Case{"postcopy", "commit", false}, Case{"postcopy", "postcopy", false},
                                         Case{"postcopy", "verify", false}),
                         case_name);

}  // namespace
