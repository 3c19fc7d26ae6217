#include "compress/classifier.hpp"

#include <bit>
#include <cstring>

#include "common/page.hpp"
#include "compress/uniform_scan.hpp"

namespace lm::compress {
namespace {

// Number of bytes of x with bit 7 set, for x whose other bits are clear.
inline unsigned byte_flag_sum(uint64_t x) { return unsigned(((x >> 7) * 0x0101010101010101ull) >> 56); }

}  // namespace

PageFeatures classify_uniform(const uint8_t* page) {
  PageFeatures f;
  if (auto w = uniform_word(page)) {
    f.cls = *w == 0 ? PageClass::zero : PageClass::uniform;
    f.word = *w;
  } else {
    f.cls = PageClass::text;
  }
  return f;
}

PageFeatures classify_sample(const uint8_t* page) {
  // Two words from each of eight cache lines spread over the page: few
  // lines touched (a cold page costs a cache miss per line), several regions.
  uint64_t w[kSampleWords];
  for (unsigned i = 0; i < kSampleWords; i++)
    std::memcpy(&w[i], page + (i / 2) * (kPageSize / 8) + 256 + (i & 1) * 24, 8);
  constexpr uint64_t kHigh = 0x8080808080808080ull, kLow7 = 0x7f7f7f7f7f7f7f7full;
  unsigned similar = 0, high = 0, zero = 0;
  for (unsigned i = 0; i < kSampleWords; i++) {
    uint64_t v = w[i];
    uint64_t prev = w[(i + kSampleWords - 1) % kSampleWords];
    uint64_t next = w[(i + 1) % kSampleWords];
    bool small = (v >> 16) == 0 || (~v >> 16) == 0;                      // small int, 64-bit
    bool small32 = ((v >> 16) & 0xffff) == 0 && (v >> 48) == 0;          // two small 32-bit ints
    bool pointer = (v >> 48) == 0 && ((v ^ prev) >> 32 == 0 || (v ^ next) >> 32 == 0);
    similar += unsigned(small | small32 | pointer | (v == prev));
    // Per-byte flags in bit 7, summed by a multiply (the x86-64 baseline has
    // no popcount instruction; the library fallback costs ~12 operations).
    high += byte_flag_sum(v & kHigh);
    zero += byte_flag_sum(~(((v & kLow7) + kLow7) | v | kLow7));  // exact zero bytes
  }
  PageFeatures f;
  f.similar = uint8_t(similar);
  f.high_bytes = uint8_t(high);
  f.zero_bytes = uint8_t(zero);
  if (similar >= kWordsThreshold) f.cls = PageClass::words;
  else if (high >= kRandomHighBytes && zero <= kRandomZeroBytes) f.cls = PageClass::random;
  else f.cls = PageClass::text;
  return f;
}

PageFeatures classify(const uint8_t* page) {
  PageFeatures f = classify_uniform(page);
  if (f.cls == PageClass::zero || f.cls == PageClass::uniform) return f;
  return classify_sample(page);
}

}  // namespace lm::compress
