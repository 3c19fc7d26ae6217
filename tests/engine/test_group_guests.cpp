// Groups of live livemig-guests on this host (harness run_group_scenario):
// m = 2 and 3 guests by each strategy on tcp and uring, every guest's own
// verify passing after its resume; a parallel group in which one VM's
// destination dies mid-round; weights 1:3 honoured over pre-copy. Then
// m = 2 by each strategy with post-copy and hybrid (tcp, uring, dpdk), with
// mixed modes and with each VM's own policy and tracker, and failures of a
// post-copy VM before and after its resume.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <utility>

#include "harness/runner.hpp"
#include "livemig_config.h"
#include "harness/scenario.hpp"
#include "harness/sweep.hpp"
#include "tests/engine/engine_test_util.hpp"
#include "tests/engine/tcp_proxy.hpp"

using namespace lm;
using namespace lm::engine;
using namespace lm::engine::test;

namespace {

ScenarioConfig small_group(std::vector<std::string> overrides) {
  overrides.insert(overrides.begin(), {"workload.ram=\"64M\"", "workload.rate=2000", "workload.warmup-ms=100",
                                       "workload.content=\"mixed\"", "migration.address=\"127.0.0.1:0\"",
                                       "convergence.downtime-target-ms=50"});
  auto c = parse_scenario("name = \"group-test\"\n[group]\n", "test", overrides);
  EXPECT_TRUE(c.ok()) << c.error().message;
  return *c;
}

GroupRunResult run(const ScenarioConfig& c, RunOptions o = {}) {
  o.guest_binary = guest_binary();
  auto r = run_group_scenario(c, o);
  EXPECT_TRUE(r.ok()) << r.error().message;
  if (!r) return {};
  std::printf("%s", summarize_group(*r).c_str());
  return std::move(*r);
}

struct Case {
  const char* strategy;
  const char* transport;
  unsigned vms;
};

class GroupGuests : public ::testing::TestWithParam<Case> {};

TEST_P(GroupGuests, EveryGuestVerifiesAfterResume) {
  const Case& c = GetParam();
  auto r = run(small_group({strf("group.vms=%u", c.vms), strf("group.strategy=\"%s\"", c.strategy),
                            strf("migration.transport=\"%s\"", c.transport)}));
  const GroupResult& g = r.group;
  ASSERT_TRUE(g.completed()) << g.failure;
  ASSERT_EQ(g.vms.size(), c.vms);
  for (size_t i = 0; i < c.vms; i++) {
    expect_migrated_and_verified(g.vms[i]);
    EXPECT_EQ(g.vms[i].transport, c.transport);
    EXPECT_GT(g.link.bytes[i], 0u);
    EXPECT_GT(g.figures[i].downtime_ms, 0);
  }
  EXPECT_GT(g.total_time_ms, 0);
  ASSERT_TRUE(g.model.has_value()) << "the model's prediction beside the run";
  EXPECT_GT(g.model->total_s, 0);
  if (std::string(c.strategy) == "serial-correlated") {
    // The others were stopped at VM 1's freeze: their downtime holds VM 1's
    // resume. Their destinations were ready before it and they waited, so
    // the downtime is their copies, not their setups; each copy starts once
    // the VM before it resumed.
    for (size_t i = 1; i < c.vms; i++) {
      EXPECT_GT(g.figures[i].downtime_ms, g.figures[0].downtime_ms);
      EXPECT_GT(g.figures[i].ready_ms, 0) << "VM " << i + 1;
      EXPECT_LT(g.figures[i].ready_ms, g.freeze_ms) << "VM " << i + 1;
      EXPECT_GT(g.vms[i].group_wait_ms, 0) << "VM " << i + 1;
      EXPECT_GE(g.figures[i].sending_ms, g.figures[i - 1].resumed_ms) << "VM " << i + 1;
    }
    EXPECT_LT(g.figures[0].ready_ms, g.figures[0].sending_ms);
    EXPECT_GE(g.downtime_ms, g.figures[c.vms - 1].downtime_ms);
  }
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (const char* s : {"serial", "serial-correlated", "parallel"})
    for (const char* t : {"tcp", "uring"})
      for (unsigned m : {2u, 3u}) out.push_back({s, t, m});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Strategies, GroupGuests, ::testing::ValuesIn(cases()), [](const auto& i) {
  std::string s = strf("%s_%s_%u", i.param.strategy, i.param.transport, i.param.vms);
  for (char& ch : s) ch = ch == '-' ? '_' : ch;
  return s;
});

// Three guests by `strategy`; VM 2's destination dies as its first round starts.
GroupRunResult run_with_vm2_destination_dying(const char* strategy) {
  RunOptions o;
  o.on_vm_phase = [](size_t vm, SourcePhase p, Cancel& destination) {
    if (vm == 1 && p == SourcePhase::precopy) destination.request("test: VM 2's destination dies as its first round starts");
  };
  return run(small_group({"group.vms=3", strf("group.strategy=\"%s\"", strategy)}), o);
}

void expect_vm2_named(const GroupResult& g) {
  ASSERT_TRUE(g.failed_vm.has_value());
  EXPECT_EQ(*g.failed_vm, 1u);
  EXPECT_NE(g.failure.find("VM 2"), std::string::npos) << g.failure;
}

// VM 2's destination dies as its first round starts: VMs 1 and 3 complete and
// verify, VM 2's source rolls back and runs on; the result names VM 2.
TEST(GroupGuestFailure, ParallelDestinationKilledMidRound) {
  auto r = run_with_vm2_destination_dying("parallel");
  const GroupResult& g = r.group;
  expect_vm2_named(g);
  expect_migrated_and_verified(g.vms[0]);
  expect_migrated_and_verified(g.vms[2]);
  EXPECT_FALSE(g.vms[1].completed);
  EXPECT_EQ(g.vms[1].source_state, "running");
  EXPECT_GT(r.source_rate_after[1], 0) << "the failed VM's source must run on";
}

// Serial-correlated: VM 2's destination dies as its copy starts (VM 1
// resumed, VMs 2 and 3 stopped): VM 1 completes, VM 2 rolls back and VM 3,
// stopped and never copied, is continued; both run on and VM 2 is named.
TEST(GroupGuestFailure, SerialCorrelatedDestinationKilledAfterTheFreeze) {
  auto r = run_with_vm2_destination_dying("serial-correlated");
  const GroupResult& g = r.group;
  expect_vm2_named(g);
  expect_migrated_and_verified(g.vms[0]);
  for (size_t i : {1, 2}) {
    EXPECT_FALSE(g.vms[i].completed) << "VM " << i + 1;
    EXPECT_EQ(g.vms[i].source_state, "running") << "VM " << i + 1;
    EXPECT_GT(r.source_rate_after[i], 0) << "VM " << i + 1 << " must run on";
  }
  EXPECT_NE(g.vms[2].error.find("not migrated"), std::string::npos) << g.vms[2].error;
}

// A guest that cannot start: parallel migrates the others, serial none after it.
TEST(GroupGuestFailure, AGuestThatDoesNotStart) {
  for (const char* strategy : {"parallel", "serial"}) {
    auto c = small_group({"group.vms=2", strf("group.strategy=\"%s\"", strategy)});
    c.group.vm.resize(2);
    c.group.vm[0].settings = {{"workload.cpus", "\"1000\""}};  // no such CPU: the guest cannot start
    auto r = run(c);
    const GroupResult& g = r.group;
    ASSERT_TRUE(g.failed_vm.has_value()) << strategy;
    EXPECT_EQ(*g.failed_vm, 0u);
    EXPECT_NE(g.vms[0].error.find("did not start"), std::string::npos) << g.vms[0].error;
    if (std::string(strategy) == "parallel")
      expect_migrated_and_verified(g.vms[1]);
    else
      EXPECT_FALSE(g.figures[1].started);
  }
}

// Weights 1:3 over one 50 MB/s link: while both VMs send, VM 2 gets three
// times VM 1's bytes, within 10%.
TEST(GroupGuestShare, WeightsOneToThree) {
  auto r = run(small_group({"group.vms=2", "group.strategy=\"parallel\"", "group.weights=[1, 3]",
                            "group.link-rate=\"50M\"", "workload.prefill=true", "migration.policy=\"fixed:raw\""}));
  const GroupResult& g = r.group;
  ASSERT_TRUE(g.completed()) << g.failure;
  ASSERT_GT(g.link.contended_bytes[0], 0u);
  const double ratio = double(g.link.contended_bytes[1]) / double(g.link.contended_bytes[0]);
  std::printf("contended bytes %llu : %llu = 1 : %.3f\n", (unsigned long long)g.link.contended_bytes[0],
              (unsigned long long)g.link.contended_bytes[1], ratio);
  EXPECT_NEAR(ratio, 3.0, 0.3);
  EXPECT_LT(std::fabs(g.link_bytes_per_s - 50e6) / 50e6, 0.15) << g.link_bytes_per_s;
}

// Post-copy pushes ask the shared link too: each VM's pushed pages are in its
// link bytes, and the group keeps to its rate while they stream.
TEST(GroupGuestShare, PostcopyPushesAskTheLink) {
  auto r = run(small_group({"group.vms=2", "group.strategy=\"parallel\"", "group.link-rate=\"50M\"",
                            "migration.mode=\"postcopy\"", "postcopy.prepaging=\"sequential\"",
                            "workload.ram=\"32M\"", "workload.prefill=true", "workload.content=\"random\"",
                            "migration.policy=\"fixed:raw\""}));
  const GroupResult& g = r.group;
  ASSERT_TRUE(g.completed()) << g.failure;
  for (size_t i = 0; i < 2; i++) {
    expect_migrated_and_verified(g.vms[i]);
    ASSERT_GT(g.vms[i].pages_pushed, 1000u) << "VM " << i + 1 << ": sequential pre-paging pushes most pages";
    EXPECT_GE(g.link.bytes[i], g.vms[i].pages_pushed * 4096) << "VM " << i + 1 << ": its pushes passed the share";
  }
  std::printf("R %.1f MB/s over %.2f s busy\n", g.link_bytes_per_s / 1e6, g.link.busy_s);
  EXPECT_LT(g.link_bytes_per_s, 50e6 * 1.15) << "the pushes kept to the group's rate";
}

// --- every strategy with post-copy and hybrid, over dpdk, mixed modes, own settings ---------

struct ModeCase {
  const char* strategy;
  const char* modes[2];  // VM 1's and VM 2's
  const char* transport;
};

class GroupModes : public ::testing::TestWithParam<ModeCase> {};

// Two guests by each strategy, post-copy or hybrid (each VM its own mode) or
// pre-copy, over tcp, uring or dpdk (memif, each VM its own link, one EAL in
// this process). Serial: VM 2 starts once VM 1 completed, every page at its
// destination. Serial-correlated: VM 1's freeze (its stop-and-copy or
// switchover) stops VM 2, whose copy starts once VM 1 runs at its
// destination (a stopped hybrid VM 2 switches over at once, as post-copy).
TEST_P(GroupModes, EveryGuestVerifiesAfterResume) {
  const ModeCase& c = GetParam();
  const std::string strategy = c.strategy;
#if !LM_HAVE_DPDK
  if (std::string(c.transport) == "dpdk") GTEST_SKIP() << "DPDK was not built (meson -Ddpdk)";
#endif
  auto config = small_group({"group.vms=2", strf("group.strategy=\"%s\"", c.strategy),
                             strf("migration.transport=\"%s\"", c.transport)});
  config.group.vm.resize(2);
  for (size_t i = 0; i < 2; i++) config.group.vm[i].settings = {{"migration.mode", strf("\"%s\"", c.modes[i])}};
  auto r = run(config);
  const GroupResult& g = r.group;
  ASSERT_TRUE(g.completed()) << g.failure;
  ASSERT_EQ(g.vms.size(), 2u);
  bool all_precopy = true;
  for (size_t i = 0; i < 2; i++) {
    const std::string mode = c.modes[i];
    all_precopy = all_precopy && mode == "precopy";
    expect_migrated_and_verified(g.vms[i]);
    EXPECT_EQ(g.vms[i].transport, c.transport);
    EXPECT_EQ(mode_name(g.figures[i].mode), mode);
    EXPECT_GT(g.link.bytes[i], 0u) << "VM " << i + 1;
    EXPECT_GT(g.figures[i].downtime_ms, 0) << "VM " << i + 1;
    EXPECT_GT(g.figures[i].resumed_ms, 0) << "VM " << i + 1;
    EXPECT_GE(g.figures[i].completed_ms, g.figures[i].resumed_ms) << "VM " << i + 1;
    // A post-copy VM's pages all come after its resume. A hybrid VM's are
    // those dirtied after its last pre-copy round, which may be none: a
    // guest starved of CPU on a busy 2-core host writes nothing meanwhile
    // (seen in 1 run of 5 in the default suite, downtime 200 ms).
    if (mode == "postcopy") {
      EXPECT_GT(g.vms[i].pages_pushed + g.vms[i].postcopy_pages_requested, 0u)
          << "VM " << i + 1 << ": pages came after its resume";
    }
    if (mode == "hybrid" && !(strategy == "serial-correlated" && i > 0)) {
      EXPECT_GT(g.vms[i].dirty_sync_count, 1u) << "VM " << i + 1 << ": pre-copy rounds before the switchover";
    }
  }
  EXPECT_GE(g.total_time_ms, g.figures[1].completed_ms - g.figures[0].start_ms);
  if (all_precopy) {
    EXPECT_TRUE(g.model.has_value()) << g.no_model;
  } else {
    EXPECT_FALSE(g.model.has_value());
    EXPECT_NE(g.no_model.find("pre-copy's"), std::string::npos) << g.no_model;
  }
  if (strategy == "serial") {
    EXPECT_GE(g.figures[1].start_ms, g.figures[0].completed_ms);
  }
  if (strategy == "serial-correlated") {
    EXPECT_GT(g.freeze_ms, 0);
    EXPECT_LT(g.figures[1].ready_ms, g.freeze_ms);
    EXPECT_GE(g.figures[1].sending_ms, g.figures[0].resumed_ms);
    EXPECT_GT(g.figures[1].downtime_ms, g.figures[0].downtime_ms) << "VM 2 was stopped at VM 1's freeze";
    EXPECT_GE(g.downtime_ms, g.figures[1].downtime_ms);
  }
}

std::vector<ModeCase> mode_cases() {
  std::vector<ModeCase> out;
  for (const char* s : {"serial", "serial-correlated", "parallel"}) {
    for (const char* m : {"postcopy", "hybrid"}) out.push_back({s, {m, m}, "tcp"});
    out.push_back({s, {"precopy", "precopy"}, "dpdk"});
  }
  // Post-copy over uring by each strategy (serial-correlated: VM 1 hybrid,
  // VM 2 post-copy), post-copy beside hybrid over dpdk.
  out.push_back({"serial", {"postcopy", "postcopy"}, "uring"});
  out.push_back({"serial-correlated", {"hybrid", "postcopy"}, "uring"});
  out.push_back({"parallel", {"postcopy", "postcopy"}, "uring"});
  out.push_back({"parallel", {"postcopy", "hybrid"}, "dpdk"});
  return out;
}

INSTANTIATE_TEST_SUITE_P(Modes, GroupModes, ::testing::ValuesIn(mode_cases()), [](const auto& i) {
  const auto& p = i.param;
  std::string s = std::string(p.modes[0]) == p.modes[1]
                      ? strf("%s_%s_%s", p.strategy, p.modes[0], p.transport)
                      : strf("%s_%s_%s_%s", p.strategy, p.modes[0], p.modes[1], p.transport);
  for (char& ch : s) ch = ch == '-' ? '_' : ch;
  return s;
});

// Two guests, each with settings of its own ([[vm]] tables).
ScenarioConfig own_settings(const char* strategy, std::vector<std::vector<std::pair<std::string, std::string>>> vms) {
  auto c = small_group({"group.vms=2", strf("group.strategy=\"%s\"", strategy)});
  c.group.vm.resize(vms.size());
  for (size_t i = 0; i < vms.size(); i++) c.group.vm[i].settings = vms[i];
  return c;
}

// VM 1 pre-copy, VM 2 post-copy, by each strategy (serial-correlated: the
// post-copy VM 2, stopped at VM 1's freeze, switches over in its turn).
class GroupMixedModes : public ::testing::TestWithParam<const char*> {};

TEST_P(GroupMixedModes, PrecopyAndPostcopyVerify) {
  auto r = run(own_settings(GetParam(), {{}, {{"migration.mode", "\"postcopy\""}}}));
  const GroupResult& g = r.group;
  ASSERT_TRUE(g.completed()) << g.failure;
  EXPECT_EQ(g.figures[0].mode, MigrationMode::precopy);
  EXPECT_EQ(g.figures[1].mode, MigrationMode::postcopy);
  for (size_t i = 0; i < 2; i++) expect_migrated_and_verified(g.vms[i]);
  EXPECT_GT(g.vms[0].dirty_sync_count, 1u) << "VM 1 pre-copied";
  EXPECT_GT(g.vms[1].pages_pushed + g.vms[1].postcopy_pages_requested, 0u) << "VM 2's pages came after its resume";
  EXPECT_FALSE(g.model.has_value());
}

INSTANTIATE_TEST_SUITE_P(Strategies, GroupMixedModes, ::testing::Values("serial", "serial-correlated", "parallel"),
                         [](const auto& i) {
                           std::string s = i.param;
                           for (char& ch : s) ch = ch == '-' ? '_' : ch;
                           return s;
                         });

// Each VM its own compression policy and dirty tracker.
TEST(GroupOwnSettings, PolicyAndTrackerPerVm) {
  auto r = run(own_settings("parallel", {{{"migration.policy", "\"fixed:lz4\""}, {"migration.tracker", "\"uffd-wp\""}},
                                         {{"migration.policy", "\"adaptive\""}, {"migration.tracker", "\"hash\""}}}));
  const GroupResult& g = r.group;
  ASSERT_TRUE(g.completed()) << g.failure;
  for (size_t i = 0; i < 2; i++) expect_migrated_and_verified(g.vms[i]);
  EXPECT_EQ(g.vms[0].policy, "fixed:lz4");
  EXPECT_EQ(g.vms[0].tracker, "uffd-wp");
  EXPECT_EQ(g.vms[1].policy, "adaptive");
  EXPECT_EQ(g.vms[1].tracker, "hash");
}

// A post-copy VM whose destination dies as its switchover begins (before
// its resume: it rolls back and runs on). Parallel: the other completes.
// Serial: VM 1 fails and the group stops before VM 2, which runs on
// untouched. Serial-correlated: VM 1 completes; VM 2, stopped at VM 1's
// freeze, fails in its turn, and is continued.
GroupRunResult run_postcopy_with_destination_dying(const char* strategy, size_t victim) {
  RunOptions o;
  o.on_vm_phase = [victim](size_t vm, SourcePhase p, Cancel& destination) {
    if (vm == victim && p == SourcePhase::stop_and_copy) destination.request("test: the destination dies at the switchover");
  };
  return run(small_group({"group.vms=2", strf("group.strategy=\"%s\"", strategy), "migration.mode=\"postcopy\""}), o);
}

void expect_runs_on(const GroupRunResult& r, size_t i) {
  EXPECT_FALSE(r.group.vms[i].completed) << "VM " << i + 1;
  EXPECT_GT(r.source_rate_after[i], 0) << "VM " << i + 1 << " must run on";
}

// VM 2 failed alone: VM 1 completed and verified, VM 2's source runs on.
void expect_only_vm2_failed(const GroupRunResult& r) {
  const GroupResult& g = r.group;
  expect_vm2_named(g);
  expect_migrated_and_verified(g.vms[0]);
  EXPECT_EQ(g.vms[1].source_state, "running");
  expect_runs_on(r, 1);
}

TEST(GroupGuestFailure, PostcopyParallelOtherCompletes) {
  expect_only_vm2_failed(run_postcopy_with_destination_dying("parallel", 1));
}

TEST(GroupGuestFailure, PostcopySerialStopsBeforeTheNextVm) {
  auto r = run_postcopy_with_destination_dying("serial", 0);
  const GroupResult& g = r.group;
  ASSERT_TRUE(g.failed_vm.has_value());
  EXPECT_EQ(*g.failed_vm, 0u);
  EXPECT_EQ(g.vms[0].source_state, "running");
  EXPECT_FALSE(g.figures[1].started);
  EXPECT_NE(g.vms[1].error.find("not migrated"), std::string::npos) << g.vms[1].error;
  expect_runs_on(r, 0);
  expect_runs_on(r, 1);
}

TEST(GroupGuestFailure, PostcopySerialCorrelatedSecondFailsInItsTurn) {
  expect_only_vm2_failed(run_postcopy_with_destination_dying("serial-correlated", 1));
}

// A post-copy VM whose link is cut for good just after its resume: its
// source dials through a proxy (slowed, so that the push outlasts the resume
// by far) that then drops every connection and refuses new ones. Both sides
// wait out the 1 s reconnect timeout: the VM is lost, its frozen source
// ended (not run on: the destination ran it) and its destination's copy too.
GroupRunResult run_postcopy_with_link_cut_after_resume(const char* strategy, size_t victim) {
  std::unique_ptr<TcpProxy> proxy;
  bool cut = false;
  RunOptions o;
  o.vm_route = [&](size_t vm, const std::string& address) {
    if (vm != victim) return address;
    const size_t colon = address.rfind(':');
    proxy = std::make_unique<TcpProxy>(uint16_t(std::stoul(address.substr(colon + 1))));
    proxy->throttle(10 << 20);
    return address.substr(0, colon + 1) + std::to_string(proxy->port());
  };
  o.on_vm_resumed = [&](size_t vm) {
    if (vm != victim || std::exchange(cut, true)) return;
    proxy->refuse(true);
    EXPECT_GT(proxy->cut(), 0u);
  };
  auto r = run(small_group({"group.vms=2", strf("group.strategy=\"%s\"", strategy), "migration.mode=\"postcopy\"",
                            "migration.transport=\"tcp\"", "postcopy.reconnect-timeout-ms=1000"}),
               o);
  EXPECT_TRUE(cut) << "VM " << victim + 1 << " never resumed";
  return r;
}

// VM i was lost after its resume, and the group's result and its error say so.
void expect_lost_after_resume(const GroupRunResult& r, size_t i) {
  const GroupResult& g = r.group;
  ASSERT_TRUE(g.failed_vm.has_value());
  EXPECT_EQ(*g.failed_vm, i);
  EXPECT_NE(g.failure.find(strf("VM %zu lost after its resume (failed in postcopy)", i + 1)), std::string::npos)
      << g.failure;
  const MigrationResult& v = g.vms[i];
  EXPECT_FALSE(v.completed);
  EXPECT_TRUE(g.figures[i].lost);
  ASSERT_TRUE(g.figures[i].failed_in.has_value());
  EXPECT_EQ(*g.figures[i].failed_in, SourcePhase::postcopy);
  EXPECT_GT(g.figures[i].resumed_ms, 0);
  EXPECT_EQ(v.source_state, "killed") << "the frozen source must not run on beside what ran at the destination";
  EXPECT_EQ(v.source_phase, "lost");
  EXPECT_EQ(r.source_rate_after[i], 0);
  EXPECT_NE(v.error.find("split between the hosts"), std::string::npos) << v.error;
  EXPECT_NE(v.error.find("not restored within 1000 ms"), std::string::npos) << v.error;
  EXPECT_NE(v.error.find("(destination: "), std::string::npos) << "its destination ended its copy too: " << v.error;
}

// Parallel: VM 2 is lost, VM 1 completes and verifies.
TEST(GroupGuestFailure, PostcopyLostAfterResumeParallelOtherCompletes) {
  auto r = run_postcopy_with_link_cut_after_resume("parallel", 1);
  expect_lost_after_resume(r, 1);
  expect_migrated_and_verified(r.group.vms[0]);
}

// Serial: VM 1 is lost and the group stops before VM 2, which was never
// attached and runs on at its source.
TEST(GroupGuestFailure, PostcopyLostAfterResumeSerialStopsBeforeTheNextVm) {
  auto r = run_postcopy_with_link_cut_after_resume("serial", 0);
  expect_lost_after_resume(r, 0);
  const GroupResult& g = r.group;
  EXPECT_FALSE(g.figures[1].started);
  EXPECT_TRUE(g.vms[1].source_state.empty()) << "never attached";
  EXPECT_NE(g.vms[1].error.find("not migrated"), std::string::npos) << g.vms[1].error;
  EXPECT_NE(g.vms[1].error.find("runs on at its source"), std::string::npos) << g.vms[1].error;
  expect_runs_on(r, 1);
}

// Serial-correlated: VM 2, stopped at VM 1's freeze, got its turn at VM 1's
// resume; VM 1 lost after it, VM 2's copy goes on and completes.
TEST(GroupGuestFailure, PostcopyLostAfterResumeSerialCorrelatedTurnGivenGoesOn) {
  auto r = run_postcopy_with_link_cut_after_resume("serial-correlated", 0);
  expect_lost_after_resume(r, 0);
  expect_migrated_and_verified(r.group.vms[1]);
  EXPECT_GE(r.group.figures[1].sending_ms, r.group.figures[0].resumed_ms);
}

// Post-copy and hybrid VMs, each with its own policy and tracker, over uring.
// Pure post-copy tracks nothing (it freezes at once): its tracker setting
// is unused and the VM reports none.
TEST(GroupOwnSettings, PolicyAndTrackerPerPostcopyAndHybridVm) {
  auto r = run(own_settings("parallel", {{{"migration.mode", "\"postcopy\""},
                                          {"migration.policy", "\"fixed:lz4\""},
                                          {"migration.tracker", "\"uffd-wp\""}},
                                         {{"migration.mode", "\"hybrid\""},
                                          {"migration.policy", "\"adaptive\""},
                                          {"migration.tracker", "\"hash\""}}}));
  const GroupResult& g = r.group;
  ASSERT_TRUE(g.completed()) << g.failure;
  for (size_t i = 0; i < 2; i++) {
    expect_migrated_and_verified(g.vms[i]);
    EXPECT_EQ(g.vms[i].transport, "uring");
  }
  EXPECT_EQ(g.figures[0].mode, MigrationMode::postcopy);
  EXPECT_EQ(g.figures[1].mode, MigrationMode::hybrid);
  EXPECT_EQ(g.vms[0].policy, "fixed:lz4");
  EXPECT_EQ(g.vms[0].tracker, "none");
  EXPECT_EQ(g.vms[1].policy, "adaptive");
  EXPECT_EQ(g.vms[1].tracker, "hash");
  EXPECT_GT(g.vms[1].dirty_sync_count, 1u) << "VM 2 pre-copied with its own tracker before its switchover";
}

}  // namespace

// The sweep (suite slow): m = 1, 2, 4, 8 by each strategy; every point completes,
// and carries the model's prediction beside its measurement.
namespace {

TEST(GroupSweep, MultiVm) {
  auto sweep = load_sweep(std::string(LM_SOURCE_ROOT) + "/configs/sweeps/multi-vm.toml");
  ASSERT_TRUE(sweep.ok()) << sweep.error().message;
  ASSERT_EQ(sweep->points.size(), 12u);
  for (const auto& point : sweep->points) {
    auto config = load_scenario(sweep->base_path, point.overrides);
    ASSERT_TRUE(config.ok()) << config.error().message;
    auto r = run(*config);
    const GroupResult& g = r.group;
    EXPECT_TRUE(g.completed()) << point.label << ": " << g.failure;
    EXPECT_EQ(g.vms.size(), config->group.vms);
    ASSERT_TRUE(g.model.has_value()) << point.label;
    std::printf("%s: total %.1f ms (model %.1f), downtime %.1f ms (model %.1f), R %.0f MB/s\n", point.label.c_str(),
                g.total_time_ms, g.model->total_s * 1e3, g.downtime_ms, g.model->downtime_s * 1e3,
                g.link_bytes_per_s / 1e6);
  }
}

}  // namespace
