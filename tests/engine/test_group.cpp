// Groups in one process: the shared link (LinkShare) keeps its rate and its
// weights, and several migrations (engine/group.hpp) of fake processes to
// real destinations over in-process links run by each strategy without
// interfering; a VM that fails ends as the strategy says, and its source runs on.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <thread>

#include "common/clock.hpp"
#include "engine/destination.hpp"
#include "engine/group.hpp"
#include "engine/image_sink.hpp"
#include "harness/scenario.hpp"
#include "tests/engine/fake_process.hpp"
#include "transport/channel.hpp"

using namespace lm;
using namespace lm::engine;
using namespace lm::engine::test;
using transport::Timeout;

namespace {

// --- the shared link alone --------------------------------------------------------------

// `vms` senders, each in one round for `seconds`, asking for 64 KiB at a time.
LinkShare::Figures compete(LinkShareConfig config, std::vector<double> weights, double seconds) {
  LinkShare link(config);
  std::vector<std::shared_ptr<LinkShare::Member>> members;
  for (double w : weights) members.push_back(link.join(w));
  std::vector<std::thread> senders;
  Stopwatch sw;
  for (auto& m : members) m->begin_round();
  for (auto& m : members)
    senders.emplace_back([&, m] {
      while (sw.elapsed_s() < seconds) EXPECT_TRUE(m->acquire(64 << 10, 16, nullptr).ok());
    });
  for (auto& t : senders) t.join();
  auto f = link.figures();
  for (auto& m : members) m->end_round();
  return f;
}

TEST(LinkShare, WeightsOneToThreeAreHonoured) {
  LinkShareConfig c;
  c.rate_bytes_per_s = 40e6;
  auto f = compete(c, {1, 3}, 0.6);
  ASSERT_GT(f.contended_bytes[0], 0u);
  const double ratio = double(f.contended_bytes[1]) / double(f.contended_bytes[0]);
  EXPECT_NEAR(ratio, 3.0, 0.3) << f.contended_bytes[0] << " vs " << f.contended_bytes[1];
}

TEST(LinkShare, EqualWeightsWithoutARateShareEvenly) {
  auto f = compete({}, {1, 1, 1}, 0.3);
  const double total = double(f.contended_bytes[0] + f.contended_bytes[1] + f.contended_bytes[2]);
  ASSERT_GT(total, 0);
  for (uint64_t b : f.contended_bytes) EXPECT_NEAR(double(b) / total, 1.0 / 3, 0.1 / 3);
}

TEST(LinkShare, TheRateIsKept) {
  LinkShareConfig c;
  c.rate_bytes_per_s = 30e6;
  auto f = compete(c, {1, 1}, 0.5);
  const double rate = double(f.bytes[0] + f.bytes[1]) / f.busy_s;
  EXPECT_NEAR(rate, 30e6, 3e6);
  // The series adds up to what was granted, per VM.
  for (size_t v = 0; v < 2; v++) {
    uint64_t sum = 0;
    for (uint64_t b : f.series[v]) sum += b;
    EXPECT_EQ(sum, f.bytes[v]);
  }
}

TEST(LinkShare, AnIdleVmHoldsNobodyBack) {
  LinkShareConfig c;
  c.rate_bytes_per_s = 20e6;
  LinkShare link(c);
  auto busy = link.join(1);
  auto idle = link.join(1);  // never in a round
  busy->begin_round();
  Stopwatch sw;
  uint64_t sent = 0;
  while (sw.elapsed_s() < 0.3) {
    ASSERT_TRUE(busy->acquire(64 << 10, 16, nullptr).ok());
    sent += 64 << 10;
  }
  busy->end_round();
  EXPECT_GT(double(sent) / sw.elapsed_s(), 15e6);
  (void)idle;
}

TEST(LinkShare, ACancelEndsTheWait) {
  LinkShareConfig c;
  c.rate_bytes_per_s = 1000;  // one 64 KiB batch would wait a minute
  LinkShare link(c);
  auto m = link.join(1);
  m->begin_round();
  auto cancel = std::make_shared<Cancel>();
  ASSERT_TRUE(m->acquire(64 << 10, 16, cancel.get()).ok());  // the first fits the burst
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    cancel->request("test: stop");
  });
  Stopwatch sw;
  auto r = m->acquire(64 << 10, 16, cancel.get());
  stopper.join();
  m->end_round();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ECANCELED);
  EXPECT_LT(sw.elapsed_ms(), 2000);
}

// --- groups of fake processes ---------------------------------------------------------

// One VM: a fake process and a real destination keeping an image, over an
// in-process link.
struct FakeVm {
  FakeProcess fake;
  transport::InprocLink link;
  std::shared_ptr<ImageSink> image = std::make_shared<ImageSink>();
  std::shared_ptr<Cancel> dest_cancel = std::make_shared<Cancel>();
  std::unique_ptr<Destination> dest;
  std::optional<Result<DestinationOutcome>> outcome;
  std::thread thread;

  FakeVm(const std::string& name, uint64_t seed)
      : fake(options(seed)), link(transport::make_inproc_link({}, name)) {
    DestinationOptions o;
    o.sink = image;
    o.timeout = Timeout(5000);
    o.cancel = dest_cancel;
    auto made = Destination::over(std::move(link.listener), o);
    EXPECT_TRUE(made.ok()) << made.error().message;
    if (!made) return;
    dest = std::move(*made);
    thread = std::thread([this] { outcome = dest->run(); });
  }
  ~FakeVm() {
    dest_cancel->request("the test is over");
    if (thread.joinable()) thread.join();
  }
  static FakeProcessOptions options(uint64_t seed) {
    FakeProcessOptions f;
    f.seed = seed;
    f.pid = 4'200'000 + int(seed);
    return f;
  }
  GroupVm member(const std::string& name) {
    GroupVm vm;
    SourceOptions& o = vm.source = fake_source_options(fake);
    o.cancel = std::make_shared<Cancel>();
    o.after = AfterMigration::kill;
    vm.dial = link.dial;
    vm.peer = "inproc:" + name;
    return vm;
  }
  void expect_image_is_frozen_memory() const {
    const auto ranges = fake.ranges();
    const auto& img = image->image();
    ASSERT_EQ(img.size(), ranges.size());
    for (size_t i = 0; i < ranges.size(); i++) {
      const auto want = fake.frozen_bytes(ranges[i].start, ranges[i].bytes());
      ASSERT_EQ(img[i].bytes, want.size());
      EXPECT_EQ(std::memcmp(img[i].data, want.data(), want.size()), 0) << "mapping " << i;
    }
  }
};

struct FakeGroup {
  std::vector<std::unique_ptr<FakeVm>> vms;
  std::vector<GroupVm> members;
  explicit FakeGroup(size_t m) {
    for (size_t i = 0; i < m; i++) {
      std::string name = strf("group-%zu", i);
      vms.push_back(std::make_unique<FakeVm>(name, 20 + i));
      members.push_back(vms.back()->member(name));
    }
  }
};

void expect_released(FakeVm& vm, const MigrationResult& r) {
  EXPECT_TRUE(r.completed) << r.error;
  EXPECT_EQ(r.source_phase, "released");
  EXPECT_EQ(vm.fake.state(), FakeState::killed);
  if (vm.thread.joinable()) vm.thread.join();
  ASSERT_TRUE(vm.outcome && vm.outcome->ok()) << (vm.outcome ? vm.outcome->error().message : "no outcome");
  vm.expect_image_is_frozen_memory();
}

class GroupStrategies : public ::testing::TestWithParam<GroupStrategy> {};

// Two and three migrations in one process over in-process channels: each
// destination holds its own source's frozen memory.
TEST_P(GroupStrategies, EveryVmIsReleased) {
  for (size_t m : {2, 3}) {
    if (GetParam() == GroupStrategy::serial_correlated) GTEST_SKIP() << "stops the others by pid: with guests (group/guests)";
    FakeGroup g(m);
    GroupOptions o;
    o.strategy = GetParam();
    auto result = run_group(std::move(g.members), o);
    ASSERT_TRUE(result.completed()) << result.failure;
    ASSERT_EQ(result.vms.size(), m);
    for (size_t i = 0; i < m; i++) {
      expect_released(*g.vms[i], result.vms[i]);
      EXPECT_GT(result.link.bytes[i], 0u);
      EXPECT_GT(result.figures[i].resumed_ms, result.figures[i].start_ms);
    }
    EXPECT_GT(result.total_time_ms, 0);
    EXPECT_GT(result.link_bytes_per_s, 0);
    if (GetParam() == GroupStrategy::serial) {  // one after another: VM 2 starts after VM 1 resumed
      EXPECT_GE(result.figures[1].start_ms, result.figures[0].resumed_ms);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Inproc, GroupStrategies,
                         ::testing::Values(GroupStrategy::serial, GroupStrategy::parallel),
                         [](const auto& i) {
                           std::string s(strategy_name(i.param));
                           for (char& c : s) c = c == '-' ? '_' : c;
                           return s;
                         });

// Runs the group; VM 2's destination goes away as its first round starts.
GroupResult run_with_vm2_destination_dying(FakeGroup& g, GroupStrategy strategy) {
  FakeVm& victim = *g.vms[1];
  g.members[1].source.on_phase = [&victim](SourcePhase p) {
    if (p == SourcePhase::precopy) victim.dest_cancel->request("test: the destination dies mid-round");
  };
  GroupOptions o;
  o.strategy = strategy;
  return run_group(std::move(g.members), o);
}

// Parallel: VM 2's destination goes away in its first round; the others
// complete, VM 2's source rolls back and runs on.
TEST(GroupFailure, ParallelOthersCompleteWhenOneDestinationDies) {
  FakeGroup g(3);
  FakeVm& victim = *g.vms[1];
  auto result = run_with_vm2_destination_dying(g, GroupStrategy::parallel);
  ASSERT_FALSE(result.completed());
  ASSERT_TRUE(result.failed_vm.has_value());
  EXPECT_EQ(*result.failed_vm, 1u);
  EXPECT_NE(result.failure.find("VM 2"), std::string::npos) << result.failure;
  expect_released(*g.vms[0], result.vms[0]);
  expect_released(*g.vms[2], result.vms[2]);
  EXPECT_FALSE(result.vms[1].completed);
  EXPECT_EQ(result.vms[1].source_phase, "rolled-back");
  EXPECT_EQ(victim.fake.state(), FakeState::running);
  EXPECT_TRUE(victim.fake.runs_past(victim.fake.steps())) << "the failed VM's source must run on";
}

// Serial: the group stops before the VM after the failed one, which was
// never touched and runs on.
TEST(GroupFailure, SerialStopsBeforeTheNextVm) {
  FakeGroup g(3);
  auto result = run_with_vm2_destination_dying(g, GroupStrategy::serial);
  ASSERT_TRUE(result.failed_vm.has_value());
  EXPECT_EQ(*result.failed_vm, 1u);
  expect_released(*g.vms[0], result.vms[0]);
  EXPECT_EQ(result.vms[1].source_phase, "rolled-back");
  EXPECT_FALSE(result.figures[2].started);
  EXPECT_NE(result.vms[2].error.find("not migrated"), std::string::npos) << result.vms[2].error;
  for (size_t i : {1, 2}) {
    EXPECT_EQ(g.vms[i]->fake.state(), FakeState::running);
    EXPECT_TRUE(g.vms[i]->fake.runs_past(g.vms[i]->fake.steps()));
  }
  EXPECT_EQ(g.vms[2]->fake.calls(FakeOp::freeze), 0u);
}

// Serial-correlated: only VM 1 pre-copies while running, so D, the threshold
// and n_max are its own; the others (stopped, max-rounds 1) give Vm and T_res.
TEST(GroupModel, SerialCorrelatedTakesDAndRoundsFromVm1) {
  GroupResult g;
  g.strategy = GroupStrategy::serial_correlated;
  g.link_bytes_per_s = 50e6;
  g.vms.resize(3);
  for (size_t i = 0; i < 3; i++) {
    g.vms[i].model_input.vm_bytes = 64 << 20;
    g.vms[i].model_input.max_rounds = i == 0 ? 30 : 1;
    g.vms[i].model_input.dirty_pages_per_s = i == 0 ? 1200 : 0;
    g.vms[i].model_input.threshold_bytes = i == 0 ? 5e6 : 0;
    g.vms[i].downtime_breakdown.resume = 10;
  }
  predict_group(g);
  ASSERT_TRUE(g.model.has_value());
  EXPECT_DOUBLE_EQ(g.model_input.dirty_pages_per_s, 1200);
  EXPECT_EQ(g.model_input.max_rounds, 30u);
  EXPECT_DOUBLE_EQ(g.model_input.threshold_bytes, 5e6);
  EXPECT_DOUBLE_EQ(g.model_input.vm_bytes, 64 << 20);
  EXPECT_DOUBLE_EQ(g.model_input.resume_s, 0.01);
  EXPECT_GT(g.model->rounds, 1u);
  g.strategy = GroupStrategy::parallel;  // every VM pre-copies: the mean
  predict_group(g);
  EXPECT_DOUBLE_EQ(g.model_input.dirty_pages_per_s, 400);
}

TEST(GroupInput, NoVmsIsRefused) {
  auto result = run_group({}, {});
  EXPECT_FALSE(result.completed());
  auto c = parse_scenario("[group]\nvms = 0\n", "test", {});
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("at least one VM"), std::string::npos) << c.error().message;
}

// Combinations that cannot work are refused before any VM starts, naming
// the VM and why: a post-copy or hybrid VM migrated as an image (nothing
// resumes it), and a serial-correlated VM 2..m without a pid to stop.
TEST(GroupInput, ImpossibleCombinationsAreRefusedUpFront) {
  for (auto [strategy, mode] : {std::pair{GroupStrategy::parallel, MigrationMode::postcopy},
                                std::pair{GroupStrategy::serial, MigrationMode::hybrid},
                                std::pair{GroupStrategy::serial_correlated, MigrationMode::precopy}}) {
    FakeGroup g(2);
    g.members[1].source.mode = mode;
    if (mode != MigrationMode::precopy) g.members[1].source.exec_state = ExecStateKind::image;
    GroupOptions o;
    o.strategy = strategy;
    auto result = run_group(std::move(g.members), o);
    const std::string name(strategy_name(strategy));
    ASSERT_TRUE(result.failed_vm.has_value()) << name;
    EXPECT_EQ(*result.failed_vm, 1u) << name;
    EXPECT_NE(result.failure.find("VM 2: refused: "), std::string::npos) << result.failure;
    EXPECT_NE(result.failure.find(mode == MigrationMode::precopy ? "pid" : "image"), std::string::npos)
        << result.failure;
    for (size_t i = 0; i < 2; i++) {
      EXPECT_FALSE(result.figures[i].started) << name << " VM " << i + 1;
      EXPECT_NE(result.vms[i].error.find("not migrated"), std::string::npos) << result.vms[i].error;
      EXPECT_EQ(g.vms[i]->fake.calls(FakeOp::freeze), 0u) << name << " VM " << i + 1;
      EXPECT_EQ(g.vms[i]->fake.state(), FakeState::running) << name << " VM " << i + 1;
    }
  }
}

TEST(GroupInput, VmTablesAndWeights) {
  auto c = parse_scenario("[group]\nstrategy = \"serial-correlated\"\n[[vm]]\nweight = 3\n"
                          "[[vm]]\nworkload.ram = \"96M\"\n",
                          "test", {"group.weights=[5, 7]"});
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE(c->group.enabled);
  EXPECT_EQ(c->group.vms, 2u);
  EXPECT_EQ(c->group.strategy, GroupStrategy::serial_correlated);
  EXPECT_EQ(vm_weight(c->group, 0), 3.0);  // its own
  EXPECT_EQ(vm_weight(c->group, 1), 7.0);  // the group's list
  auto vm2 = vm_scenario(*c, 1);
  ASSERT_TRUE(vm2.ok()) << vm2.error().message;
  EXPECT_EQ(vm2->workload.ram_bytes, 96ull << 20);
  EXPECT_NE(vm2->workload.seed, vm_scenario(*c, 0)->workload.seed);
  EXPECT_FALSE(parse_scenario("[[vm]]\nworkload.nope = 1\n", "test", {}).ok());
  EXPECT_FALSE(parse_scenario("[group]\nvms = 3\n[[vm]]\n[[vm]]\n", "test", {}).ok());
  EXPECT_FALSE(parse_scenario("[group]\nstrategy = \"sideways\"\n", "test", {}).ok());
}

}  // namespace
