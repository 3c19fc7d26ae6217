// Round trip of every codec on every content class and on edge cases.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "compress/codec.hpp"
#include "compress/synthetic.hpp"
#include "compress/uniform_scan.hpp"
#include "guarded_page.hpp"

namespace lm::compress {
namespace {

using testing::GuardedPage;

enum class Shape { zero, uniform, words, text, random, first_byte, last_byte, small_change };
constexpr Shape kShapes[] = {Shape::zero,       Shape::uniform,  Shape::words,        Shape::text,
                             Shape::random,     Shape::first_byte, Shape::last_byte, Shape::small_change};

const char* shape_name(Shape s) {
  switch (s) {
    case Shape::zero: return "zero";
    case Shape::uniform: return "uniform";
    case Shape::words: return "words";
    case Shape::text: return "text";
    case Shape::random: return "random";
    case Shape::first_byte: return "first_byte_nonzero";
    case Shape::last_byte: return "last_byte_nonzero";
    case Shape::small_change: return "small_change";
  }
  return "?";
}

// The page and (for delta) its previous version.
void make(Shape s, uint64_t seed, std::vector<uint8_t>& page, std::vector<uint8_t>& previous) {
  std::mt19937_64 rng(seed);
  page.assign(kPageSize, 0);
  previous.assign(kPageSize, 0);
  switch (s) {
    case Shape::zero: break;
    case Shape::uniform: fill_page(Content::uniform, rng, page.data()); break;
    case Shape::words: fill_page(Content::words, rng, page.data()); break;
    case Shape::text: fill_page(Content::text, rng, page.data()); break;
    case Shape::random:
      fill_page(Content::random, rng, page.data());
      fill_page(Content::random, rng, previous.data());
      return;
    case Shape::first_byte: page[0] = 0x5a; break;
    case Shape::last_byte: page[kPageSize - 1] = 0xa5; break;
    case Shape::small_change:
      fill_page(Content::text, rng, page.data());
      previous = page;
      mutate_page(rng, page.data(), 5);
      page[kPageSize - 1] ^= 1;
      return;
  }
  previous = page;
  if (s != Shape::zero) mutate_page(rng, previous.data(), 3);
}

class CodecRoundTrip : public ::testing::TestWithParam<std::tuple<Codec, Shape>> {};

TEST_P(CodecRoundTrip, DecodesToTheSamePage) {
  auto [codec, shape] = GetParam();
  CodecContext ctx;
  for (uint64_t seed = 1; seed <= 8; seed++) {
    std::vector<uint8_t> page, previous;
    make(shape, seed, page, previous);
    std::vector<uint8_t> out(kMaxPayload);
    for (int level : {1, 3}) {
      CodecParams params;
      params.zstd_level = level;
      params.lz4_acceleration = level;
      size_t len = encode_page(codec, params, ctx, page.data(), previous.data(), out.data(), out.size());
      bool encodable = true;
      if (codec == Codec::zero) encodable = is_zero_page(page.data());
      if (codec == Codec::uniform) encodable = uniform_word(page.data()).has_value();
      if (!encodable) {
        EXPECT_EQ(len, kDoesNotFit) << "seed " << seed;
        continue;
      }
      if (len == kDoesNotFit) {
        // Compressors may decline incompressible pages only; text is
        // incompressible for a word codec.
        bool text_like = shape == Shape::text || shape == Shape::small_change;
        EXPECT_TRUE(shape == Shape::random || (codec == Codec::wkdm && text_like))
            << codec_name(codec) << " declined a " << shape_name(shape) << " page";
        continue;
      }
      ASSERT_LE(len, kMaxPayload);
      GuardedPage dst;
      if (codec == Codec::delta) std::memcpy(dst.data(), previous.data(), kPageSize);
      else std::memset(dst.data(), 0xcc, kPageSize);
      auto r = decode_page(codec, ctx, {out.data(), len}, dst.data());
      ASSERT_TRUE(r) << r.error().message;
      ASSERT_EQ(0, std::memcmp(dst.data(), page.data(), kPageSize))
          << codec_name(codec) << " " << shape_name(shape) << " seed " << seed;
    }
  }
}

TEST(CodecCapacity, EveryEncoderDeclinesWhenOneByteShort) {
  CodecContext ctx;
  unsigned checked = 0;
  for (Codec codec : {Codec::raw, Codec::uniform, Codec::lz4, Codec::zstd, Codec::wkdm, Codec::delta}) {
    for (Shape shape : kShapes) {
      std::vector<uint8_t> page, previous;
      make(shape, 7, page, previous);
      std::vector<uint8_t> out(kMaxPayload);
      size_t full = encode_page(codec, {}, ctx, page.data(), previous.data(), out.data(), out.size());
      if (full == kDoesNotFit || full == 0) continue;  // nothing to shrink
      // One byte short of what it needs: it must decline, not overrun.
      std::vector<uint8_t> small(full - 1);
      EXPECT_EQ(kDoesNotFit, encode_page(codec, {}, ctx, page.data(), previous.data(), small.data(), small.size()))
          << codec_name(codec) << " " << shape_name(shape);
      checked++;
    }
  }
  EXPECT_GT(checked, 30u);
}

std::string param_name(const ::testing::TestParamInfo<std::tuple<Codec, Shape>>& info) {
  return std::string(codec_name(std::get<0>(info.param))) + "_" + shape_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(AllCodecsAllShapes, CodecRoundTrip,
                         ::testing::Combine(::testing::Values(Codec::raw, Codec::zero, Codec::uniform, Codec::lz4,
                                                              Codec::zstd, Codec::wkdm, Codec::delta),
                                            ::testing::ValuesIn(kShapes)),
                         param_name);

TEST(UniformScan, FindsTheWordAndRejectsAOneByteDifference) {
  std::vector<uint8_t> page(kPageSize);
  for (size_t off = 0; off < kPageSize; off += 8) std::memcpy(&page[off], "ABCDEFGH", 8);
  auto w = uniform_word(page.data());
  ASSERT_TRUE(w);
  EXPECT_EQ(0, std::memcmp(&*w, "ABCDEFGH", 8));
  for (size_t at : {size_t(1), size_t(255), size_t(256), size_t(2049), kPageSize - 1}) {
    page[at] ^= 0x40;
    EXPECT_FALSE(uniform_word(page.data())) << "difference at " << at;
    page[at] ^= 0x40;
  }
  std::vector<uint8_t> zero(kPageSize, 0);
  EXPECT_TRUE(is_zero_page(zero.data()));
}

TEST(WkdmCodec, CompressesSmallIntegerPagesBetterThanHalf) {
  std::mt19937_64 rng(3);
  std::vector<uint8_t> page(kPageSize), out(kMaxPayload);
  uint64_t* w = reinterpret_cast<uint64_t*>(page.data());
  for (size_t i = 0; i < kPageSize / 8; i++) w[i] = rng() % 1000;
  size_t len = wkdm::encode(page.data(), out.data(), out.size());
  ASSERT_NE(len, kDoesNotFit);
  EXPECT_LT(len, kPageSize / 2);
}

}  // namespace
}  // namespace lm::compress
