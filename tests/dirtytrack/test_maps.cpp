#include <gtest/gtest.h>

#include <random>

#include "dirtytrack/maps.hpp"
#include "dirtytrack/ranges.hpp"

namespace {

using namespace lm::dt;

const char* kMaps =
    "55d0c0a00000-55d0c0a02000 r--p 00000000 fe:01 1234 /usr/bin/cat\n"
    "55d0c0a02000-55d0c0a06000 r-xp 00002000 fe:01 1234 /usr/bin/cat\n"
    "55d0c0a08000-55d0c0a09000 rw-p 00007000 fe:01 1234 /usr/bin/cat\n"
    "55d0c1000000-55d0c1021000 rw-p 00000000 00:00 0                          [heap]\n"
    "7f0000000000-7f0000100000 rw-p 00000000 00:00 0 \n"
    "7f0000100000-7f0000101000 ---p 00000000 00:00 0 \n"
    "7f0000200000-7f0000300000 rw-s 00000000 00:01 77                         /memfd:ram (deleted)\n"
    "7f0000400000-7f0000401000 r--s 00000000 fe:01 99                         /usr/share/x\n"
    "7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]\n"
    "7ffc000f0000-7ffc000f4000 r--p 00000000 00:00 0                          [vvar]\n"
    "7ffc000f4000-7ffc000f6000 r-xp 00000000 00:00 0                          [vdso]\n"
    "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]\n";

TEST(Maps, ParsesEveryField) {
  auto m = parse_maps(kMaps);
  ASSERT_TRUE(m.ok()) << m.error().message;
  ASSERT_EQ(m->size(), 12u);
  const Mapping& text = (*m)[1];
  EXPECT_EQ(text.start, 0x55d0c0a02000u);
  EXPECT_EQ(text.end, 0x55d0c0a06000u);
  EXPECT_TRUE(text.read && text.exec && !text.write && !text.shared);
  EXPECT_EQ(text.offset, 0x2000u);
  EXPECT_EQ(text.dev_major, 0xfeu);
  EXPECT_EQ(text.inode, 1234u);
  EXPECT_EQ(text.path, "/usr/bin/cat");
  EXPECT_EQ(text.kind, MappingKind::file);
  EXPECT_EQ((*m)[3].kind, MappingKind::heap);
  EXPECT_EQ((*m)[4].kind, MappingKind::anonymous);
  EXPECT_EQ((*m)[4].path, "");
  EXPECT_EQ((*m)[6].path, "/memfd:ram (deleted)");
  EXPECT_EQ((*m)[8].kind, MappingKind::stack);
  EXPECT_EQ((*m)[10].kind, MappingKind::vdso);
  EXPECT_EQ((*m)[11].kind, MappingKind::vsyscall);
}

TEST(Maps, MalformedLineIsNamed) {
  auto m = parse_maps("zzzz garbage\n");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message.find("line 1"), std::string::npos);
}

TEST(Maps, MigratableIsPrivateWritableOnly) {
  auto m = *parse_maps(kMaps);
  std::vector<std::string> picked;
  for (const auto& x : select(m, Scope{})) picked.push_back(lm::strf("%llx", (unsigned long long)x.start));
  // data segment of the binary, heap, anonymous, stack; not the guard page,
  // shared memfd, read-only shared file, vvar/vdso/vsyscall or code.
  EXPECT_EQ(picked, (std::vector<std::string>{"55d0c0a08000", "55d0c1000000", "7f0000000000", "7ffc00000000"}));
}

TEST(Maps, RangeScopeClipsAndTakesSharedWritable) {
  auto m = *parse_maps(kMaps);
  Scope s{ScopeKind::ranges, {{0x7f0000080000, 0x7f0000280000}}};
  auto sel = select(m, s);
  ASSERT_EQ(sel.size(), 2u);
  EXPECT_EQ(sel[0].start, 0x7f0000080000u);
  EXPECT_EQ(sel[0].end, 0x7f0000100000u);
  EXPECT_EQ(sel[1].start, 0x7f0000200000u);  // shared memfd RAM counts in an explicit range
  EXPECT_EQ(sel[1].end, 0x7f0000280000u);
}

Mapping anon(uint64_t s, uint64_t e, uint64_t pgoff) {
  Mapping m;
  m.start = s;
  m.end = e;
  m.read = m.write = true;
  m.offset = pgoff;
  return m;
}

TEST(Maps, DiffFindsEachKindOfChange) {
  MappingList before = {anon(0x1000, 0x3000, 0x1), anon(0x10000, 0x12000, 0x10), anon(0x20000, 0x24000, 0x20),
                        anon(0x30000, 0x31000, 0x30), anon(0x40000, 0x42000, 0x40)};
  MappingList after = {anon(0x1000, 0x5000, 0x1),     // grown
                       anon(0x10000, 0x11000, 0x10),  // shrunk
                       // 0x20000 removed
                       anon(0x30000, 0x31000, 0x99),   // replaced in place (new offset)
                       anon(0x50000, 0x51000, 0x50),   // added
                       anon(0x60000, 0x62000, 0x40)};  // 0x40000 moved by mremap (same size)
  auto changes = diff_mappings(before, after);
  std::vector<std::string> got;
  for (const auto& c : changes) got.push_back(std::string(change_kind_name(c.kind)));
  EXPECT_EQ(got, (std::vector<std::string>{"grown", "shrunk", "removed", "replaced", "added", "remapped"}));
  EXPECT_TRUE(diff_mappings(before, before).empty());
}

TEST(Ranges, CoalesceSubtractIntersect) {
  RangeList a = {{0x5000, 0x6000}, {0x1000, 0x3000}, {0x3000, 0x4000}, {0x2000, 0x2800}};
  coalesce(a);
  EXPECT_EQ(a, (RangeList{{0x1000, 0x4000}, {0x5000, 0x6000}}));
  EXPECT_EQ(total_pages(a), 4u);
  RangeList b = {{0x2000, 0x3000}, {0x5000, 0x7000}};
  EXPECT_EQ(subtract(a, b), (RangeList{{0x1000, 0x2000}, {0x3000, 0x4000}}));
  EXPECT_EQ(intersect(a, b), (RangeList{{0x2000, 0x3000}, {0x5000, 0x6000}}));
  EXPECT_EQ(unite(a, b), (RangeList{{0x1000, 0x4000}, {0x5000, 0x7000}}));
  EXPECT_TRUE(contains(a, 0x3000));
  EXPECT_FALSE(contains(a, 0x4000));
  EXPECT_FALSE(contains(a, 0x0));
}

// Runs that start and end inside bytes, cover whole bytes, and stick out of
// the bitmap's span all come back exactly (clipped to the span).
TEST(Ranges, PageBitmapRoundTrip) {
  const uint64_t base = 0x100000, pages = 100;
  auto at = [&](uint64_t page) { return base + page * lm::kPageSize; };
  RangeList in = {{at(0), at(1)}, {at(3), at(29)}, {at(40), at(48)}, {at(63), at(65)}, {at(99), at(120)}};
  auto bits = to_page_bitmap(in, base, pages);
  ASSERT_EQ(bits.size(), 13u);
  EXPECT_EQ(bits[0], 0b11111001);
  EXPECT_EQ(bits[5], 0xff);
  RangeList clipped = in;
  clipped.back().end = at(100);
  EXPECT_EQ(from_page_bitmap(bits, base, pages), clipped);
  uint64_t set = 0;
  for (uint8_t b : bits) set += uint64_t(__builtin_popcount(b));
  EXPECT_EQ(set, total_pages(clipped));
  EXPECT_TRUE(from_page_bitmap(to_page_bitmap({}, base, pages), base, pages).empty());
  EXPECT_TRUE(to_page_bitmap({{at(200), at(300)}}, base, pages) == std::vector<uint8_t>(13, 0));
}

// from_page_bitmap against a page-by-page reading of random bitmaps: sparse,
// dense and all-set, sizes on and off word and byte boundaries, stray bits
// past `pages` in the last byte, a bitmap longer than `pages`.
TEST(Ranges, PageBitmapMatchesAPageByPageReading) {
  const uint64_t base = 0x7f0000000000;
  std::mt19937_64 rng(7);
  for (uint64_t pages : {1, 7, 8, 63, 64, 65, 127, 128, 129, 1000, 4096, 70001}) {
    for (unsigned density : {0u, 1u, 50u, 99u, 100u}) {
      std::vector<uint8_t> bits((pages + 7) / 8 + (pages % 3 == 0 ? 9 : 0));
      for (uint64_t i = 0; i < bits.size() * 8; i++)
        if (rng() % 100 < density) bits[i / 8] |= uint8_t(1u << (i % 8));
      RangeList expected;
      for (uint64_t i = 0; i < pages; i++)
        if (bits[i / 8] & (1u << (i % 8))) {
          if (!expected.empty() && expected.back().end == base + i * lm::kPageSize) expected.back().end += lm::kPageSize;
          else expected.push_back({base + i * lm::kPageSize, base + (i + 1) * lm::kPageSize});
        }
      EXPECT_EQ(from_page_bitmap(bits, base, pages), expected) << pages << " pages, " << density << "% set";
    }
  }
}

}  // namespace
