// Page content and RAM layout: deterministic, version-sensitive, and the
// word-mode writer reaches exactly what fill_page() describes.
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "harness/guest/content.hpp"
#include "harness/guest/layout.hpp"

namespace lm::guest {
namespace {

using Page = std::vector<uint8_t>;
Page make(ContentProfile p, WriteMode m, uint64_t seed, uint64_t idx, uint64_t v) {
  Page out(kPageSize);
  fill_page(out.data(), p, m, seed, idx, v);
  return out;
}

const ContentProfile kProfiles[] = {ContentProfile::zero, ContentProfile::text, ContentProfile::ints,
                                    ContentProfile::random, ContentProfile::mixed};

TEST(GuestContent, DeterministicAndVersionSensitive) {
  for (auto p : kProfiles)
    for (auto m : {WriteMode::page, WriteMode::word}) {
      EXPECT_EQ(make(p, m, 7, 3, 5), make(p, m, 7, 3, 5));
      EXPECT_NE(make(p, m, 7, 3, 5), make(p, m, 7, 3, 6)) << content_profile_name(p);
      EXPECT_NE(make(p, m, 7, 3, 5), make(p, m, 8, 3, 5));
      EXPECT_EQ(make(p, m, 7, 3, 0), Page(kPageSize, 0));
    }
}

TEST(GuestContent, WordModeWritesMatchFillPage) {
  for (auto p : kProfiles) {
    Page page(kPageSize, 0);
    for (uint64_t v = 1; v <= 1200; v++) {
      write_page_version(page.data(), p, WriteMode::word, 9, 42, v);
      Page before = v > 1 ? make(p, WriteMode::word, 9, 42, v - 1) : Page(kPageSize, 0);
      ASSERT_EQ(page, make(p, WriteMode::word, 9, 42, v)) << content_profile_name(p) << " v=" << v;
      if (v > 1) {  // at most two words differ from the previous version
        int diff = 0;
        for (size_t w = 0; w < kWordsPerPage; w++)
          diff += std::memcmp(&page[w * 8], &before[w * 8], 8) != 0;
        EXPECT_LE(diff, 2);
      }
    }
  }
}

TEST(GuestContent, ClassesLookLikeTheirNames) {
  Page zero = make(ContentProfile::zero, WriteMode::page, 1, 1, 1);
  for (size_t i = 8; i < kPageSize; i++) ASSERT_EQ(zero[i], 0);
  Page text = make(ContentProfile::text, WriteMode::page, 1, 1, 1);
  size_t printable = 0;
  for (size_t i = 8; i < kPageSize; i++) printable += (text[i] >= 32 && text[i] < 127) || text[i] == '\n' || text[i] == '\r';
  EXPECT_EQ(printable, kPageSize - 8);
  Page ints = make(ContentProfile::ints, WriteMode::page, 1, 1, 1);
  size_t small = 0;
  for (size_t w = 1; w < kWordsPerPage; w++) {
    uint64_t x;
    std::memcpy(&x, &ints[w * 8], 8);
    small += x < (1ull << 48);
  }
  EXPECT_EQ(small, kWordsPerPage - 1);
  int counts[4] = {};
  for (uint64_t i = 0; i < 1000; i++) counts[int(page_class(ContentProfile::mixed, 5, i))]++;
  for (int c : counts) EXPECT_GT(c, 100);
}

TEST(GuestLayout, PlanFitsAndRejectsTooSmall) {
  for (uint64_t size : {1ull << 20, 64ull << 20, 1ull << 30})
    for (uint32_t threads : {1u, 4u, 64u}) {
      auto l = plan_layout(size, threads);
      ASSERT_TRUE(l.ok()) << l.error().message;
      EXPECT_LE(l->data_offset + l->data_pages * kPageSize, size);
      EXPECT_GE(l->data_offset - l->version_table_offset, l->data_pages * 8);
      EXPECT_GT(l->data_offset + (l->data_pages + 2) * kPageSize, size);  // nearly everything used
    }
  EXPECT_TRUE(plan_layout(64 << 10, 1).ok());
  EXPECT_FALSE(plan_layout(64 << 10, 64).ok());
  EXPECT_FALSE(plan_layout(8192, 1).ok());
  EXPECT_FALSE(plan_layout(1 << 20, 0).ok());
  EXPECT_FALSE(plan_layout((1 << 20) + 1, 1).ok());
}

TEST(GuestLayout, AttachValidatesHeader) {
  std::vector<uint8_t> ram(1 << 20, 0);
  WorkloadConfig cfg;
  cfg.threads = 2;
  ASSERT_TRUE(RamView::initialize(ram.data(), 0x500000000000, ram.size(), cfg).ok());
  EXPECT_TRUE(RamView::attach(ram.data(), 0x500000000000, ram.size()).ok());
  auto wrong_addr = RamView::attach(ram.data(), 0x600000000000, ram.size());
  ASSERT_FALSE(wrong_addr.ok());
  EXPECT_NE(wrong_addr.error().message.find("0x500000000000"), std::string::npos) << wrong_addr.error().message;
  ram[0] ^= 1;
  EXPECT_FALSE(RamView::attach(ram.data(), 0x500000000000, ram.size()).ok());
}

TEST(GuestLayout, ParsePattern) {
  WorkloadConfig c;
  ASSERT_TRUE(parse_pattern("hotspot:0.2:0.8", c).ok());
  EXPECT_EQ(c.pattern, Pattern::hotspot);
  EXPECT_DOUBLE_EQ(c.pattern_p1, 0.2);
  EXPECT_DOUBLE_EQ(c.pattern_p2, 0.8);
  ASSERT_TRUE(parse_pattern("zipf", c).ok());
  EXPECT_DOUBLE_EQ(c.pattern_p1, 1.0);
  ASSERT_TRUE(parse_pattern("stride:7", c).ok());
  EXPECT_EQ(pattern_text(c), "stride:7");
  EXPECT_FALSE(parse_pattern("hotspot:2", c).ok());
  EXPECT_FALSE(parse_pattern("uniform:1", c).ok());
  EXPECT_FALSE(parse_pattern("spiral", c).ok());
  EXPECT_FALSE(parse_pattern("stride:1.5", c).ok());
}

}  // namespace
}  // namespace lm::guest

namespace lm::guest {
namespace {

TEST(GuestLayout, MapRefusesAnOccupiedAddress) {
  void* taken = ::mmap(nullptr, 1 << 20, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(taken, MAP_FAILED);
  auto r = map_guest_ram(uint64_t(taken), 1 << 20, -1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EEXIST);
  EXPECT_NE(r.error().message.find(strf("0x%lx", (unsigned long)taken)), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("already mapped"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(strf("pid %d", int(::getpid()))), std::string::npos);
  ::munmap(taken, 1 << 20);
  auto again = map_guest_ram(uint64_t(taken), 1 << 20, -1);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, taken);
  ::munmap(taken, 1 << 20);
}

}  // namespace
}  // namespace lm::guest
