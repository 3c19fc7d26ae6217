// An unmodified redis-server, loaded and written to while it migrates in
// image mode; the destination's image must match the frozen source.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "engine_test_util.hpp"
#include "harness/runner.hpp"

using namespace lm::engine;

int main(int argc, char** argv) { return lm::engine::test::run_redis_tests(argc, argv); }

TEST(Redis, ImageVerifiesWhileWritten) {
  auto c = parse_scenario("name = \"redis-test\"\n", "test",
                          {"workload.kind=\"redis\"", "workload.redis-keys=30000", "workload.redis-value-size=256",
                           "workload.warmup-ms=300", "migration.transport=\"uring\""});
  ASSERT_TRUE(c.ok()) << c.error().message;
  RunOptions o;
  auto r = run_scenario(*c, o);
  ASSERT_TRUE(r.ok()) << r.error().message;
  std::printf("%s", summarize(*r).c_str());
  EXPECT_TRUE(r->completed) << r->error;
  EXPECT_TRUE(r->verify_ok);
  EXPECT_GT(r->verify_pages, 1000u);
  EXPECT_GT(r->workload_rate_before, 100) << "redis-benchmark kept writing";
  EXPECT_GT(r->ram_total, 30000u * 256) << "the image holds the loaded keys";
  EXPECT_GT(r->transferred, 0u);
}
