// Decoders fed truncated, corrupted and random payloads: an error or a page,
// never a crash or a write outside the destination (guard pages; run the
// sanitizer build for the rest).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "compress/codec.hpp"
#include "compress/synthetic.hpp"
#include "guarded_page.hpp"

namespace lm::compress {
namespace {

using testing::GuardedBuffer;
using testing::GuardedPage;

// A valid payload of the codec for some page of the content.
std::vector<uint8_t> valid_payload(Codec codec, Content content, uint64_t seed, CodecContext& ctx) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> page(kPageSize), previous(kPageSize), out(kMaxPayload);
  fill_page(content, rng, page.data());
  previous = page;
  mutate_page(rng, previous.data(), 20);
  if (codec == Codec::zero) return {};
  if (codec == Codec::uniform) return std::vector<uint8_t>(8, 0x11);
  size_t len = encode_page(codec, {}, ctx, page.data(), previous.data(), out.data(), out.size());
  if (len == kDoesNotFit) return {};
  out.resize(len);
  return out;
}

// Decodes from a buffer that ends at a guard page.
Result<void> decode_guarded(Codec codec, CodecContext& ctx, const std::vector<uint8_t>& payload) {
  GuardedBuffer in(payload.size());
  if (!payload.empty()) std::memcpy(in.data(), payload.data(), payload.size());
  GuardedPage dst;
  std::memset(dst.data(), 0x77, kPageSize);
  return decode_page(codec, ctx, {in.data(), in.size()}, dst.data());
}

class DecoderRobustness : public ::testing::TestWithParam<Codec> {};

TEST_P(DecoderRobustness, RejectsEveryTruncation) {
  Codec codec = GetParam();
  CodecContext ctx;
  for (Content content : {Content::words, Content::text}) {
    auto payload = valid_payload(codec, content, 11, ctx);
    if (payload.empty()) continue;
    ASSERT_TRUE(decode_guarded(codec, ctx, payload)) << "the untouched payload decodes";
    for (size_t n = 0; n < payload.size(); n++) {
      std::vector<uint8_t> cut(payload.begin(), payload.begin() + long(n));
      auto r = decode_guarded(codec, ctx, cut);
      // A delta cut at a run boundary is a shorter valid delta; every other
      // codec knows its exact length.
      if (codec != Codec::delta) {
        EXPECT_FALSE(r) << codec_name(codec) << " accepted a cut to " << n << " bytes";
      }
    }
  }
}

TEST_P(DecoderRobustness, SurvivesBitFlipsAndOverwrites) {
  Codec codec = GetParam();
  CodecContext ctx;
  std::mt19937_64 rng(99);
  for (Content content : {Content::words, Content::text}) {
    auto payload = valid_payload(codec, content, 5, ctx);
    if (payload.empty()) continue;
    for (int iter = 0; iter < 2000; iter++) {
      auto bad = payload;
      unsigned edits = 1 + unsigned(rng() % 4);
      for (unsigned e = 0; e < edits; e++) {
        size_t at = rng() % bad.size();
        if (rng() & 1) bad[at] ^= uint8_t(1u << (rng() % 8));
        else bad[at] = uint8_t(rng());
      }
      (void)decode_guarded(codec, ctx, bad);  // any answer but a crash
    }
  }
}

TEST_P(DecoderRobustness, RejectsOrSurvivesRandomPayloads) {
  Codec codec = GetParam();
  CodecContext ctx;
  std::mt19937_64 rng(1234);
  unsigned accepted = 0;
  for (int iter = 0; iter < 3000; iter++) {
    std::vector<uint8_t> junk(rng() % (kPageSize + 64));
    for (auto& b : junk) b = uint8_t(rng());
    if (decode_guarded(codec, ctx, junk)) accepted++;
  }
  // Only raw (any 4096 bytes), uniform (any 8 bytes) and delta (runs) have
  // formats that random bytes can hit by chance; the compressed formats
  // must refuse nearly everything.
  if (codec == Codec::lz4 || codec == Codec::zstd || codec == Codec::wkdm) {
    EXPECT_LT(accepted, 30u);
  }
}

TEST(DecoderLengths, FixedLengthCodecsRejectOtherLengths) {
  CodecContext ctx;
  std::vector<uint8_t> one(1, 0), page(kPageSize, 0), over(kPageSize + 1, 0);
  EXPECT_FALSE(decode_guarded(Codec::zero, ctx, one));
  EXPECT_FALSE(decode_guarded(Codec::uniform, ctx, one));
  EXPECT_FALSE(decode_guarded(Codec::raw, ctx, one));
  EXPECT_FALSE(decode_guarded(Codec::raw, ctx, over));
  EXPECT_TRUE(decode_guarded(Codec::raw, ctx, page));
  EXPECT_FALSE(decode_guarded(Codec::lz4, ctx, page));
  EXPECT_FALSE(decode_guarded(Codec::zstd, ctx, page));
}

TEST(DeltaDecoder, RejectsRunsLeavingThePage) {
  CodecContext ctx;
  // skip 4095, length 2: one byte past the end.
  std::vector<uint8_t> past = {0xff, 0x1f, 0x02, 0xaa, 0xbb};
  EXPECT_FALSE(decode_guarded(Codec::delta, ctx, past));
  // skip 4095, length 1: the last byte, fine.
  std::vector<uint8_t> last = {0xff, 0x1f, 0x01, 0xaa};
  EXPECT_TRUE(decode_guarded(Codec::delta, ctx, last));
  // zero-length run and a three-byte varint are malformed.
  EXPECT_FALSE(decode_guarded(Codec::delta, ctx, {0x00, 0x00}));
  EXPECT_FALSE(decode_guarded(Codec::delta, ctx, {0x80, 0x80, 0x01, 0x01, 0xaa}));
}

INSTANTIATE_TEST_SUITE_P(AllDecoders, DecoderRobustness,
                         ::testing::Values(Codec::raw, Codec::zero, Codec::uniform, Codec::lz4, Codec::zstd,
                                           Codec::wkdm, Codec::delta),
                         [](const auto& info) { return std::string(codec_name(info.param)); });

}  // namespace
}  // namespace lm::compress
