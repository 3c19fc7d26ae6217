// The image directory (engine/image_dir.hpp): a round trip through the
// writer and the reader, the refusal to overwrite, manifests and index
// entries that are corrupt or truncated, and the comparison with a process.
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "engine/image_dir.hpp"
#include "engine/image_verify.hpp"
#include "tests/common/temp_dir.hpp"

using namespace lm;
using namespace lm::engine;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A mapping of this process, between two guard pages so that the kernel
// never merges it with a neighbour; unmapped at the end.
struct Pages {
  uint8_t* reserve = nullptr;
  uint8_t* base = nullptr;
  size_t count = 0;
  uint32_t prot = 0;
  explicit Pages(size_t n, uint32_t p = PROT_READ | PROT_WRITE) : count(n), prot(p) {
    void* r = mmap(nullptr, (n + 2) * kPageSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    EXPECT_NE(r, MAP_FAILED);
    reserve = static_cast<uint8_t*>(r);
    base = reserve + kPageSize;
    EXPECT_EQ(mprotect(base, n * kPageSize, int(p)), 0);
  }
  ~Pages() { munmap(reserve, (count + 2) * kPageSize); }
  uint64_t addr(size_t i = 0) const { return reinterpret_cast<uint64_t>(base) + i * kPageSize; }
  uint8_t* page(size_t i) { return base + i * kPageSize; }
  ImageRegion region() const { return {addr(), count * kPageSize, prot, base}; }
};

struct TempDir : lm::test::TempDir {
  TempDir() : lm::test::TempDir("livemig-image-test") { EXPECT_FALSE(path.empty()); }
};

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

void spill(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << bytes;
}

// A written image of two mappings: 8 pages of which 3 hold data, and 2 zero pages.
struct SampleImage {
  TempDir tmp;
  std::string dir = tmp.path + "/image";
  Pages data{8};
  Pages zeros{2, PROT_READ};
  SampleImage() {
    for (size_t i : {1, 4, 7}) std::memset(data.page(i), int(0x10 + i), kPageSize);
    data.page(4)[100] = 0;  // not uniform
    std::vector<ImageRegion> regions = {data.region(), zeros.region()};
    std::sort(regions.begin(), regions.end(), [](auto& a, auto& b) { return a.addr < b.addr; });
    auto w = write_image_dir(dir, regions, {pid_t(4242), ImageOverwrite::refuse});
    EXPECT_TRUE(w.ok()) << w.error().message;
    if (w) {
      EXPECT_EQ(w->data_pages, 3u);
    }
  }
  std::string manifest() const { return slurp(dir + "/manifest.json"); }
};

}  // namespace

TEST(ImageDir, RoundTrip) {
  SampleImage s;
  auto r = ImageReader::open(s.dir);
  ASSERT_TRUE(r.ok()) << r.error().message;
  const auto& m = r->manifest();
  EXPECT_EQ(m.version, kImageVersion);
  EXPECT_EQ(m.source_pid, std::optional<pid_t>(4242));
  EXPECT_FALSE(m.created.empty());
  ASSERT_EQ(m.mappings.size(), 2u);
  EXPECT_EQ(m.index_entries, 3u);
  EXPECT_EQ(m.pages_bytes, 3 * kPageSize);
  EXPECT_TRUE(r->check_pages_checksum().ok());
  for (const auto& mapping : m.mappings) {
    const bool is_data = mapping.addr == s.data.addr();
    EXPECT_EQ(mapping.bytes, (is_data ? 8 : 2) * kPageSize);
    EXPECT_EQ(mapping.prot, is_data ? uint32_t(PROT_READ | PROT_WRITE) : uint32_t(PROT_READ));
    auto entries = r->entries(mapping);
    ASSERT_EQ(entries.size(), is_data ? 3u : 0u);
    for (const auto& e : entries) {
      std::array<std::byte, kPageSize> page;
      ASSERT_TRUE(r->read_page(e.offset, page).ok());
      EXPECT_EQ(std::memcmp(page.data(), reinterpret_cast<const void*>(e.addr), kPageSize), 0)
          << "page 0x" << std::hex << e.addr;
    }
  }
  for (const auto& entry : fs::directory_iterator(s.tmp.path))
    EXPECT_EQ(entry.path().filename(), "image") << "a temporary directory was left behind";
}

TEST(ImageDir, RefusesToOverwriteUnlessTold) {
  SampleImage s;
  Pages other(1);
  std::memset(other.page(0), 0x55, kPageSize);
  std::vector<ImageRegion> regions = {other.region()};
  auto refused = write_image_dir(s.dir, regions, {std::nullopt, ImageOverwrite::refuse});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message.find("not empty"), std::string::npos) << refused.error().message;
  EXPECT_FALSE(check_image_dir_target(s.dir, ImageOverwrite::refuse).ok());
  EXPECT_EQ(ImageReader::open(s.dir)->manifest().mappings.size(), 2u) << "the old image is untouched";

  auto replaced = write_image_dir(s.dir + "/", regions, {std::nullopt, ImageOverwrite::replace});
  ASSERT_TRUE(replaced.ok()) << replaced.error().message;
  auto r = ImageReader::open(s.dir);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->manifest().mappings.size(), 1u);
  EXPECT_FALSE(r->manifest().source_pid.has_value());
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(s.tmp.path)) entries += e.path().filename() != "image";
  EXPECT_EQ(entries, 0u) << "the replaced image was not removed";
}

TEST(ImageDir, TakesAnExistingEmptyDirectory) {
  TempDir tmp;
  Pages p(1);
  std::vector<ImageRegion> regions = {p.region()};
  ASSERT_TRUE(check_image_dir_target(tmp.path, ImageOverwrite::refuse).ok());
  auto w = write_image_dir(tmp.path, regions, {});
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_TRUE(ImageReader::open(tmp.path).ok());
  EXPECT_FALSE(write_image_dir("/", regions, {}).ok());
}

// The kernel's page tables of this process, in KiB (VmPTE).
uint64_t page_table_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmPTE:", 0) == 0) return std::stoull(line.substr(6));
  return 0;
}

// An image of a sparse reservation (an ASan process maps terabytes of
// shadow) reads only the pages that hold memory: reading all 16 GiB would
// fault in the zero page everywhere and build 32 MiB of page tables.
TEST(ImageDir, ASparseRegionIsReadOnlyWhereItHoldsMemory) {
  constexpr uint64_t kBytes = 16ull << 30;
  void* p = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  auto* base = static_cast<uint8_t*>(p);
  std::memset(base + 5 * kPageSize, 0x5a, kPageSize);
  std::memset(base + kBytes - kPageSize, 0xa5, kPageSize);
  TempDir tmp;
  const uint64_t pte_before = page_table_kib();
  const std::vector<ImageRegion> regions = {{0x7e0000000000, kBytes, PROT_READ | PROT_WRITE, base}};
  auto w = write_image_dir(tmp.path + "/img", regions, {});
  const uint64_t pte_after = page_table_kib();
  munmap(p, kBytes);
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_EQ(w->data_pages, 2u);
  EXPECT_EQ(w->pages, kBytes / kPageSize);
  EXPECT_LT(pte_after, pte_before + 4096) << "the writer read unpopulated pages: VmPTE " << pte_before << " -> "
                                          << pte_after << " KiB";
  auto r = ImageReader::open(tmp.path + "/img");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->manifest().mappings.size(), 1u);
  EXPECT_EQ(r->manifest().mappings[0].entries, 2u);
}

// Each mutation of a good manifest must be refused, with a message naming
// what is wrong.
TEST(ImageDir, CorruptManifestsAreRefused) {
  SampleImage s;
  const std::string good = s.manifest();
  ASSERT_TRUE(parse_image_manifest(good).ok());
  const json doc = json::parse(good);
  struct Case {
    const char* name;
    std::function<void(json&)> mutate;
    const char* expect;  // in the error message
  };
  const std::vector<Case> cases = {
      {"wrong format", [](json& j) { j["format"] = "qemu"; }, "format"},
      {"newer version", [](json& j) { j["version"] = 2; }, "version 2"},
      {"version as text", [](json& j) { j["version"] = "1"; }, "version"},
      {"no mappings", [](json& j) { j.erase("mappings"); }, "mappings is missing"},
      {"page size", [](json& j) { j["page-size"] = 65536; }, "page-size"},
      {"negative address", [](json& j) { j["mappings"][0]["address"] = -4096; }, "mappings[0].address"},
      {"unaligned size", [](json& j) { j["mappings"][0]["size"] = 4095; }, "mappings[0].address"},
      {"address wraps", [](json& j) { j["mappings"][1]["address"] = ~uint64_t(4095); }, "mappings[1].address"},
      {"bad prot", [](json& j) { j["mappings"][0]["prot"] = "rwz"; }, "mappings[0].prot"},
      {"overlap", [](json& j) { j["mappings"][1]["address"] = j["mappings"][0]["address"]; }, "overlaps"},
      {"slice gap", [](json& j) { j["mappings"][1]["index-first"] = 7; }, "index-first"},
      {"too many entries", [](json& j) { j["index"]["entries"] = 4; }, "index.entries"},
      {"entries above pages", [](json& j) {
         j["mappings"][0]["index-entries"] = 100;
         j["mappings"][0]["size"] = 4096;
       }, "exceeds"},
      {"pages bytes", [](json& j) { j["pages"]["bytes"] = 100; }, "pages.bytes"},
      {"pages file", [](json& j) { j["pages"]["file"] = "../etc/passwd"; }, "pages.file"},
      {"checksum", [](json& j) { j["index"]["xxh3"] = "xyz"; }, "index.xxh3"},
      {"pid zero", [](json& j) { j["source"]["pid"] = 0; }, "source.pid"},
      {"mapping not an object", [](json& j) { j["mappings"][0] = 5; }, "mappings[0]"},
  };
  for (const auto& c : cases) {
    json j = doc;
    c.mutate(j);
    auto r = parse_image_manifest(j.dump());
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos) << c.name << ": " << r.error().message;
  }
  for (size_t cut : {size_t(0), size_t(1), good.size() / 3, good.size() / 2, good.size() - 3}) {
    auto r = parse_image_manifest(good.substr(0, cut));
    EXPECT_FALSE(r.ok()) << "manifest truncated to " << cut << " bytes";
  }
  EXPECT_FALSE(parse_image_manifest("[1, 2]").ok());
  EXPECT_TRUE(parse_image_manifest(good + "\n\n").ok());
}

namespace {

// Rewrites index.bin through `mutate` and fixes the manifest's checksum, so
// that the entry checks (not the checksum) must catch the damage.
void rewrite_index(const SampleImage& s, const std::function<void(std::vector<ImageIndexEntry>&)>& mutate) {
  std::string bytes = slurp(s.dir + "/index.bin");
  std::vector<ImageIndexEntry> index(bytes.size() / sizeof(ImageIndexEntry));
  std::memcpy(index.data(), bytes.data(), bytes.size());
  mutate(index);
  spill(s.dir + "/index.bin", std::string(reinterpret_cast<const char*>(index.data()), index.size() * 16));
  json j = json::parse(s.manifest());
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(index.data(), index.size() * 16));
  j["index"]["xxh3"] = hex;
  spill(s.dir + "/manifest.json", j.dump(2));
}

}  // namespace

TEST(ImageDir, CorruptIndexEntriesAreRefused) {
  struct Case {
    const char* name;
    std::function<void(std::vector<ImageIndexEntry>&)> mutate;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"offset past the end", [](auto& ix) { ix[1].offset = 3 * kPageSize; }, "offset"},
      {"offset huge", [](auto& ix) { ix[1].offset = ~uint64_t(4095); }, "offset"},
      {"offset unaligned", [](auto& ix) { ix[0].offset = 1; }, "offset"},
      {"address unaligned", [](auto& ix) { ix[2].addr += 1; }, "aligned"},
      {"address outside", [](auto& ix) { ix[2].addr += 64 * kPageSize; }, "outside"},
      {"not ascending", [](auto& ix) { std::swap(ix[0].addr, ix[1].addr); }, "ascending"},
  };
  for (const auto& c : cases) {
    SampleImage s;
    ASSERT_TRUE(ImageReader::open(s.dir).ok());
    rewrite_index(s, c.mutate);
    auto r = ImageReader::open(s.dir);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_NE(r.error().message.find(c.expect), std::string::npos) << c.name << ": " << r.error().message;
  }
}

TEST(ImageDir, TruncatedOrAlteredFilesAreRefused) {
  {
    SampleImage s;
    std::string index = slurp(s.dir + "/index.bin");
    spill(s.dir + "/index.bin", index.substr(0, index.size() - 5));
    auto r = ImageReader::open(s.dir);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("index.bin holds"), std::string::npos) << r.error().message;
  }
  {
    SampleImage s;
    std::string index = slurp(s.dir + "/index.bin");
    index[3] ^= 1;
    spill(s.dir + "/index.bin", index);
    auto r = ImageReader::open(s.dir);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("checksum"), std::string::npos) << r.error().message;
  }
  {
    SampleImage s;
    std::string pages = slurp(s.dir + "/pages.bin");
    spill(s.dir + "/pages.bin", pages.substr(0, kPageSize * 2));
    auto r = ImageReader::open(s.dir);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("pages.bin holds"), std::string::npos) << r.error().message;
  }
  {
    SampleImage s;
    std::string pages = slurp(s.dir + "/pages.bin");
    pages[kPageSize + 7] ^= 1;
    spill(s.dir + "/pages.bin", pages);
    auto r = ImageReader::open(s.dir);
    ASSERT_TRUE(r.ok()) << r.error().message;
    auto checked = r->check_pages_checksum();
    ASSERT_FALSE(checked.ok());
    EXPECT_NE(checked.error().message.find("checksum"), std::string::npos);
  }
  {
    SampleImage s;
    fs::remove(s.dir + "/manifest.json");
    auto r = ImageReader::open(s.dir);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message.find("No such file"), std::string::npos) << r.error().message;
  }
}

// The comparison reads this very process: equal pages, one changed page,
// a changed protection and a vanished mapping must each be seen.
TEST(ImageVerify, ComparesWithALiveProcess) {
  SampleImage s;
  auto r = ImageReader::open(s.dir);
  ASSERT_TRUE(r.ok()) << r.error().message;
  auto same = compare_image_with_process(*r, getpid());
  ASSERT_TRUE(same.ok()) << same.error().message;
  EXPECT_EQ(same->image_pages, 10u);
  EXPECT_EQ(same->pages_compared, 10u);
  EXPECT_EQ(same->pages_equal, 10u);
  EXPECT_EQ(same->pages_changed, 0u);
  EXPECT_TRUE(same->missing.empty());
  EXPECT_TRUE(same->changed_mappings.empty());
  EXPECT_FALSE(same->added.empty()) << "the rest of this process is not in the image";

  s.data.page(4)[9] ^= 0xff;
  s.data.page(5)[0] = 1;  // a zero page that now holds data
  ASSERT_EQ(mprotect(s.data.base, 8 * kPageSize, PROT_READ), 0);
  ASSERT_EQ(munmap(s.zeros.base, 2 * kPageSize), 0);
  auto diff = compare_image_with_process(*r, getpid());
  ASSERT_TRUE(diff.ok()) << diff.error().message;
  EXPECT_FALSE(diff->identical());
  EXPECT_EQ(diff->pages_compared, 8u);
  EXPECT_EQ(diff->pages_changed, 2u);
  EXPECT_EQ(diff->changed, (std::vector<uint64_t>{s.data.addr(4), s.data.addr(5)}));
  EXPECT_EQ(diff->pages_unmapped, 2u);
  ASSERT_EQ(diff->missing.size(), 1u);
  EXPECT_EQ(diff->missing[0].addr, s.zeros.addr());
  ASSERT_EQ(diff->changed_mappings.size(), 1u);
  EXPECT_EQ(diff->changed_mappings[0].what, "prot rw- now r--");
}

TEST(ImageVerify, AGoneProcessIsAnErrorNamingIt) {
  SampleImage s;
  auto r = ImageReader::open(s.dir);
  ASSERT_TRUE(r.ok());
  auto c = compare_image_with_process(*r, 999999999);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("999999999"), std::string::npos) << c.error().message;
}
