// The batch API: compress with each policy, validate and decompress into
// destination pages; the classifier; the delta cache across rounds; the
// worker pool.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "common/clock.hpp"
#include "compress/adaptive.hpp"
#include "compress/classifier.hpp"
#include "compress/compressor.hpp"
#include "compress/pool.hpp"
#include "compress/synthetic.hpp"

namespace lm::compress {
namespace {

constexpr uint64_t kBase = 0x7f0000000000ull;

struct Pages {
  std::vector<uint8_t> data;
  std::vector<uint64_t> addrs;
  std::vector<const uint8_t*> ptrs;
  Pages(Content c, size_t n, uint64_t seed) : data(n * kPageSize) {
    std::mt19937_64 rng(seed);
    for (size_t i = 0; i < n; i++) {
      fill_page(c, rng, page(i));
      addrs.push_back(kBase + i * kPageSize);
      ptrs.push_back(page(i));
    }
  }
  uint8_t* page(size_t i) { return data.data() + i * kPageSize; }
  size_t size() const { return addrs.size(); }
};

// Destination memory standing for the migrated region.
struct Destination {
  std::vector<uint8_t> mem;
  DestinationMap map;
  explicit Destination(size_t pages) : mem(pages * kPageSize, 0xee) {
    EXPECT_TRUE(map.add({kBase, pages * kPageSize, mem.data()}));
  }
};

class PolicyRoundTrip : public ::testing::TestWithParam<const char*> {};

TEST_P(PolicyRoundTrip, MixedPagesArriveIntact) {
  auto c = Compressor::create(GetParam());
  ASSERT_TRUE(c) << c.error().message;
  Pages src(Content::mixed, 256, 42);
  Destination dst(src.size());
  Decompressor d;
  CompressedBatch batch;
  for (size_t at = 0; at < src.size(); at += 64) {
    ASSERT_TRUE((*c)->compress_batch({src.addrs.data() + at, 64}, {src.ptrs.data() + at, 64}, batch));
    ASSERT_EQ(batch.entries.size(), 64u);
    auto r = d.decompress_batch(batch.entries, {batch.payload.data(), batch.payload.size()}, dst.map);
    ASSERT_TRUE(r) << r.error().message;
  }
  EXPECT_EQ(0, std::memcmp(dst.mem.data(), src.data.data(), src.data.size()));
  EXPECT_EQ((*c)->stats().total().pages, src.size());
}

TEST_P(PolicyRoundTrip, ResentRoundsArriveIntact) {
  CompressorOptions opt;
  opt.link_bytes_per_s = 1.25e8;  // a slow link: the adaptive policy uses deltas too
  auto c = Compressor::create(GetParam(), opt);
  ASSERT_TRUE(c) << c.error().message;
  Pages src(Content::mixed, 128, 43);
  Destination dst(src.size());
  Decompressor d;
  std::mt19937_64 rng(5);
  for (int round = 0; round < 5; round++) {
    CompressedBatch batch;
    SendKind kind = round == 0 ? SendKind::first : SendKind::resend;
    for (size_t at = 0; at < src.size(); at += 32) {
      ASSERT_TRUE((*c)->compress_batch({src.addrs.data() + at, 32}, {src.ptrs.data() + at, 32}, batch, kind));
      auto r = d.decompress_batch(batch.entries, {batch.payload.data(), batch.payload.size()}, dst.map);
      ASSERT_TRUE(r) << r.error().message;
    }
    ASSERT_EQ(0, std::memcmp(dst.mem.data(), src.data.data(), src.data.size())) << "round " << round;
    // Dirty a third of the pages a little, and rewrite a few completely.
    for (size_t i = 0; i < src.size(); i += 3) mutate_page(rng, src.page(i), 6);
    for (size_t i = 1; i < src.size(); i += 17) fill_page(Content::mixed, rng, src.page(i));
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, PolicyRoundTrip,
                         ::testing::Values("fixed:raw", "fixed:lz4", "fixed:lz4:8", "fixed:zstd:1", "fixed:zstd:3",
                                           "fixed:wkdm", "fixed:delta", "cbc", "cbc:zstd:3", "adaptive"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& ch : n)
                             if (ch == ':') ch = '_';
                           return n;
                         });

TEST(PolicyParse, RejectsUnknownAndPayloadlessCodecs) {
  EXPECT_FALSE(parse_policy("fixed:bogus"));
  EXPECT_FALSE(parse_policy("fixed:zero"));
  EXPECT_FALSE(parse_policy("fixed:zstd:99"));
  EXPECT_FALSE(parse_policy("whatever"));
  auto p = parse_policy("fixed:zstd:7");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->fixed.codec, Codec::zstd);
  EXPECT_EQ(p->fixed.params.zstd_level, 7);
}

TEST(Classifier, RecognisesEachSyntheticClass) {
  struct Want {
    Content content;
    PageClass cls;
  } wants[] = {{Content::zero, PageClass::zero},   {Content::uniform, PageClass::uniform},
               {Content::words, PageClass::words}, {Content::text, PageClass::text},
               {Content::random, PageClass::random}};
  for (auto w : wants) {
    Pages p(w.content, 300, 9);
    unsigned right = 0;
    for (size_t i = 0; i < p.size(); i++) right += classify(p.page(i)).cls == w.cls;
    EXPECT_GE(right, 285u) << content_name(w.content) << " classified as " << class_name(w.cls) << " " << right
                           << "/300";
  }
}

TEST(CbcPolicy, MapsClassesToTheirCodecs) {
  auto c = Compressor::create("cbc");
  ASSERT_TRUE(c);
  struct Want {
    Content content;
    Codec codec;
  } wants[] = {{Content::zero, Codec::zero},
               {Content::uniform, Codec::uniform},
               {Content::words, Codec::wkdm},
               {Content::text, Codec::lz4},
               {Content::random, Codec::raw}};
  uint64_t seed = 1;
  for (auto w : wants) {
    Pages p(w.content, 32, seed++);
    // Fresh addresses per class so no page is a re-send.
    for (auto& a : p.addrs) a += seed << 32;
    CompressedBatch b;
    ASSERT_TRUE((*c)->compress_batch(p.addrs, p.ptrs, b));
    unsigned right = 0;
    for (auto& e : b.entries) right += e.codec == w.codec;
    EXPECT_GE(right, 30u) << content_name(w.content) << " -> " << codec_name(w.codec);
  }
}

// Sends src round after round (round 0 a first send), checks the
// destination after each, and returns the delta count per round.
std::vector<unsigned> send_rounds(Compressor& c, Pages& src, int rounds, unsigned mutate_words) {
  Destination dst(src.size());
  Decompressor d;
  std::mt19937_64 rng(8);
  std::vector<unsigned> deltas;
  for (int round = 0; round < rounds; round++) {
    CompressedBatch b;
    EXPECT_TRUE(c.compress_batch(src.addrs, src.ptrs, b, round == 0 ? SendKind::first : SendKind::resend));
    unsigned n = 0;
    for (auto& e : b.entries) n += e.codec == Codec::delta;
    deltas.push_back(n);
    EXPECT_TRUE(d.decompress_batch(b.entries, {b.payload.data(), b.payload.size()}, dst.map));
    EXPECT_EQ(0, std::memcmp(dst.mem.data(), src.data.data(), src.data.size())) << "round " << round;
    for (size_t i = 0; i < src.size(); i++) mutate_page(rng, src.page(i), mutate_words);
  }
  return deltas;
}

TEST(DeltaCache, ResentPagesGoAsDeltasAndMissesDoNot) {
  CompressorOptions opt;
  opt.delta_cache_pages = 64;
  auto c = Compressor::create("cbc", opt);
  ASSERT_TRUE(c);
  Pages src(Content::text, 32, 5);
  // Round 0 (first send) does not touch the cache; round 1 misses and fills
  // it; from round 2 every page is a delta.
  EXPECT_EQ(send_rounds(**c, src, 4, 4), (std::vector<unsigned>{0, 0, 32, 32}));
  EXPECT_EQ((*c)->stats().delta_misses, src.size());
  EXPECT_EQ((*c)->stats().delta_hits, 2 * src.size());
}

TEST(DeltaCache, EvictedPagesAreSentWholeAndStillArriveIntact) {
  CompressorOptions opt;
  opt.delta_cache_pages = 8;  // smaller than the 32 pages sent
  auto c = Compressor::create("fixed:delta", opt);
  ASSERT_TRUE(c);
  Pages src(Content::text, 32, 6);
  // LRU of 8 after 32 sends holds pages 24..31; in order 0..31 each page is
  // evicted before it is re-sent.
  EXPECT_EQ(send_rounds(**c, src, 4, 2), (std::vector<unsigned>{0, 0, 0, 0}));
  EXPECT_GT((*c)->delta_cache()->evictions(), 0u);
  // Re-send the 8 most recent: all hit.
  CompressedBatch b;
  ASSERT_TRUE((*c)->compress_batch({src.addrs.data() + 24, 8}, {src.ptrs.data() + 24, 8}, b, SendKind::resend));
  for (auto& e : b.entries) EXPECT_EQ(e.codec, Codec::delta);
}

TEST(DeltaCache, FirstSendDropsAnOlderVersionOfTheAddress) {
  auto c = Compressor::create("cbc");
  ASSERT_TRUE(c);
  Pages src(Content::text, 4, 12);
  send_rounds(**c, src, 3, 1);
  ASSERT_TRUE((*c)->delta_cache()->contains(src.addrs[0]));
  // The region was unmapped and mapped again: a first send of the address.
  CompressedBatch b;
  ASSERT_TRUE((*c)->compress_batch(src.addrs, src.ptrs, b, SendKind::first));
  EXPECT_FALSE((*c)->delta_cache()->contains(src.addrs[0]));
}

TEST(DeltaCache, ALastSendUsesCachedVersionsButCachesNoNewPage) {
  auto c = Compressor::create("cbc");
  ASSERT_TRUE(c);
  Pages src(Content::text, 2, 13);
  Destination dst(src.size());
  Decompressor d;
  auto send = [&](size_t from, size_t n, SendKind kind) {
    CompressedBatch b;
    EXPECT_TRUE((*c)->compress_batch({src.addrs.data() + from, n}, {src.ptrs.data() + from, n}, b, kind));
    EXPECT_TRUE(d.decompress_batch(b.entries, {b.payload.data(), b.payload.size()}, dst.map));
    return b.entries;
  };
  send(0, 2, SendKind::first);
  send(0, 1, SendKind::resend);  // page 0 cached, page 1 not
  std::mt19937_64 rng(3);
  mutate_page(rng, src.page(0), 4);
  mutate_page(rng, src.page(1), 4);
  auto last = send(0, 2, SendKind::last);
  EXPECT_EQ(last[0].codec, Codec::delta) << "a cached version is used";
  EXPECT_NE(last[1].codec, Codec::delta);
  EXPECT_FALSE((*c)->delta_cache()->contains(src.addrs[1])) << "a last send caches no new page";
  EXPECT_EQ(0, std::memcmp(dst.mem.data(), src.data.data(), src.data.size()));
}

TEST(DeltaCache, EraseRangeDropsExactlyThePagesInIt) {
  std::vector<uint8_t> page(kPageSize, 7);
  DeltaCache cache(16);
  const uint64_t base = 0x7f0000000000;
  for (uint64_t i = 0; i < 8; i++) cache.exchange(base + i * kPageSize, page.data(), [](const uint8_t*) {});
  cache.exchange(base + (1ull << 40), page.data(), [](const uint8_t*) {});
  // Page by page (4 pages, within the capacity).
  cache.erase(base + 2 * kPageSize, base + 6 * kPageSize);
  for (uint64_t i = 0; i < 8; i++) EXPECT_EQ(cache.contains(base + i * kPageSize), i < 2 || i >= 6) << i;
  // A range far larger than the cache (a removed terabyte reservation):
  // the walk over the cached pages.
  cache.erase(base + 7 * kPageSize, base + (1ull << 40));
  EXPECT_TRUE(cache.contains(base + kPageSize));
  EXPECT_FALSE(cache.contains(base + 7 * kPageSize));
  EXPECT_TRUE(cache.contains(base + (1ull << 40))) << "the end is exclusive";
  EXPECT_EQ(cache.size(), 4u);  // pages 0, 1, 6 and the far one
}

TEST(DeltaCache, ZeroedPageDropsItsCachedVersion) {
  auto c = Compressor::create("cbc");
  ASSERT_TRUE(c);
  Pages src(Content::text, 1, 2);
  Destination dst(1);
  Decompressor d;
  auto send = [&] {
    CompressedBatch b;
    EXPECT_TRUE((*c)->compress_batch(src.addrs, src.ptrs, b, SendKind::resend));
    EXPECT_TRUE(d.decompress_batch(b.entries, {b.payload.data(), b.payload.size()}, dst.map));
    return b.entries[0].codec;
  };
  send();
  EXPECT_TRUE((*c)->delta_cache()->contains(src.addrs[0]));
  std::memset(src.page(0), 0, kPageSize);
  EXPECT_EQ(send(), Codec::zero);
  std::mt19937_64 rng(1);
  fill_page(Content::text, rng, src.page(0));
  EXPECT_NE(send(), Codec::delta) << "the cache must not hold the pre-zero version";
  EXPECT_EQ(0, std::memcmp(dst.mem.data(), src.data.data(), kPageSize));
}

TEST(AdaptivePolicy, SendsRawOnAFastLinkAndCompressesOnASlowOne) {
  CompressorOptions opt;
  opt.link_bytes_per_s = 1e12;  // far beyond what one core compresses
  auto c = Compressor::create("adaptive", opt);
  ASSERT_TRUE(c);
  Pages src(Content::text, 64, 4);
  auto codecs_of = [&](uint64_t salt) {
    std::vector<uint64_t> addrs = src.addrs;
    for (auto& a : addrs) a += salt << 36;  // fresh addresses: no deltas
    CompressedBatch b;
    EXPECT_TRUE((*c)->compress_batch(addrs, src.ptrs, b));
    unsigned raw = 0;
    for (auto& e : b.entries) raw += e.codec == Codec::raw;
    return raw;
  };
  uint64_t salt = 1;
  for (int i = 0; i < 20; i++) codecs_of(salt++);
  EXPECT_EQ(codecs_of(salt++), 64u) << "fast link: raw";
  EXPECT_EQ((*c)->current_plan().by_class[unsigned(PageClass::text)].codec, Codec::raw);

  (*c)->report_link({1.25e8, true});  // a saturated 1 Gbit/s link
  EXPECT_NE((*c)->current_plan().by_class[unsigned(PageClass::text)].codec, Codec::raw);
  // Mostly compressed (the model may send a share raw to balance CPU and link).
  EXPECT_LE(codecs_of(salt++), 16u) << "slow link: compressed";

  (*c)->report_link({1e12, true});
  EXPECT_EQ(codecs_of(salt++), 64u) << "and back to raw";
}

// An all-raw plan sends the read buffer itself: raw pages stay or move into
// the places of zero and uniform pages, whose words follow them; what
// arrives is the pages as they were. On a slow link the same call returns
// the compressor's own payload.
TEST(AdaptivePolicy, AnAllRawPlanSendsTheReadBufferInPlace) {
  CompressorOptions opt;
  opt.link_bytes_per_s = 1e12;
  auto c = Compressor::create("adaptive", opt);
  ASSERT_TRUE(c);
  constexpr size_t n = 64;
  uint64_t salt = 1;
  auto send = [&](Pages& pages, std::span<std::byte>* payload_out, CompressedBatch& b) {
    std::vector<uint64_t> addrs = pages.addrs;
    for (auto& a : addrs) a += salt << 36;  // fresh addresses: no deltas
    salt++;
    std::vector<uint8_t> before = pages.data;
    auto payload = (*c)->compress_batch_in(addrs, std::as_writable_bytes(std::span{pages.data}), b, SendKind::first);
    EXPECT_TRUE(payload) << payload.error().message;
    if (!payload) return false;
    *payload_out = *payload;
    std::vector<uint8_t> mem(n * kPageSize, 0xee);
    DestinationMap map;
    EXPECT_TRUE(map.add({kBase + ((salt - 1) << 36), n * kPageSize, mem.data()}));
    Decompressor d;
    auto r = d.decompress_batch(b.entries, {reinterpret_cast<const uint8_t*>(payload->data()), payload->size()}, map);
    EXPECT_TRUE(r) << r.error().message;
    return mem == before;
  };
  CompressedBatch b;
  std::span<std::byte> payload;
  for (int i = 0; i < 20; i++) {  // learn: an all-raw plan
    Pages warm(Content::text, n, 40 + i);
    ASSERT_TRUE(send(warm, &payload, b));
  }
  ASSERT_EQ((*c)->current_plan().by_class[unsigned(PageClass::text)].codec, Codec::raw);
  Pages src(Content::text, n, 4);
  std::memset(src.page(3), 0, kPageSize);
  std::memset(src.page(10), 0x42, kPageSize);
  std::memset(src.page(n - 1), 0, kPageSize);  // beyond the raw pages' places: stays out
  ASSERT_TRUE(send(src, &payload, b)) << "pages arrive as they were";
  const auto* buf = reinterpret_cast<const std::byte*>(src.data.data());
  EXPECT_EQ(payload.data(), buf) << "the payload is the read buffer";
  EXPECT_EQ(payload.size(), (n - 3) * kPageSize + 8);
  EXPECT_TRUE(b.payload.empty());
  ASSERT_EQ(b.entries.size(), n);
  unsigned raw = 0;
  for (auto& e : b.entries) raw += e.codec == Codec::raw;
  EXPECT_EQ(raw, n - 3);

  (*c)->report_link({1.25e8, true});  // slow: compress
  Pages slow(Content::text, n, 5);
  ASSERT_TRUE(send(slow, &payload, b));
  EXPECT_EQ(payload.data(), reinterpret_cast<const std::byte*>(b.payload.data())) << "the compressor's payload";
  raw = 0;
  for (auto& e : b.entries) raw += e.codec == Codec::raw;
  EXPECT_LE(raw, 16u) << "mostly compressed";
  EXPECT_LT(payload.size(), n * kPageSize);
}

// The model fed by hand: 64 words pages measured with raw (300 ns, a whole
// page on the wire) and wkdm (2.2 us, 1000 bytes); the other candidates far
// too slow to matter.
void feed_words(AdaptiveModel& m) {
  Feedback fb;
  fb.class_pages[unsigned(PageClass::words)] = 64;
  const std::array<std::pair<uint64_t, uint64_t>, kCandidates> ns_bytes = {
      {{300, kPageSize + 16}, {50000, 2000}, {50000, 2000}, {90000, 800}, {2200, 1000}}};
  for (unsigned k = 0; k < kCandidates; k++)
    fb.by_class[unsigned(PageClass::words)][k] = {64, 64 * ns_bytes[k].second, 64 * ns_bytes[k].first};
  m.feed(fb);
}

// A window in which the link held the senders back, at `bytes_per_s`.
LinkReport saturated_window(double bytes_per_s) {
  LinkReport r;
  r.bytes_per_s = bytes_per_s;
  r.saturated = true;
  return r;
}

// The share of words pages the plan sends with wkdm.
double wkdm_share(const Plan& p) {
  const unsigned w = unsigned(PageClass::words);
  double share = p.by_class[w].codec == Codec::wkdm ? 1.0 : 0.0;
  if (p.alt_fraction[w] > 0)
    share = p.alt[w].codec == Codec::wkdm ? p.alt_fraction[w] : share * (1 - p.alt_fraction[w]);
  return share;
}

// On one host the destination decodes on the same CPUs: wkdm, which decodes
// about as slowly as it encodes, must win fewer pages than across two hosts.
TEST(AdaptivePolicy, OnOneHostTheDestinationsDecodingCounts) {
  AdaptiveModel two_hosts(1, 1e9, false, false), one_host(1, 1e9, false, true);
  feed_words(two_hosts);
  feed_words(one_host);
  const double apart = wkdm_share(two_hosts.plan()), together = wkdm_share(one_host.plan());
  EXPECT_GT(apart, 0.6);
  EXPECT_LT(together, apart - 0.15);
}

// The senders' reports, measured on raw batches: a saturated link sets the
// estimate; an unsaturated one only raises it, to at least what the CPUs
// send raw (the senders were not held back, so the link is at least that
// fast), so neither a slower CPU-bound window nor a plan that compresses
// more, and so sends less, makes the link look slower.
TEST(AdaptivePolicy, OnlyASaturatedLinkLowersTheEstimate) {
  AdaptiveModel m(1, 1e9, false);
  feed_words(m);  // raw: ~300 ns per 4112 wire bytes, ~13.5 GB/s of one CPU
  EXPECT_GT(wkdm_share(m.plan()), 0.5) << "the prior 1 GB/s link: mostly wkdm";
  LinkReport r;
  r.bytes_per_s = 2e8;
  r.saturated = false;
  m.report_link(r);
  EXPECT_GT(m.link_bytes_per_s(), 1.2e10) << "raised to what the CPU sends raw";
  EXPECT_LT(m.link_bytes_per_s(), 1.5e10);
  EXPECT_EQ(wkdm_share(m.plan()), 0.0);
  r.bytes_per_s = 3e10;
  m.report_link(r);
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 3e10);
  r.bytes_per_s = 2e8;
  r.saturated = true;
  m.report_link(r);
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 2e8);
  EXPECT_GT(wkdm_share(m.plan()), 0.9);
}

// Once a saturated window has measured the link, an unsaturated raw one
// (a sender that fell short for a while) raises the estimate only to the
// rate it measured, not to what the CPUs send raw.
TEST(AdaptivePolicy, AMeasuredLinkIsRaisedOnlyToWhatWasMeasured) {
  AdaptiveModel m(1, 1e9, false);
  feed_words(m);
  LinkReport r = saturated_window(2e8);
  r.acked = true;
  m.report_link(r);
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 2e8);
  r.saturated = false;
  r.bytes_per_s = 1.5e8;
  m.report_link(r);
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 2e8) << "an unsaturated window does not lower it";
  r.bytes_per_s = 2.5e8;
  m.report_link(r);
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 2.5e8) << "nor raise it past what it measured";
  EXPECT_GT(wkdm_share(m.plan()), 0.9);
}

// Until a report measured on raw batches, the plan is raw; a report from
// compressed batches (the destination may be what held them back) does not
// end it.
TEST(AdaptivePolicy, ProbesTheLinkWithRawBatchesFirst) {
  AdaptiveModel m(1, 1e8, false);  // a slow link: compressing pays
  feed_words(m);
  EXPECT_GT(wkdm_share(m.plan()), 0.9);
  m.probe_link_first();
  EXPECT_EQ(wkdm_share(m.plan()), 0.0);
  LinkReport compressed = saturated_window(1e8);
  compressed.raw_window = false;
  m.report_link(compressed);
  EXPECT_EQ(wkdm_share(m.plan()), 0.0) << "still probing";
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 1e8) << "the prior: compressed batches do not set the link";
  compressed.bytes_per_s = 5e9;
  compressed.saturated = false;
  m.report_link(compressed);
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 1e8) << "nor raise it";
  // Raw windows: the first ones may still fill growing socket buffers, so
  // the probe ends when two in a row agree within 10%, on the lower.
  LinkReport raw = saturated_window(1.5e8);
  m.report_link(raw);
  EXPECT_EQ(wkdm_share(m.plan()), 0.0) << "one window is not enough";
  raw.bytes_per_s = 1.05e8;
  m.report_link(raw);
  EXPECT_EQ(wkdm_share(m.plan()), 0.0) << "1.5e8 then 1.05e8 do not agree";
  raw.bytes_per_s = 1e8;
  m.report_link(raw);
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 1e8);
  EXPECT_GT(wkdm_share(m.plan()), 0.9);
}

// Within 100 ms of a change of codecs the socket buffers fill or drain at
// the new rate: a raw window begun then measures nothing of the link.
TEST(AdaptivePolicy, AWindowBegunJustAfterAPlanChangeDoesNotMeasureTheLink) {
  AdaptiveModel m(1, 1e8, false);
  feed_words(m);
  m.probe_link_first();  // the plan changes: to raw
  LinkReport raw = saturated_window(3e8);
  raw.since_ns = now_ns();
  m.report_link(raw);
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 1e8) << "too soon after the change";
  EXPECT_EQ(wkdm_share(m.plan()), 0.0) << "still probing";
  raw.since_ns = now_ns() + 150'000'000;  // a window begun 150 ms on
  m.report_link(raw);
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 3e8);
}

// Counted in bytes the peer acknowledged, a window does not include what
// growing socket buffers took: one saturated raw window ends the probe, even
// one begun just after the plan changed.
TEST(AdaptivePolicy, OneSaturatedWindowOfAcknowledgedBytesEndsTheProbe) {
  AdaptiveModel m(1, 1e9, false);
  feed_words(m);
  m.probe_link_first();
  EXPECT_EQ(wkdm_share(m.plan()), 0.0);
  LinkReport raw = saturated_window(1e8);
  raw.acked = true;
  raw.since_ns = now_ns();
  m.report_link(raw);
  EXPECT_DOUBLE_EQ(m.link_bytes_per_s(), 1e8);
  EXPECT_GT(wkdm_share(m.plan()), 0.9) << "the probe is over";
}

// Where the host's idle CPUs are known, the CPU share is the CPUs the plan
// kept busy delivering its pages plus those idle, whether or not the plan
// fell short: at half the predicted pages with nothing idle, half the CPUs;
// with one CPU of two idle besides, all of them again.
TEST(AdaptivePolicy, TheCpuShareIsWhatThePlanKeptBusyAndWhatWasIdle) {
  AdaptiveModel m(2, 1e12, false);  // no link limit: raw, bound by CPU
  feed_words(m);
  const double predicted = m.predicted_pages_per_s();
  ASSERT_GT(predicted, 0);
  LinkReport r;
  r.pages_per_s = predicted / 2;
  r.since_ns = now_ns();
  r.idle_cpus = 0;
  r.held_back = true;  // counted all the same: the idle CPUs tell
  for (int i = 0; i < 30; i++) m.report_link(r);
  EXPECT_NEAR(m.predicted_pages_per_s(), predicted / 2, predicted * 0.05);
  r.idle_cpus = 1;
  for (int i = 0; i < 30; i++) m.report_link(r);
  EXPECT_NEAR(m.predicted_pages_per_s(), predicted, predicted * 0.05);
}

// A split (words: wkdm, some pages raw where the CPU would otherwise leave
// the link idle) must gain 5% to begin, and once begun stays while it gains
// at all: in between, the plan flipped every few milliseconds.
TEST(AdaptivePolicy, ASplitBegunStaysWhileItGains) {
  // wkdm: 2200 ns and 1000 bytes a page; raw: 300 ns and 4112 bytes (and
  // the classifying a split needs). At 0.62 GB/s the best split sends ~11%
  // of the words pages raw and gains less than 5%; at 1 GB/s, more.
  AdaptiveModel fresh(1, 0.62e9, false);
  feed_words(fresh);
  EXPECT_DOUBLE_EQ(wkdm_share(fresh.plan()), 1.0) << "not enough to begin a split";
  AdaptiveModel m(1, 1e9, false);
  feed_words(m);
  EXPECT_LT(wkdm_share(m.plan()), 0.85);
  LinkReport r = saturated_window(0.62e9);
  m.report_link(r);
  EXPECT_LT(wkdm_share(m.plan()), 0.95) << "the split still gains: it stays";
  EXPECT_GT(wkdm_share(m.plan()), 0.85);
  r.bytes_per_s = 0.45e9;  // wkdm alone leaves the link idle no longer
  m.report_link(r);
  EXPECT_DOUBLE_EQ(wkdm_share(m.plan()), 1.0);
}

// Bound by CPU, a plan that delivers half the pages it predicts gets half
// the CPUs it counted on, and no less however many reports say so.
TEST(AdaptivePolicy, ACpuBoundPlanLearnsTheCpuShareItGets) {
  AdaptiveModel m(1, 1e12, false);  // no link limit: raw, bound by CPU
  feed_words(m);
  const double predicted = m.predicted_pages_per_s();
  ASSERT_GT(predicted, 0);
  LinkReport r;
  r.bytes_per_s = 1e9;
  r.pages_per_s = predicted / 2;
  r.since_ns = now_ns();
  for (int i = 0; i < 30; i++) m.report_link(r);
  EXPECT_NEAR(m.predicted_pages_per_s(), predicted / 2, predicted * 0.05);
  // Senders held back in the channel were not short of CPU: no lesson.
  AdaptiveModel held(1, 1e12, false);
  feed_words(held);
  r.held_back = true;
  for (int i = 0; i < 30; i++) held.report_link(r);
  EXPECT_DOUBLE_EQ(held.predicted_pages_per_s(), predicted);
  r.held_back = false;
  // A window that began before the plan changed tells nothing of it.
  AdaptiveModel fresh(1, 1e12, false);
  feed_words(fresh);
  r.since_ns = 0;
  fresh.report_link(r);
  EXPECT_DOUBLE_EQ(fresh.predicted_pages_per_s(), predicted);
}

// A words model on a link with room to spare sends raw until a CPU cost per
// wire byte of 10 ns (41 us per raw page, 10 us per wkdm page) is reported
// in `field`, `reports` times: then wkdm. Returns that report.
LinkReport cost_per_byte_turns_raw_to_wkdm(AdaptiveModel& m, double LinkReport::*field, int reports) {
  feed_words(m);
  EXPECT_EQ(wkdm_share(m.plan()), 0.0) << "no cost per byte: raw";
  LinkReport r;
  r.*field = 10.0;
  for (int i = 0; i < reports; i++) m.report_link(r);
  EXPECT_GT(wkdm_share(m.plan()), 0.9);
  return r;
}

// Pushing a byte through the transport costs the senders CPU (on veth or
// loopback most of the network stack): where that cost is high, fewer bytes
// save CPU, and compressing pays even on a link with room to spare. Costs
// fed by hand: measured ones depend on the build (under ASan wkdm's text
// pages cost less than raw's instrumented copy, and the plan stayed wkdm).
TEST(AdaptivePolicy, TheSendPathsCpuCountsPerWireByte) {
  AdaptiveModel m(1, 1e12, false);
  LinkReport r = cost_per_byte_turns_raw_to_wkdm(m, &LinkReport::send_cpu_ns_per_byte, 1);
  // A higher figure later (a compressing plan's small messages) does not
  // replace a lower one; a lower one does.
  r.send_cpu_ns_per_byte = 50.0;
  m.report_link(r);
  EXPECT_DOUBLE_EQ(m.send_cpu_ns_per_byte(), 10.0);
  r.send_cpu_ns_per_byte = 0.01;
  m.report_link(r);
  EXPECT_EQ(wkdm_share(m.plan()), 0.0);
}

// The network stack's work outside the senders' calls (the host's softirq
// time per byte acknowledged) is CPU per wire byte too: where it is high,
// compressing pays on a link with room to spare.
TEST(AdaptivePolicy, TheHostsSoftirqTimeCountsPerWireByte) {
  AdaptiveModel m(1, 1e12, false);
  LinkReport r = cost_per_byte_turns_raw_to_wkdm(m, &LinkReport::softirq_ns_per_byte, 10);
  r.softirq_ns_per_byte = 0;
  for (int i = 0; i < 20; i++) m.report_link(r);
  EXPECT_EQ(wkdm_share(m.plan()), 0.0) << "averaged over windows: it comes down again";
}

TEST(AdaptivePolicy, ZeroPagesAreAlwaysZero) {
  CompressorOptions opt;
  opt.link_bytes_per_s = 1e12;
  auto c = Compressor::create("adaptive", opt);
  ASSERT_TRUE(c);
  Pages src(Content::zero, 16, 1);
  CompressedBatch b;
  ASSERT_TRUE((*c)->compress_batch(src.addrs, src.ptrs, b));
  for (auto& e : b.entries) EXPECT_EQ(e.codec, Codec::zero);
  EXPECT_TRUE(b.payload.empty());
}

TEST(BatchValidation, RejectsInconsistentEntries) {
  std::vector<uint8_t> payload(kPageSize);
  std::vector<PageEntry> e = {{kBase, uint32_t(kPageSize), Codec::raw, 0, 0}};
  EXPECT_TRUE(validate_batch(e, payload.size()));
  EXPECT_FALSE(validate_batch(e, payload.size() - 1)) << "lengths must sum to the payload";
  e[0].addr = kBase + 1;
  EXPECT_FALSE(validate_batch(e, payload.size())) << "unaligned address";
  e[0].addr = kBase;
  e[0].codec = Codec(9);
  EXPECT_FALSE(validate_batch(e, payload.size())) << "unknown codec";
  e[0].codec = Codec::zero;
  EXPECT_FALSE(validate_batch(e, payload.size())) << "zero page with a payload";
  e[0] = {kBase, 8, Codec::uniform, 1, 0};
  EXPECT_FALSE(validate_batch(e, 8)) << "reserved flags";
}

TEST(BatchValidation, RejectsPagesOutsideTheDestination) {
  Destination dst(4);
  Decompressor d;
  std::vector<uint8_t> payload;
  std::vector<PageEntry> e = {{kBase + 4 * kPageSize, 0, Codec::zero, 0, 0}};
  auto r = d.decompress_batch(e, payload, dst.map);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("outside the destination"), std::string::npos) << r.error().message;
  DestinationMap m;
  EXPECT_TRUE(m.add({kBase, kPageSize * 2, dst.mem.data()}));
  EXPECT_FALSE(m.add({kBase + kPageSize, kPageSize, dst.mem.data()})) << "overlap";
}

TEST(CompressPool, TwoWorkersCompressBatchesConcurrently) {
  auto pool = CompressPool::create("cbc", 2);
  ASSERT_TRUE(pool);
  Pages src(Content::mixed, 512, 77);
  Destination dst(src.size());
  std::vector<std::future<Result<CompressedBatch>>> futures;
  for (size_t at = 0; at < src.size(); at += 64) {
    BatchJob job;
    job.addrs.assign(src.addrs.begin() + long(at), src.addrs.begin() + long(at + 64));
    job.pages.assign(src.ptrs.begin() + long(at), src.ptrs.begin() + long(at + 64));
    futures.push_back((*pool)->submit(std::move(job)));
  }
  Decompressor d;
  for (auto& f : futures) {
    auto r = f.get();
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_TRUE(d.decompress_batch(r->entries, {r->payload.data(), r->payload.size()}, dst.map));
  }
  EXPECT_EQ(0, std::memcmp(dst.mem.data(), src.data.data(), src.data.size()));
  EXPECT_EQ((*pool)->stats().total().pages, src.size());
}

}  // namespace
}  // namespace lm::compress
