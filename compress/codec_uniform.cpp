// uniform: a page of one repeated 8-byte word (memset patterns, filled
// arrays); the payload is that word.
#include <cstring>

#include "compress/codec.hpp"
#include "compress/uniform_scan.hpp"

namespace lm::compress::uniform {

size_t encode_word(uint64_t word, uint8_t* out, size_t cap) {
  if (cap < kPayload) return kDoesNotFit;
  std::memcpy(out, &word, kPayload);
  return kPayload;
}

size_t encode(const uint8_t* page, uint8_t* out, size_t cap) {
  auto w = uniform_word(page);
  return w ? encode_word(*w, out, cap) : kDoesNotFit;
}

Result<void> decode(std::span<const uint8_t> in, uint8_t* dst) {
  if (in.size() != kPayload)
    return Error::msg(strf("uniform payload is %zu bytes, not %zu", in.size(), kPayload));
  uint64_t w;
  std::memcpy(&w, in.data(), kPayload);
  for (size_t off = 0; off < kPageSize; off += 8) std::memcpy(dst + off, &w, 8);
  return ok();
}

}  // namespace lm::compress::uniform
