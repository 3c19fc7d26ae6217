// zero: a page of zero bytes; no payload at all.
#include <cstring>

#include "compress/codec.hpp"
#include "compress/uniform_scan.hpp"

namespace lm::compress::zero {

bool encodable(const uint8_t* page) { return is_zero_page(page); }

size_t encode(const uint8_t* page, uint8_t*, size_t) { return is_zero_page(page) ? 0 : kDoesNotFit; }

Result<void> decode(std::span<const uint8_t> in, uint8_t* dst) {
  if (!in.empty()) return Error::msg(strf("zero-page payload is %zu bytes, not 0", in.size()));
  std::memset(dst, 0, kPageSize);
  return ok();
}

}  // namespace lm::compress::zero
