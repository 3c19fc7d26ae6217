#include <gtest/gtest.h>

#include <cmath>

#include "engine/model.hpp"

using lm::engine::ModelInput;
using lm::engine::MultiVm;
using lm::engine::predict;

namespace {

ModelInput one_gib(double dirty_pages_per_s) {
  ModelInput in;
  in.vm_bytes = double(1ull << 30);
  in.link_bytes_per_s = 1e9;
  in.dirty_pages_per_s = dirty_pages_per_s;
  in.threshold_bytes = 4096.0 * 1000;
  in.max_rounds = 30;
  return in;
}

TEST(Model, NoDirtyingIsOneCopy) {
  auto p = predict(one_gib(0));
  EXPECT_EQ(p.rounds, 0u);
  EXPECT_NEAR(p.total_s, double(1ull << 30) / 1e9, 1e-9);
  EXPECT_NEAR(p.downtime_s, double(1ull << 30) / 1e9, 1e-9);  // r^0 · Vm/R: everything in stop-and-copy
}

// The engine's pre-copy sends round 0 while the guest runs, whatever the
// threshold: with n_min = 1 the stop-and-copy holds only what round 0 left.
TEST(Model, ALiveRoundZeroIsOneRoundAtLeast) {
  auto idle = one_gib(0);
  idle.min_rounds = 1;
  auto p = predict(idle);
  EXPECT_EQ(p.rounds, 1u);
  EXPECT_NEAR(p.total_s, double(1ull << 30) / 1e9, 1e-9);
  EXPECT_NEAR(p.downtime_s, 0, 1e-12);

  auto small = one_gib(24414.0625);  // r ≈ 0.1
  small.threshold_bytes = 2 * small.vm_bytes;  // the notes' n would be 0
  small.min_rounds = 1;
  p = predict(small);
  const double r = 4096.0 * 24414.0625 / 1e9, vr = small.vm_bytes / small.link_bytes_per_s;
  EXPECT_EQ(p.rounds, 1u);
  EXPECT_NEAR(p.total_s, vr * (1 + r), 1e-9);
  EXPECT_NEAR(p.downtime_s, r * vr, 1e-12);
  small.max_rounds = 0;  // never above n_max
  EXPECT_EQ(predict(small).rounds, 0u);
}

TEST(Model, GeometricSeriesAndRounds) {
  // r = 4096 · 24414 / 1e9 ≈ 0.1
  auto in = one_gib(24414.0625);
  auto p = predict(in);
  const double r = 4096.0 * 24414.0625 / 1e9;
  EXPECT_NEAR(p.ratio, r, 1e-12);
  const double n = std::ceil(std::log(in.threshold_bytes / in.vm_bytes) / std::log(r));
  EXPECT_EQ(p.rounds, unsigned(n));
  const double vr = in.vm_bytes / in.link_bytes_per_s;
  EXPECT_NEAR(p.total_s, vr * (1 - std::pow(r, n + 1)) / (1 - r), 1e-9);
  EXPECT_NEAR(p.downtime_s, std::pow(r, n) * vr, 1e-12);
  EXPECT_TRUE(p.converges);
}

TEST(Model, NonConvergingUsesMaxRounds) {
  auto p = predict(one_gib(1e6));  // r = 4.1
  EXPECT_FALSE(p.converges);
  EXPECT_EQ(p.rounds, 30u);
}

TEST(Model, ParallelVmsMultiplyTheRatio) {
  auto in = one_gib(24414.0625);
  in.vms = 3;
  in.multi = MultiVm::parallel;
  auto p = predict(in);
  EXPECT_NEAR(p.ratio, 3 * 4096.0 * 24414.0625 / 1e9, 1e-12);
  in.multi = MultiVm::serial_correlated;
  auto s = predict(in);
  // Correlated serial downtime includes the other VMs' whole migrations.
  EXPECT_GT(s.downtime_s, p.downtime_s);
  EXPECT_GT(s.total_s, 3 * in.vm_bytes / in.link_bytes_per_s);
}

TEST(Model, SerialIsOneLiveMigrationAfterAnother) {
  auto in = one_gib(24414.0625);
  in.resume_s = 0.01;
  auto single = predict(in);
  in.vms = 4;
  in.multi = MultiVm::serial;
  auto s = predict(in);
  EXPECT_NEAR(s.total_s, 4 * single.total_s, 1e-9);
  EXPECT_NEAR(s.downtime_s, single.downtime_s, 1e-12);
  in.multi = MultiVm::serial_correlated;
  EXPECT_GT(predict(in).downtime_s, 3 * single.total_s - 3 * in.resume_s);
}

}  // namespace
