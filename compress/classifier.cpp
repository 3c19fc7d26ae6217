#include "compress/classifier.hpp"

#include <bit>
#include <cstring>

#include "common/page.hpp"
#include "compress/uniform_scan.hpp"

namespace lm::compress {

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
  // One word from each 256-byte block, at a varying offset inside the block.
  uint64_t w[kSampleWords];
  for (unsigned i = 0; i < kSampleWords; i++)
    std::memcpy(&w[i], page + i * (kPageSize / kSampleWords) + ((i * 40) & 0xf8), 8);
  unsigned similar = 0;
  uint64_t seen[4] = {};
  for (unsigned i = 0; i < kSampleWords; i++) {
    uint64_t v = w[i];
    uint64_t prev = w[(i + kSampleWords - 1) % kSampleWords];
    uint64_t next = w[(i + 1) % kSampleWords];
    bool small = (v >> 16) == 0 || (~v >> 16) == 0;                      // small int, 64-bit
    bool small32 = ((v >> 16) & 0xffff) == 0 && (v >> 48) == 0;          // two small 32-bit ints
    bool pointer = (v >> 48) == 0 && ((v ^ prev) >> 32 == 0 || (v ^ next) >> 32 == 0);
    similar += unsigned(small | small32 | pointer | (v == prev));
    for (unsigned b = 0; b < 8; b++) {
      unsigned byte = unsigned(v >> (8 * b)) & 0xff;
      seen[byte >> 6] |= uint64_t(1) << (byte & 63);
    }
  }
  PageFeatures f;
  f.similar = uint8_t(similar);
  f.distinct = uint8_t(std::popcount(seen[0]) + std::popcount(seen[1]) + std::popcount(seen[2]) +
                       std::popcount(seen[3]));
  if (similar >= kWordsThreshold) f.cls = PageClass::words;
  else if (f.distinct >= kRandomThreshold) f.cls = PageClass::random;
  else f.cls = PageClass::text;
  return f;
}

PageFeatures classify(const uint8_t* page) {
  PageFeatures f = classify_uniform(page);
  if (f.cls == PageClass::zero || f.cls == PageClass::uniform) return f;
  return classify_sample(page);
}

}  // namespace lm::compress
