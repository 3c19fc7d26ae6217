// The cheap per-page classifier of the CBC policy (after MECOM): a zero /
// uniform test over the whole page (vectorised, stops early), then a sample
// of 16 words from 8 cache lines for word similarity (share of words that
// are small integers, pointers sharing their upper half with a neighbouring
// sampled word, or repeats) and a cheap entropy test on the same 128 bytes:
// random bytes have bit 7 set in half of them and almost no zero bytes;
// text has no high bytes, structured binary data has many zero bytes.
// A few SWAR operations per word: ~20-40 ns per page when it is in cache.
#pragma once

#include <cstdint>
#include <string_view>

namespace lm::compress {

enum class PageClass : uint8_t {
  zero = 0,
  uniform = 1,
  words = 2,   // high word similarity: small integers, pointers
  text = 3,    // low similarity, low entropy: text, code, mixed structures
  random = 4,  // high entropy: compressed, encrypted, random
  resent = 5,  // a re-sent page whose previous version is in the delta cache
};
inline constexpr unsigned kClassCount = 6;

constexpr std::string_view class_name(PageClass c) {
  switch (c) {
    case PageClass::zero: return "zero";
    case PageClass::uniform: return "uniform";
    case PageClass::words: return "words";
    case PageClass::text: return "text";
    case PageClass::random: return "random";
    case PageClass::resent: return "resent";
  }
  return "unknown";
}

struct PageFeatures {
  PageClass cls = PageClass::random;
  uint64_t word = 0;         // the repeated word of a uniform page
  uint8_t similar = 0;       // sampled words (of kSampleWords) that are word-like
  uint8_t high_bytes = 0;    // sampled bytes with bit 7 set (of 8 * kSampleWords)
  uint8_t zero_bytes = 0;    // sampled bytes equal to zero
};

inline constexpr unsigned kSampleWords = 16;
// Thresholds: at least this many similar sampled words is 'words'; at least
// kRandomHighBytes high bytes (64 expected of 128 for random bytes) and at
// most kRandomZeroBytes zero bytes (0.5 expected) is 'random'.
inline constexpr unsigned kWordsThreshold = 10;
inline constexpr unsigned kRandomHighBytes = 40;
inline constexpr unsigned kRandomZeroBytes = 6;

// Zero / uniform test only; cls is zero, uniform, or text when neither (the
// caller did not ask for the sample).
PageFeatures classify_uniform(const uint8_t* page);
// Full classification: zero, uniform, words, text or random.
PageFeatures classify(const uint8_t* page);
// The sampled part alone (for a page already known not to be uniform).
PageFeatures classify_sample(const uint8_t* page);

}  // namespace lm::compress
