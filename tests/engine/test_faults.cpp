// Fault injection on pre-copy: a side dying or a corrupted message must end
// the migration with a clear error, leave the source process running as it
// was (not stopped, no userfaultfd in it, its own verify passing), and leave
// no process of ours behind.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "common/clock.hpp"
#include "engine/destination.hpp"
#include "engine/source.hpp"
#include "harness/guest/client.hpp"
#include "tests/engine/engine_test_util.hpp"

using namespace lm;
using namespace lm::engine;
using namespace lm::engine::test;

namespace {

guest::GuestProcess busy_guest(const std::string& dir) {
  auto g = test::busy_guest(dir, 64ull << 20);
  EXPECT_TRUE(g.ok()) << g.error().message;
  return std::move(*g);
}

// Keeps iterating until something breaks (bounded by max-bytes as a backstop).
SourceOptions endless_source(const guest::GuestProcess& g) {
  SourceOptions o;
  o.pid = g.pid();
  o.scope.kind = dt::ScopeKind::ranges;
  o.scope.ranges = {{g.ram_addr(), g.ram_addr() + g.ram_size()}};
  o.convergence.max_rounds = 100000;
  o.convergence.downtime_target_ms = 0;
  o.convergence.max_bytes_factor = 200;
  o.policy = *compress::parse_policy("fixed:raw");
  o.timeout = transport::Timeout(5000);
  return o;
}

TEST(PrecopyFaults, DestinationKilledMidRound) {
  std::string dir = temp_dir();
  auto g = busy_guest(dir);
  // The destination as its own process, so that it can really die.
  DestinationProcess destination;
  ASSERT_FALSE(destination.address.empty());
  const pid_t dest = destination.pid;
  const std::string address = destination.address;

  auto o = endless_source(g);
  o.on_round = [&](const SourceProgress& p) {
    if (p.round == 2) kill(dest, SIGKILL);
  };
  MigrationResult result;
  SourceMigration source(o);
  Stopwatch sw;
  auto r = source.run(address, result);
  ASSERT_FALSE(r.ok());
  std::printf("source error after %.0f ms: %s\n", sw.elapsed_ms(), r.error().message.c_str());
  EXPECT_LT(sw.elapsed_ms(), 20000);
  EXPECT_FALSE(result.completed);
  EXPECT_FALSE(result.error.empty());
  destination.reap();
  expect_source_unharmed(g);
  // The dead destination's resumed guest (waiting for 'go') must go too.
  auto left = wait_until_gone("handoff-" + std::to_string(dest) + "-", 5000);
  EXPECT_TRUE(left.empty()) << "stray resumed guest pid " << (left.empty() ? 0 : left[0]);
}


TEST(PrecopyFaults, SourceProcessKilledMidRound) {
  std::string dir = temp_dir();
  auto g = busy_guest(dir);
  InProcessDestination d(dir);
  auto o = endless_source(g);
  const pid_t pid = g.pid();
  o.on_round = [&](const SourceProgress& p) {
    if (p.round == 2) kill(pid, SIGKILL);
  };
  MigrationResult result;
  auto r = SourceMigration(o).run(d.dest->address(), result);
  ASSERT_FALSE(r.ok());
  std::printf("source error: %s\n", r.error().message.c_str());
  EXPECT_NE(r.error().message.find(std::to_string(pid)), std::string::npos) << "the error names the pid";
  d.thread.join();
  ASSERT_FALSE(d.outcome->ok()) << "the destination must discard its partial image";
  std::printf("destination error: %s\n", d.outcome->error().message.c_str());
  auto left = wait_until_gone("handoff-" + std::to_string(getpid()) + "-", 5000);
  EXPECT_TRUE(left.empty()) << "stray resumed guest pid " << (left.empty() ? 0 : left[0]);
}

// Without a verify each message checks its payload itself (a verified
// pre-copy leaves that to the digests: EngineMatrix corrupt_batch).
TEST(PrecopyFaults, CorruptedMessageIsRejected) {
  std::string dir = temp_dir();
  auto g = busy_guest(dir);
  InProcessDestination d(dir);
  auto o = endless_source(g);
  o.verify = false;
  o.fault_corrupt_batch = 5;
  MigrationResult result;
  auto r = SourceMigration(o).run(d.dest->address(), result);
  ASSERT_FALSE(r.ok());
  std::printf("source error: %s\n", r.error().message.c_str());
  EXPECT_NE(r.error().message.find("checksum"), std::string::npos);
  d.thread.join();
  ASSERT_FALSE(d.outcome->ok());
  EXPECT_NE(d.outcome->error().message.find("checksum"), std::string::npos) << d.outcome->error().message;
  expect_source_unharmed(g);
  auto left = wait_until_gone("handoff-" + std::to_string(getpid()) + "-", 5000);
  EXPECT_TRUE(left.empty());
}

// A round longer than the destination's silence timeout, as over a slow
// link: the control channel is quiet while pages stream on the bulk
// channels, which must not end the migration.
TEST(PrecopyFaults, RoundLongerThanTheSilenceTimeout) {
  std::string dir = temp_dir();
  guest::GuestOptions go;
  go.ram_bytes = 16ull << 20;
  go.rate = "100";
  go.prefill = true;  // round 0 sends every page
  auto g = guest::GuestProcess::spawn(env_or_fail("LM_GUEST_BIN"), go, dir);
  ASSERT_TRUE(g.ok()) << g.error().message;
  InProcessDestination d(dir, transport::Timeout(1000));
  SourceOptions o;
  o.pid = g->pid();
  o.scope.kind = dt::ScopeKind::ranges;
  o.scope.ranges = {{g->ram_addr(), g->ram_addr() + g->ram_size()}};
  o.policy = *compress::parse_policy("fixed:zstd:19");  // a slow "link" whatever the machine
  o.workers = 1;
  o.channels = 1;
  o.convergence.max_rounds = 1;
  MigrationResult result;
  auto r = SourceMigration(o).run(d.dest->address(), result);
  d.thread.join();
  EXPECT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(d.outcome.has_value());
  EXPECT_TRUE(d.outcome->ok()) << d.outcome->error().message;
  ASSERT_FALSE(result.rounds.empty());
  EXPECT_GT(result.rounds[0].duration_ms, 1000) << "the premise: round 0 outlasts the destination's timeout";
  EXPECT_TRUE(result.verify_ok);
}

}  // namespace
