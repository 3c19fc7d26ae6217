// End-to-end post-copy and hybrid migrations of a live livemig-guest on this
// host: the destination resumes at once and serves faults over userfaultfd;
// the digests of the installed pages must match the frozen source, and the
// guest's own verify must pass after completion.
#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "common/clock.hpp"
#include "engine/destination.hpp"
#include "engine/prepaging.hpp"
#include "harness/runner.hpp"
#include "engine/source.hpp"
#include "harness/guest/client.hpp"
#include "tests/engine/engine_test_util.hpp"
#include "tests/engine/tcp_proxy.hpp"

using namespace lm;
using namespace lm::engine;
using namespace lm::engine::test;

namespace {

void expect_verified(const MigrationResult& r) {
  expect_migrated_and_verified(r);
  EXPECT_GT(r.postcopy_complete_ms, 0);
}

// migrate/postcopy/<transport>/<prepaging>/<threads>
struct Combo {
  const char* transport;
  const char* prepaging;
  unsigned threads;
};

std::string combo_name(const ::testing::TestParamInfo<Combo>& info) {
  std::string s = std::string(info.param.transport) + "_" + info.param.prepaging + "_" +
                  std::to_string(info.param.threads);
  for (char& ch : s)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return s;
}

std::vector<std::string> combo_overrides(const Combo& c, const char* mode) {
  return {std::string("migration.mode=\"") + mode + "\"",
          std::string("migration.transport=\"") + c.transport + "\"",
          std::string("postcopy.prepaging=\"") + c.prepaging + "\"",
          "workload.threads=" + std::to_string(c.threads), "workload.rate=\"max\""};
}

class Postcopy : public ::testing::TestWithParam<Combo> {};

TEST_P(Postcopy, GuestVerifiesAfterCompletion) {
  const Combo& c = GetParam();
  auto r = migrate(small_guest(combo_overrides(c, "postcopy")));
  expect_verified(r);
  EXPECT_EQ(r.prepaging, c.prepaging);
  EXPECT_EQ(r.stop_reason, "postcopy") << "pure post-copy sends no pre-copy round";
  EXPECT_GT(r.postcopy_requests, 0u) << "the resumed guest must have faulted";
  EXPECT_GT(r.fault_latency_us.count, 0u);
  EXPECT_GT(r.fault_latency_us.p50, 0);
}

std::vector<Combo> postcopy_combos() {
  std::vector<Combo> out;
  for (const char* t : {"tcp", "uring"})
    for (const char* p : {"none", "sequential", "bubble", "bubble-forward"})
      for (unsigned threads : {1u, 4u}) out.push_back({t, p, threads});
  return out;
}
INSTANTIATE_TEST_SUITE_P(Matrix, Postcopy, ::testing::ValuesIn(postcopy_combos()), combo_name);

class Hybrid : public ::testing::TestWithParam<Combo> {};

TEST_P(Hybrid, GuestVerifiesAfterCompletion) {
  const Combo& c = GetParam();
  auto o = combo_overrides(c, "hybrid");
  o.push_back("postcopy.precopy-rounds=2");
  o.push_back("convergence.downtime-target-ms=0");
  // Stale pages need a guest that wrote after the last pre-copy collect: a
  // guest that got no CPU for that round's ~10 ms beside the engine left
  // post-copy nothing to send (0 pushed, 0 requested; about 1 run in 20).
  // Such a run shows nothing of the refresh, so it runs again, up to 3 times.
  MigrationResult r;
  for (int attempt = 1; attempt <= 3; attempt++) {
    r = migrate(small_guest(o));
    expect_verified(r);
    if (r.pages_pushed + r.postcopy_requests > 0) break;
    std::printf("attempt %d: post-copy had no page to send; again\n", attempt);
  }
  EXPECT_EQ(r.stop_reason, "max-rounds");
  EXPECT_EQ(r.rounds.size(), 2u) << "two pre-copy rounds, then post-copy";
  // Pages written again after their pre-copy were refreshed in place (this
  // kernel has UFFD_FEATURE_MINOR_SHMEM), not punched out in the downtime.
  EXPECT_GT(r.postcopy_stale_refreshed, 0u);
}

std::vector<Combo> hybrid_combos() {
  std::vector<Combo> out;
  for (const char* t : {"tcp", "uring"})
    for (unsigned threads : {1u, 4u}) out.push_back({t, "bubble", threads});
  return out;
}
INSTANTIATE_TEST_SUITE_P(Matrix, Hybrid, ::testing::ValuesIn(hybrid_combos()), combo_name);

// Pages the guest never wrote hold zeros; pre-copy sends them as zero pages,
// which the destination does not write. After the switch to post-copy they
// are neither needed nor present, so the writers touching them after the
// resume must be served locally (UFFDIO_ZEROPAGE), without a request.
TEST(PostcopyPages, ZeroPagesResolvedLocally) {
  auto r = migrate(small_guest({"migration.mode=\"hybrid\"", "postcopy.precopy-rounds=1",
                                "convergence.downtime-target-ms=0", "workload.rate=5000",
                                "workload.pattern=\"uniform\"", "postcopy.prepaging=\"none\""}));
  expect_verified(r);
  EXPECT_GT(r.postcopy_zero_faults, 0u);  // a handful in the short post-copy phase
}

// Faults and the sequential push race over the same pages with 4 writer
// threads at full speed: no page may be installed twice or lost, and no
// faulting thread may sleep forever (the run is bounded by the test timeout).
TEST(PostcopyPages, FaultRacingThePush) {
  auto r = migrate(small_guest({"migration.mode=\"postcopy\"", "workload.rate=\"max\"", "workload.threads=4",
                                "workload.pattern=\"sequential\"", "postcopy.prepaging=\"sequential\"",
                                "migration.channels=4"}));
  expect_verified(r);
  // The race did happen: pushed pages that were not installed ahead of any
  // fault either landed for a waiting fault or were dropped as second copies.
  EXPECT_GT(r.pages_pushed, r.pages_pushed_ahead);
  EXPECT_GT(r.postcopy_requests, 0u);
}

// --- pre-paging policy units ------------------------------------------------------

std::vector<uint64_t> drain(Prepager& p, bool idle, size_t max = 1 << 20) {
  std::vector<uint64_t> out, buf(7);
  while (out.size() < max) {
    size_t n = p.next(std::span<uint64_t>(buf).first(std::min(buf.size(), max - out.size())), idle);
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + ptrdiff_t(n));
  }
  return out;
}

const std::vector<PageRange> kNeeded = {{0x10000, 0x20000}, {0x40000, 0x48000}};  // 16 + 8 pages

TEST(Prepaging, EveryPageExactlyOnce) {
  for (auto kind : {PrepagingKind::none, PrepagingKind::sequential, PrepagingKind::bubble,
                    PrepagingKind::bubble_forward}) {
    for (unsigned pivots : {1u, 3u}) {
      Prepager p(kind, pivots, kNeeded);
      EXPECT_TRUE(p.on_fault(0x15000));
      EXPECT_FALSE(p.on_fault(0x15000)) << "a duplicate request is not a new page";
      EXPECT_TRUE(p.on_fault(0x44000));
      auto pages = drain(p, true);
      pages.push_back(0x15000);
      pages.push_back(0x44000);
      std::sort(pages.begin(), pages.end());
      EXPECT_EQ(std::adjacent_find(pages.begin(), pages.end()), pages.end()) << prepaging_name(kind);
      EXPECT_EQ(pages.size(), 24u) << prepaging_name(kind);
      EXPECT_EQ(p.unsent(), 0u);
    }
  }
}

TEST(Prepaging, NoneWaitsForIdle) {
  Prepager p(PrepagingKind::none, 1, kNeeded);
  p.on_fault(0x12000);
  EXPECT_TRUE(drain(p, false).empty());
  EXPECT_EQ(drain(p, true).size(), 23u);
}

TEST(Prepaging, BubbleExpandsAroundTheLatestFault) {
  Prepager p(PrepagingKind::bubble, 1, kNeeded);
  p.on_fault(0x18000);
  auto order = drain(p, true, 4);
  ASSERT_GE(order.size(), 4u);
  EXPECT_EQ(order[0], 0x19000u);
  EXPECT_EQ(order[1], 0x17000u);
  EXPECT_EQ(order[2], 0x1a000u);
  EXPECT_EQ(order[3], 0x16000u);
}

TEST(Prepaging, BubbleForwardOnlyGoesForward) {
  Prepager p(PrepagingKind::bubble_forward, 1, kNeeded);
  p.on_fault(0x1e000);
  auto order = drain(p, true, 3);
  ASSERT_EQ(order.size(), 3u);
  EXPECT_EQ(order[0], 0x1f000u);
  EXPECT_EQ(order[1], 0x40000u) << "the bubble crosses into the next needed range";
  EXPECT_EQ(order[2], 0x41000u);
}

TEST(Prepaging, SeveralPivotsShareThePush) {
  Prepager p(PrepagingKind::bubble_forward, 2, kNeeded);
  p.on_fault(0x10000);
  p.on_fault(0x40000);
  auto order = drain(p, true, 4);
  ASSERT_EQ(order.size(), 4u);
  std::sort(order.begin(), order.end());
  EXPECT_EQ(order, (std::vector<uint64_t>{0x11000, 0x12000, 0x41000, 0x42000}));
}

// --- failure after resume -------------------------------------------------------------

Result<guest::GuestProcess> busy_guest(const std::string& dir) { return test::busy_guest(dir, 128ull << 20); }

// An in-process destination for busy_guest(): short timeouts, so a lost peer
// is given up on quickly.
DestinationOptions busy_destination(const std::string& listen, std::shared_ptr<PageSink> sink, unsigned reconnect_ms) {
  DestinationOptions d;
  d.listen = listen;
  d.sink = std::move(sink);
  d.timeout = transport::Timeout(5000);
  d.reconnect_timeout = transport::Timeout(reconnect_ms);
  return d;
}

// Pure post-copy of busy_guest() with demand paging only for a while, so the
// post-copy phase lasts long enough to break something during it.
SourceOptions busy_postcopy_source(const guest::GuestProcess& g, unsigned reconnect_ms) {
  SourceOptions o;
  o.pid = g.pid();
  o.scope.kind = dt::ScopeKind::ranges;
  o.scope.ranges = {{g.ram_addr(), g.ram_addr() + g.ram_size()}};
  o.mode = MigrationMode::postcopy;
  o.postcopy.prepaging = PrepagingKind::none;
  o.postcopy.reconnect_timeout = std::chrono::milliseconds(reconnect_ms);
  o.policy = *compress::parse_policy("fixed:raw");
  o.timeout = transport::Timeout(5000);
  return o;
}

// The destination process dies while the resumed guest still faults: the
// source reports the VM as lost (it must not thaw its frozen copy: the VM ran
// on at the destination) and nothing hangs. The link runs through a proxy at
// 50 MB/s per connection, so the post-copy cannot end before the kill.
TEST(PostcopyFaults, DestinationKilledAfterResume) {
  const std::string dir = temp_dir();
  auto g = busy_guest(dir);
  ASSERT_TRUE(g.ok()) << g.error().message;

  DestinationProcess destination;
  ASSERT_FALSE(destination.address.empty());
  const pid_t dest = destination.pid;
  TcpProxy proxy(uint16_t(std::strtoul(destination.address.c_str() + destination.address.rfind(':') + 1, nullptr, 10)));
  ASSERT_NE(proxy.port(), 0);
  proxy.throttle(50'000'000);
  const std::string address = "tcp:127.0.0.1:" + std::to_string(proxy.port());

  SourceOptions o = busy_postcopy_source(*g, 1500);  // it dials the dead destination that long
  std::thread killer;
  o.before_freeze = [&] {
    killer = std::thread([dest] {
      usleep(400000);
      kill(dest, SIGKILL);
    });
  };
  MigrationResult result;
  SourceMigration source(o);
  Stopwatch sw;
  auto r = source.run(address, result);
  if (killer.joinable()) killer.join();
  ASSERT_FALSE(r.ok()) << "the destination died during post-copy";
  std::printf("source error after %.0f ms: %s\n", sw.elapsed_ms(), r.error().message.c_str());
  EXPECT_NE(r.error().message.find("VM is lost"), std::string::npos) << r.error().message;
  EXPECT_LT(sw.elapsed_ms(), 20000);
  EXPECT_FALSE(result.completed);
  destination.reap();
  // The frozen source was ended, not thawed (it would roll the VM back).
  Stopwatch gone;
  while (alive(g->pid()) && gone.elapsed_ms() < 5000) usleep(20000);
  EXPECT_FALSE(alive(g->pid())) << "the frozen source must not run on";
  // The dead destination's resumed guest lost its engine before being
  // released: it must end itself rather than run on with zero-filled holes.
  auto orphans = wait_until_gone("handoff-" + std::to_string(dest) + "-", 5000);
  EXPECT_TRUE(orphans.empty()) << "the dead destination's resumed guest still runs";
  for (pid_t stray : orphans) kill(stray, SIGKILL);
}

// The source process (`livemig source` on its own) dies while the resumed
// guest still needs pages: the destination fails cleanly within bounded time,
// says the VM is lost, and kills its resumed guest; nothing hangs.
TEST(PostcopyFaults, SourceKilledAfterResume) {
  const std::string dir = temp_dir();
  auto g = busy_guest(dir);
  ASSERT_TRUE(g.ok()) << g.error().message;

  // Faults wait 1.5 s for the source to come back. The link runs through a
  // proxy at 50 MB/s per connection, so the post-copy cannot end before the kill.
  auto dest = Destination::listen(busy_destination("tcp:127.0.0.1:0", guest_sink(dir), 1500));
  ASSERT_TRUE(dest.ok()) << dest.error().message;
  const std::string real = (*dest)->address();
  TcpProxy proxy(uint16_t(std::strtoul(real.c_str() + real.rfind(':') + 1, nullptr, 10)));
  ASSERT_NE(proxy.port(), 0);
  proxy.throttle(50'000'000);
  const std::string via_proxy = "tcp:127.0.0.1:" + std::to_string(proxy.port());
  std::optional<Result<DestinationOutcome>> outcome;
  std::thread dest_thread([&] { outcome = (*dest)->run(); });

  pid_t source = fork();
  if (source == 0) {
    alarm(60);
    std::string bin = env_or_fail("LM_LIVEMIG_BIN");
    std::string ram = strf("0x%llx:%llu", (unsigned long long)g->ram_addr(), (unsigned long long)g->ram_size());
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    execl(bin.c_str(), bin.c_str(), "source", "--pid", std::to_string(g->pid()).c_str(), "--to",
          via_proxy.c_str(), "--ram", ram.c_str(), "--mode", "postcopy", "--prepaging", "none",
          "--policy", "fixed:raw", nullptr);
    _exit(127);
  }
  // Kill the source once the destination's guest runs, i.e. after the
  // resume: a resumed guest opens its control socket in `dir` (the source
  // guest's is there already). Its process alone is not enough: the
  // destination starts it before any page arrives.
  Stopwatch sw;
  auto guest_sockets = [&] {
    int n = 0;
    if (DIR* d = opendir(dir.c_str())) {
      while (dirent* e = readdir(d)) n += std::string(e->d_name).rfind("guest-", 0) == 0;
      closedir(d);
    }
    return n;
  };
  while (guest_sockets() < 2 && sw.elapsed_ms() < 20000) usleep(10000);
  ASSERT_GE(guest_sockets(), 2) << "the destination's guest never reported running";
  usleep(100000);  // the guest runs and faults
  kill(source, SIGKILL);
  waitpid(source, nullptr, 0);
  dest_thread.join();
  ASSERT_TRUE(outcome.has_value());
  ASSERT_FALSE(outcome->ok()) << "the destination cannot complete without its source";
  std::printf("destination error after %.0f ms: %s\n", sw.elapsed_ms(), outcome->error().message.c_str());
  EXPECT_LT(sw.elapsed_ms(), 30000);
  EXPECT_NE(outcome->error().message.find("VM"), std::string::npos) << outcome->error().message;
  auto left = wait_until_gone(std::string("--handoff ") + dir, 5000);
  EXPECT_TRUE(left.empty()) << "the destination's resumed guest must be killed";
}

// --- recovery: the link breaks during post-copy ----------------------------------------

// A post-copy of busy_guest() whose link runs through a TcpProxy (each
// connection capped at `bytes_per_s`, 0: not); `break_link` runs on its own
// thread from the source's freeze on.
struct ProxiedPostcopy {
  std::shared_ptr<GuestRamSink> sink;  // the destination's
  Result<void> source = ok();
  MigrationResult result;
  std::optional<Result<DestinationOutcome>> outcome;
  pid_t source_pid = 0;
  double elapsed_ms = 0;
};

void postcopy_through_proxy(const std::string& backend, unsigned reconnect_ms,
                            const std::function<void(TcpProxy&)>& break_link, ProxiedPostcopy& run,
                            uint64_t bytes_per_s = 0) {
  const std::string dir = temp_dir();
  auto g = busy_guest(dir);
  ASSERT_TRUE(g.ok()) << g.error().message;
  run.source_pid = g->pid();

  run.sink = guest_sink(dir);
  auto dest = Destination::listen(busy_destination(backend + ":127.0.0.1:0", run.sink, reconnect_ms));
  ASSERT_TRUE(dest.ok()) << dest.error().message;
  const std::string real = (*dest)->address();
  TcpProxy proxy(uint16_t(std::strtoul(real.c_str() + real.rfind(':') + 1, nullptr, 10)));
  ASSERT_NE(proxy.port(), 0);
  proxy.throttle(bytes_per_s);
  std::thread dest_thread([&] { run.outcome = (*dest)->run(); });

  SourceOptions o = busy_postcopy_source(*g, reconnect_ms);
  std::thread breaker;
  o.before_freeze = [&] { breaker = std::thread([&] { break_link(proxy); }); };
  SourceMigration source(o);
  Stopwatch sw;
  run.source = source.run(backend + ":127.0.0.1:" + std::to_string(proxy.port()), run.result);
  run.elapsed_ms = sw.elapsed_ms();
  if (breaker.joinable()) breaker.join();
  dest_thread.join();
}

// Every connection is cut while the resumed guest faults, and stays refused
// for a while: the faults wait, the source dials again, the destination says
// what it still needs, and the migration completes verified.
class PostcopyRecovery : public ::testing::TestWithParam<const char*> {};

TEST_P(PostcopyRecovery, ConnectionCutAndRestored) {
  constexpr unsigned kOutageMs = 600;
  size_t cut = 0;
  ProxiedPostcopy run;
  postcopy_through_proxy(GetParam(), 10000, [&](TcpProxy& proxy) {
    usleep(300000);  // past the resume: the guest faults pages in
    proxy.refuse(true);
    cut = proxy.cut();
    usleep(kOutageMs * 1000);
    proxy.refuse(false);
  }, run);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_GE(cut, 4u) << "control, priority and two bulk connections were live";
  ASSERT_TRUE(run.source.ok()) << run.source.error().message;
  ASSERT_TRUE(run.outcome && run.outcome->ok()) << (run.outcome ? run.outcome->error().message : "no outcome");
  EXPECT_TRUE(run.result.completed);
  EXPECT_TRUE(run.result.verify_ok);
  EXPECT_EQ(run.result.verify_pages, 128ull << 20 >> 12);
  EXPECT_EQ(run.result.postcopy_reconnects, 1u);
  EXPECT_GE(run.result.postcopy_link_down_ms, kOutageMs * 0.8);
  const auto& dest = run.outcome->value();
  ASSERT_TRUE(dest.postcopy.has_value());
  EXPECT_EQ(dest.postcopy->reconnects, 1u);
  // Faults taken during the outage waited through it rather than failing.
  double longest = 0;
  for (double us : dest.postcopy->fault_latency_us) longest = std::max(longest, us);
  EXPECT_GE(longest, kOutageMs * 0.8 * 1000) << "no fault waited through the outage";
  auto resumed = run.sink->take_guest();
  ASSERT_TRUE(resumed);
  auto verified = resumed->control().verify();
  EXPECT_TRUE(verified.ok()) << verified.error().message;
  (void)resumed->stop(5000);
  EXPECT_FALSE(alive(run.source_pid)) << "the frozen source is released after completion";
}

// The link never comes back: both sides give up after the reconnect timeout
// with an error that says so; the resumed guest is killed and the frozen
// source ended (never thawed: the VM ran on at the destination). The link
// is capped at 50 MB/s per connection so that the 128 MiB cannot all arrive
// before the cut, however fast the machine.
TEST_P(PostcopyRecovery, NotRestoredFailsAfterTheTimeout) {
  ProxiedPostcopy run;
  postcopy_through_proxy(GetParam(), 1500, [&](TcpProxy& proxy) {
    usleep(300000);
    proxy.refuse(true);
    proxy.cut();
  }, run, 50'000'000);
  ASSERT_FALSE(HasFatalFailure());
  ASSERT_FALSE(run.source.ok());
  std::printf("source error after %.0f ms: %s\n", run.elapsed_ms, run.source.error().message.c_str());
  EXPECT_NE(run.source.error().message.find("not restored within 1500 ms"), std::string::npos);
  EXPECT_NE(run.source.error().message.find("VM is lost"), std::string::npos);
  EXPECT_LT(run.elapsed_ms, 15000);
  ASSERT_TRUE(run.outcome.has_value());
  ASSERT_FALSE(run.outcome->ok());
  std::printf("destination error: %s\n", run.outcome->error().message.c_str());
  EXPECT_NE(run.outcome->error().message.find("not restored within 1500 ms"), std::string::npos);
  Stopwatch gone;
  while (alive(run.source_pid) && gone.elapsed_ms() < 5000) usleep(20000);
  EXPECT_FALSE(alive(run.source_pid)) << "the frozen source must not run on";
}

INSTANTIATE_TEST_SUITE_P(Transports, PostcopyRecovery, ::testing::Values("tcp", "uring"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
