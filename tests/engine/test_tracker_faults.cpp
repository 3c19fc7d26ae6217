// A tracker failing in each phase (injected through SourceOptions::make_tracker
// around the real uffd-wp tracker): the phase decides the outcome. Before the
// commit every failure rolls back: the migration fails naming the cause, the
// source runs on unharmed, the destination discards its copy and its guest.
#include <gtest/gtest.h>
#include <unistd.h>

#include <optional>
#include <thread>

#include "dirtytrack/pagemap_scan.hpp"
#include "dirtytrack/probe.hpp"
#include "engine/destination.hpp"
#include "engine/source.hpp"
#include "tests/engine/engine_test_util.hpp"

using namespace lm;
using namespace lm::engine;
using namespace lm::engine::test;

namespace {

// The real tracker, except that the N-th chunk of its protection, the N-th
// collect (1-based) or stop fails.
class FailingTracker : public dt::Tracker {
 public:
  FailingTracker(std::unique_ptr<dt::Tracker> real, unsigned fail_protect, unsigned fail_collect, bool fail_stop)
      : real_(std::move(real)), fail_protect_(fail_protect), fail_collect_(fail_collect), fail_stop_(fail_stop) {}
  std::string_view name() const override { return real_->name(); }
  Result<void> prepare(const dt::TrackRequest& r) override { return real_->prepare(r); }
  Result<dt::StartInfo> start(const dt::TrackRequest& r) override { return real_->start(r); }
  Result<std::optional<dt::RangeList>> protect_next() override {
    if (++protects_ == fail_protect_) return Error::sys(EIO, "injected: protect failed");
    return real_->protect_next();
  }
  Result<dt::CollectResult> collect() override {
    if (++collects_ == fail_collect_) return Error::sys(EIO, "injected: collect failed");
    return real_->collect();
  }
  Result<void> stop(dt::ProcessFreezer* freezer) override {
    auto r = real_->stop(freezer);  // the real one always leaves the target as it was
    if (fail_stop_ && !stop_failed_) {
      stop_failed_ = true;
      return Error::sys(EIO, "injected: stop failed");
    }
    return r;
  }

 private:
  std::unique_ptr<dt::Tracker> real_;
  unsigned fail_protect_;
  unsigned fail_collect_;
  bool fail_stop_;
  unsigned protects_ = 0;
  unsigned collects_ = 0;
  bool stop_failed_ = false;
};

struct Case {
  const char* name;
  unsigned fail_protect;  // 0: never
  unsigned fail_collect;  // 0: never
  bool fail_stop;
  const char* phase_failed;  // the phase the failure happens in
};

class TrackerFault : public testing::TestWithParam<Case> {};

TEST_P(TrackerFault, RollsBackBeforeTheVerdict) {
  const Case c = GetParam();
  const std::string dir = temp_dir();
  auto g = busy_guest(dir, 32ull << 20);
  ASSERT_TRUE(g.ok()) << g.error().message;

  InProcessDestination dest(dir);
  ASSERT_TRUE(dest.dest);

  SourceOptions o;
  o.pid = g->pid();
  o.scope.kind = dt::ScopeKind::ranges;
  o.scope.ranges = {{g->ram_addr(), g->ram_addr() + g->ram_size()}};
  o.policy = *compress::parse_policy("fixed:raw");
  o.convergence.max_rounds = 3;
  o.convergence.downtime_target_ms = 0;
  o.timeout = transport::Timeout(5000);
  o.protect_chunk_bytes = 4ull << 20;  // 8 chunks of its RAM in round 0
  o.make_tracker = [&]() -> Result<std::unique_ptr<dt::Tracker>> {
    auto real = LM_TRY(dt::make_tracker("uffd-wp", dt::probe_dirtytrack()));
    return std::unique_ptr<dt::Tracker>(
        new FailingTracker(std::move(real), c.fail_protect, c.fail_collect, c.fail_stop));
  };
  std::vector<std::string> phases;
  o.on_phase = [&](SourcePhase p) { phases.emplace_back(source_phase_name(p)); };
  MigrationResult result;
  auto r = SourceMigration(o).run(dest.dest->address(), result);
  dest.join();

  ASSERT_FALSE(r.ok()) << "an injected tracker failure must fail the migration";
  EXPECT_NE(r.error().message.find("injected"), std::string::npos) << r.error().message;
  ASSERT_GE(phases.size(), 2u);
  EXPECT_EQ(phases[phases.size() - 2], c.phase_failed);
  EXPECT_EQ(phases.back(), "rolled-back");
  EXPECT_EQ(result.source_phase, "rolled-back");
  EXPECT_EQ(result.source_state, "running");
  ASSERT_TRUE(dest.outcome.has_value());
  EXPECT_FALSE(dest.outcome->ok()) << "the destination must discard its copy";
  EXPECT_TRUE(wait_until_gone(std::string("--handoff ") + dir, 5000).empty()) << "the destination's guest is gone";
  expect_source_unharmed(*g);
  // Nothing of the tracking is left in its RAM: no page write-protected, no
  // range registered.
  auto scanner = dt::PagemapScanner::open(g->pid());
  ASSERT_TRUE(scanner.ok()) << scanner.error().message;
  dt::RangeList protected_pages, registered;
  const PageRange ram{g->ram_addr(), g->ram_addr() + g->ram_size()};
  ASSERT_TRUE(scanner->scan(ram, dt::kWriteProtected, protected_pages).ok());
  ASSERT_TRUE(scanner->scan(ram, {0, 0, PAGE_IS_WPALLOWED, 0, PAGE_IS_WPALLOWED}, registered).ok());
  EXPECT_TRUE(protected_pages.empty()) << dt::total_pages(protected_pages) << " pages left write-protected";
  EXPECT_TRUE(registered.empty()) << dt::total_pages(registered) << " pages left registered";
}

INSTANTIATE_TEST_SUITE_P(Phases, TrackerFault,
                         testing::Values(Case{"protect_in_round_0", 2, 0, false, "precopy"},
                                         Case{"collect_in_precopy", 0, 2, false, "precopy"},
                                         Case{"collect_in_stop_and_copy", 0, 4, false, "stop-and-copy"},
                                         Case{"stop_in_verify", 0, 0, true, "verify"}),
                         [](const testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

}  // namespace
