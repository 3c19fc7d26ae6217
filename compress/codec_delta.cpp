// delta: XOR against the previously sent version of the page, run-length
// coded (after QEMU's XBZRLE, which codes runs of unchanged bytes and new
// bytes; XOR lets the decoder patch the destination page in place).
// Payload: repeated {varint skip, varint length, length XOR bytes}; varints
// are LEB128 of at most two bytes. Runs are non-empty, in order, and stay
// inside the page. An empty payload means the page did not change.
#include <bit>
#include <cstring>

#include "compress/codec.hpp"

namespace lm::compress::delta {
namespace {

constexpr unsigned kWords = kPageSize / 8;

inline uint8_t* put_varint(uint8_t* p, unsigned v) {
  if (v < 0x80) {
    *p++ = uint8_t(v);
  } else {
    *p++ = uint8_t(v | 0x80);
    *p++ = uint8_t(v >> 7);
  }
  return p;
}

// Reads a varint of at most two bytes; false when truncated or too long.
inline bool get_varint(const uint8_t*& p, const uint8_t* end, unsigned& v) {
  if (p == end) return false;
  v = *p++;
  if (v < 0x80) return true;
  if (p == end || *p >= 0x80) return false;
  v = (v & 0x7f) | unsigned(*p++) << 7;
  return true;
}

}  // namespace

size_t encode(const uint8_t* page, const uint8_t* previous, uint8_t* out, size_t cap) {
  uint64_t x[kWords];
  for (unsigned i = 0; i < kWords; i++) {
    uint64_t a, b;
    std::memcpy(&a, page + 8 * i, 8);
    std::memcpy(&b, previous + 8 * i, 8);
    x[i] = a ^ b;
  }
  uint8_t* p = out;
  const uint8_t* end = out + cap;
  unsigned pos = 0;
  for (unsigned i = 0; i < kWords;) {
    if (x[i] == 0) {
      i++;
      continue;
    }
    unsigned j = i + 1;
    while (j < kWords && x[j] != 0) j++;
    // Trim the zero bytes at both ends of the run (little-endian words).
    unsigned start = 8 * i + unsigned(std::countr_zero(x[i])) / 8;
    unsigned stop = 8 * j - unsigned(std::countl_zero(x[j - 1])) / 8;
    unsigned len = stop - start;
    if (size_t(end - p) < 4 + size_t(len)) return kDoesNotFit;
    p = put_varint(p, start - pos);
    p = put_varint(p, len);
    std::memcpy(p, reinterpret_cast<const uint8_t*>(x) + start, len);
    p += len;
    pos = stop;
    i = j;
  }
  return size_t(p - out);
}

Result<void> decode(std::span<const uint8_t> in, uint8_t* dst) {
  const uint8_t* p = in.data();
  const uint8_t* end = p + in.size();
  size_t pos = 0;
  while (p != end) {
    unsigned skip, len;
    if (!get_varint(p, end, skip) || !get_varint(p, end, len))
      return Error::msg(strf("delta payload truncated in a run header at payload offset %zu", size_t(p - in.data())));
    if (len == 0 || pos + skip + len > kPageSize)
      return Error::msg(strf("delta run (skip %u, length %u) at page offset %zu leaves the page", skip, len, pos));
    if (size_t(end - p) < len)
      return Error::msg(strf("delta payload truncated: run of %u bytes, %zu left", len, size_t(end - p)));
    pos += skip;
    for (unsigned k = 0; k < len; k++) dst[pos + k] ^= p[k];
    p += len;
    pos += len;
  }
  return ok();
}

}  // namespace lm::compress::delta
