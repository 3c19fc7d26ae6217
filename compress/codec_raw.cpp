// raw: the page itself, 4096 bytes.
#include <cstring>

#include "compress/codec.hpp"

namespace lm::compress::raw {

size_t encode(const uint8_t* page, uint8_t* out, size_t cap) {
  if (cap < kPageSize) return kDoesNotFit;
  std::memcpy(out, page, kPageSize);
  return kPageSize;
}

Result<void> decode(std::span<const uint8_t> in, uint8_t* dst) {
  if (in.size() != kPageSize)
    return Error::msg(strf("raw payload is %zu bytes, not %zu", in.size(), kPageSize));
  std::memcpy(dst, in.data(), kPageSize);
  return ok();
}

}  // namespace lm::compress::raw
