// Image mode end to end with a process that maps, unmaps and remaps while it
// is migrated: livemig-guest --churn, `livemig source --pid --after stop` to
// `livemig dest --image --image-dir D`. Each round's mapping table drops the
// mappings that went away at the destination; the migration must verify, and
// the kept image must hold exactly the mappings of the frozen process (none
// that went away during the migration).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "dirtytrack/maps.hpp"
#include "engine/image_dir.hpp"
#include "engine_test_util.hpp"
#include "harness/guest/client.hpp"

using namespace lm;
using namespace lm::engine;
using namespace lm::engine::test;

namespace {

std::set<std::pair<uint64_t, uint64_t>> writable_anonymous(pid_t pid) {
  std::set<std::pair<uint64_t, uint64_t>> out;
  auto maps = dt::read_maps(pid);
  EXPECT_TRUE(maps.ok()) << maps.error().message;
  if (!maps) return out;
  for (const auto& m : *maps)
    if (m.write && !m.shared && m.kind == dt::MappingKind::anonymous && m.path.empty()) out.insert({m.start, m.end});
  return out;
}

TEST(ImageChurn, MappingsGoneDuringTheMigrationAreNotInTheImage) {
  const std::string work = temp_dir();
  guest::GuestOptions opts;
  opts.ram_bytes = 32ull << 20;
  opts.rate = "20000";
  opts.churn = true;
  auto g = guest::GuestProcess::spawn(guest_binary(), opts, work);
  ASSERT_TRUE(g.ok()) << g.error().message;
  const pid_t pid = g->pid();
  // The churn unmaps its oldest region once it holds seven: wait until
  // mappings go away between two looks (a loaded host may take seconds), so
  // that it goes on removing them during the migration.
  auto before = writable_anonymous(pid);
  bool removing = false;
  for (int i = 0; i < 200 && !removing; i++) {
    usleep(50000);
    const auto now = writable_anonymous(pid);
    removing = !std::includes(now.begin(), now.end(), before.begin(), before.end());
    before = now;
  }
  ASSERT_TRUE(removing) << "the churn removed no mapping in 10 s";

  const std::string image_dir = work + "/image";
  Livemig dest({"dest", "--image", "--image-dir", image_dir, "--listen", "tcp:127.0.0.1:0", "--max-ram", "1G"});
  const std::string listening = dest.line();
  ASSERT_EQ(listening.rfind("LISTENING ", 0), 0u) << listening;
  const std::string address = listening.substr(10, listening.find_last_not_of("\n") - 9);
  Livemig source({"source", "--pid", std::to_string(pid), "--to", address, "--after", "stop", "--out",
                  work + "/result.json"});
  const std::string source_out = source.rest();
  EXPECT_EQ(source.wait(), 0) << source_out;
  const std::string dest_out = dest.rest();
  EXPECT_EQ(dest.wait(), 0) << dest_out;
  EXPECT_EQ(dest_out.find("verification"), std::string::npos) << dest_out;
  EXPECT_EQ(source_out.find("verification:"), std::string::npos) << source_out;

  std::ifstream f(work + "/result.json");
  const auto result = nlohmann::json::parse(f, nullptr, false);
  ASSERT_FALSE(result.is_discarded());
  EXPECT_EQ(result.value("status", ""), "completed") << result.dump(2);
  EXPECT_EQ(result["verify"].value("ok", false), true) << result.dump(2);

  // Frozen by --after stop: its maps are the source's last table.
  const auto after = writable_anonymous(pid);
  std::vector<std::pair<uint64_t, uint64_t>> gone;
  std::set_difference(before.begin(), before.end(), after.begin(), after.end(), std::back_inserter(gone));
  EXPECT_FALSE(gone.empty()) << "the churn removed no mapping during the migration";

  auto image = ImageReader::open(image_dir);
  ASSERT_TRUE(image.ok()) << image.error().message;
  for (const auto& m : image->manifest().mappings) {
    EXPECT_EQ(std::count(gone.begin(), gone.end(), std::make_pair(m.addr, m.addr + m.bytes)), 0)
        << "the image holds 0x" << std::hex << m.addr << "+" << std::dec << m.bytes << ", which went away";
    auto maps = dt::read_maps(pid);
    ASSERT_TRUE(maps.ok());
    EXPECT_TRUE(std::any_of(maps->begin(), maps->end(),
                            [&](const dt::Mapping& p) { return p.start <= m.addr && m.addr + m.bytes <= p.end; }))
        << "image mapping 0x" << std::hex << m.addr << " is not mapped by the frozen process";
  }
  std::printf("%zu writable anonymous mappings before, %zu after, %zu gone; image of %zu mappings\n", before.size(),
              after.size(), gone.size(), image->manifest().mappings.size());
}

}  // namespace
