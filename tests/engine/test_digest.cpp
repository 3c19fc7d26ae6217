// Verification digests (engine/digest.hpp): sparse page hashes, and the
// canonical entries both sides produce for ranges that are mostly zero pages.
#include <gtest/gtest.h>

#include <array>
#include <map>

#include "engine/digest.hpp"

namespace lm::engine {
namespace {

constexpr uint64_t kBase = 1ull << 44;
constexpr PageRange kHuge{kBase, kBase + (1ull << 40)};  // 1 TiB: 256 Ki chunks

std::array<uint8_t, kPageSize> page_of(uint8_t byte) {
  std::array<uint8_t, kPageSize> p;
  p.fill(byte);
  return p;
}

// The source's side of the same memory: chunk -> its page hashes, absent for zero-only chunks.
std::vector<transport::DigestEntry> source_digests(PageRange range, const std::map<uint64_t, uint64_t>& pages) {
  std::map<uint64_t, std::vector<uint64_t>> chunks;
  for (auto [addr, hash] : pages) {
    const uint64_t page = (addr - range.start) >> kPageShift;
    auto& c = chunks[page / kDigestChunkPages];
    if (c.empty()) c.assign(kDigestChunkPages, zero_page_hash());
    c[page % kDigestChunkPages] = hash;
  }
  std::vector<transport::DigestEntry> out;
  canonical_digests(range, [&](uint64_t chunk) -> const uint64_t* {
    auto it = chunks.find(chunk);
    return it == chunks.end() ? nullptr : it->second.data();
  }, out);
  return out;
}

TEST(PageHashes, ATerabyteRangeWithThreePagesIsAFewEntries) {
  PageHashes hashes({kHuge});
  const auto a = page_of(1), b = page_of(2);
  const std::map<uint64_t, uint64_t> written{{kBase + 5 * kPageSize, page_hash(a.data())},
                                             {kBase + (300ull << 20), page_hash(b.data())},
                                             {kHuge.end - kPageSize, page_hash(a.data())}};
  for (auto [addr, hash] : written) ASSERT_TRUE(hashes.set(addr, hash));
  EXPECT_FALSE(hashes.set(kHuge.end, 1)) << "outside every range";
  const auto mine = hashes.digests();
  EXPECT_LE(mine.size(), 5u) << "zero chunks between the written ones are merged";
  auto pages = compare_digests(source_digests(kHuge, written), mine);
  ASSERT_TRUE(pages.ok()) << pages.error().message;
  EXPECT_EQ(*pages, kHuge.pages());
}

TEST(PageHashes, AZeroPageWrittenMatchesAnUntouchedOne) {
  PageHashes hashes({kHuge});
  const auto zero = page_of(0);
  ASSERT_TRUE(hashes.set(kBase + (64ull << 20), page_hash(zero.data())));
  const auto mine = hashes.digests();
  EXPECT_EQ(mine.size(), 1u) << "one run of zero chunks";
  EXPECT_TRUE(compare_digests(source_digests(kHuge, {}), mine).ok());
}

TEST(PageHashes, ADifferentPageIsNamed) {
  PageHashes hashes({kHuge});
  const auto a = page_of(1), b = page_of(2);
  const uint64_t at = kBase + (300ull << 20);
  ASSERT_TRUE(hashes.set(at, page_hash(a.data())));
  auto r = compare_digests(source_digests(kHuge, {{at, page_hash(b.data())}}), hashes.digests());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find(strf("0x%llx", (unsigned long long)at)), std::string::npos) << r.error().message;
  // A page the source has and the destination never received: also a difference.
  EXPECT_FALSE(compare_digests(source_digests(kHuge, {{at, page_hash(a.data())}, {kBase, page_hash(b.data())}}),
                               hashes.digests())
                   .ok());
}

TEST(PageHashes, ReceivedBytesCountDistinctPagesOfCountedRangesAndTheirChunks) {
  const PageRange counted{kBase, kBase + (64ull << 20)}, not_counted{kBase + (1ull << 30), kBase + (1ull << 31)};
  PageHashes hashes({});
  hashes.add(counted, true);
  hashes.add(not_counted, false);
  EXPECT_EQ(hashes.received_bytes(), 0u);
  hashes.mark(kBase);
  const uint64_t one = hashes.received_bytes();
  EXPECT_GT(one, kPageSize) << "a page and its chunk's bookkeeping";
  hashes.mark(kBase);
  ASSERT_TRUE(hashes.set(kBase, 7));
  EXPECT_EQ(hashes.received_bytes(), one) << "the same page again";
  hashes.mark(kBase + kPageSize);
  EXPECT_EQ(hashes.received_bytes(), one + kPageSize) << "a second page of the same chunk";
  hashes.mark(not_counted.start);
  EXPECT_EQ(hashes.received_bytes(), one + kPageSize) << "a range committed up front is not charged";
}

}  // namespace
}  // namespace lm::engine
