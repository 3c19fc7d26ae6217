// Image mode end to end, as two processes: a real redis-server under
// redis-benchmark load is migrated with `livemig source --pid` to
// `livemig dest --image --image-dir D`. The source must run on (keep) or be
// left stopped (stop) and serve afterwards with its data intact; D must hold
// the image; `livemig image verify D --pid` must compare it with the process:
// changed pages while the load writes, identical while the source is stopped
// at the moment the image was taken.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dirtytrack/maps.hpp"
#include "engine/image_dir.hpp"
#include "engine_test_util.hpp"
#include "harness/redis_workload.hpp"

using namespace lm;
using namespace lm::engine;
using namespace lm::engine::test;
using nlohmann::json;

namespace {

constexpr int kMarkers = 1000;

std::string markers_command(const char* verb, bool with_values) {
  std::string cmd = verb;
  for (int i = 0; i < kMarkers; i++) {
    cmd += strf(" livemig-marker-%d", i);
    if (with_values) cmd += strf(" value-%d", i);
  }
  return cmd;
}

std::string reply(RedisWorkload& redis, const std::string& command) {
  auto r = redis.request(command);
  EXPECT_TRUE(r.ok()) << command.substr(0, 40) << ": " << r.error().message;
  return r ? *r : "";
}

uint64_t integer_reply(RedisWorkload& redis, const std::string& command) {
  std::string r = reply(redis, command);
  EXPECT_EQ(r.substr(0, 1), ":") << r;
  return r.size() > 1 ? std::strtoull(r.c_str() + 1, nullptr, 10) : 0;
}

// Pages of the image's mappings that the process maps now (what `image
// verify` can compare).
uint64_t pages_still_mapped(const ImageManifest& image, pid_t pid) {
  auto maps = dt::read_maps(pid);
  EXPECT_TRUE(maps.ok()) << maps.error().message;
  if (!maps) return 0;
  uint64_t pages = 0;
  for (const auto& m : image.mappings)
    for (const auto& p : *maps) {
      uint64_t lo = std::max(p.start, m.addr), hi = std::min(p.end, m.addr + m.bytes);
      if (lo < hi) pages += (hi - lo) / kPageSize;
    }
  return pages;
}

json read_json(const std::string& path) {
  std::ifstream f(path);
  json j = json::parse(f, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << path << " is not JSON";
  return j;
}

struct Verified {
  int exit_code = -1;
  json report;
  uint64_t still_mapped_before = 0, still_mapped_after = 0;
};

Verified image_verify(const std::string& dir, pid_t pid) {
  auto image = ImageReader::open(dir);
  EXPECT_TRUE(image.ok()) << image.error().message;
  Verified v;
  if (!image) return v;
  v.still_mapped_before = pages_still_mapped(image->manifest(), pid);
  Livemig verify({"image", "verify", dir, "--pid", std::to_string(pid), "--json"}, 60);
  std::string out = verify.rest();
  v.exit_code = verify.wait();
  v.still_mapped_after = pages_still_mapped(image->manifest(), pid);
  v.report = json::parse(out, nullptr, false);
  EXPECT_FALSE(v.report.is_discarded()) << "image verify --json printed: " << out;
  std::printf("image verify (exit %d): %s", v.exit_code, out.c_str());
  return v;
}

}  // namespace

class ImageRedis : public ::testing::TestWithParam<std::string> {};

TEST_P(ImageRedis, SourceServesOnAndTheImageIsKept) {
  const std::string after = GetParam();
  auto redis = RedisWorkload::start({20000, 256, 2});
  ASSERT_TRUE(redis.ok()) << redis.error().message;
  ASSERT_EQ(reply(*redis, markers_command("MSET", true)), "+OK\r\n");
  ASSERT_TRUE(redis->start_writers().ok());
  usleep(300000);  // the load is under way
  const uint64_t keys_before = integer_reply(*redis, "DBSIZE");
  const pid_t server = redis->server_pid();

  const std::string work = temp_dir();
  const std::string image_dir = work + "/image";
  Livemig dest({"dest", "--image", "--image-dir", image_dir, "--listen", "tcp:127.0.0.1:0"});
  std::string listening = dest.line();
  ASSERT_EQ(listening.rfind("LISTENING ", 0), 0u) << listening;
  std::string address = listening.substr(10, listening.find_last_not_of("\n") - 9);
  Livemig source({"source", "--pid", std::to_string(server), "--to", address, "--after", after, "--out",
                  work + "/result.json"});
  std::string source_out = source.rest();
  EXPECT_EQ(source.wait(), 0) << source_out;
  std::string dest_out = dest.rest();
  EXPECT_EQ(dest.wait(), 0) << dest_out;
  EXPECT_NE(dest_out.find("IMAGE " + image_dir), std::string::npos) << dest_out;

  // The result document: verified, and the source where --after put it.
  json result = read_json(work + "/result.json");
  EXPECT_EQ(result.value("status", ""), "completed") << result.dump(2);
  EXPECT_EQ(result["verify"].value("ok", false), true);
  EXPECT_EQ(result["source"].value("state", ""), after == "keep" ? "running" : "stopped");
  EXPECT_EQ(proc_state(server) == 'T' || proc_state(server) == 't', after == "stop") << proc_state(server);
  ASSERT_TRUE(alive(server)) << "the source must survive an image migration";

  // The image on disk.
  EXPECT_TRUE(std::filesystem::is_regular_file(image_dir + "/manifest.json"));
  EXPECT_GT(std::filesystem::file_size(image_dir + "/pages.bin"), 20000u * 256) << "the loaded keys are in the image";
  auto image = ImageReader::open(image_dir);
  ASSERT_TRUE(image.ok()) << image.error().message;
  EXPECT_EQ(image->manifest().source_pid, std::optional<pid_t>(server));

  Verified v = image_verify(image_dir, server);
  const auto& pages = v.report["pages"];
  EXPECT_TRUE(pages.value("compared", 0ull) == v.still_mapped_before ||
              pages.value("compared", 0ull) == v.still_mapped_after)
      << "compared " << pages.value("compared", 0ull) << ", still mapped " << v.still_mapped_before << " / "
      << v.still_mapped_after;
  EXPECT_EQ(pages.value("compared", 0ull), pages.value("equal", 0ull) + pages.value("changed", 0ull));
  EXPECT_GT(pages.value("equal", 0ull), 0u);
  if (after == "stop") {
    // Stopped at the moment of the image: nothing may differ.
    EXPECT_EQ(v.exit_code, 0);
    EXPECT_EQ(v.report.value("identical", false), true);
    EXPECT_EQ(pages.value("changed", 1ull), 0u);
    ASSERT_EQ(kill(server, SIGCONT), 0);
  } else {
    EXPECT_EQ(v.exit_code, 1) << "redis-benchmark kept writing after the image";
    EXPECT_EQ(v.report.value("identical", true), false);
    EXPECT_GT(pages.value("changed", 0ull), 0u);
  }

  // The source serves on with its data.
  EXPECT_EQ(integer_reply(*redis, markers_command("EXISTS", false)), uint64_t(kMarkers));
  EXPECT_EQ(reply(*redis, "GET livemig-marker-777"), "$9\r\nvalue-777\r\n");
  EXPECT_GE(integer_reply(*redis, "DBSIZE"), keys_before);
  EXPECT_EQ(reply(*redis, "SET livemig-after-migration yes"), "+OK\r\n");
  EXPECT_EQ(reply(*redis, "GET livemig-after-migration"), "$3\r\nyes\r\n");
  redis->stop();
  std::error_code ec;
  std::filesystem::remove_all(work, ec);
}

INSTANTIATE_TEST_SUITE_P(After, ImageRedis, ::testing::Values("keep", "stop"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

int main(int argc, char** argv) { return lm::engine::test::run_redis_tests(argc, argv); }
