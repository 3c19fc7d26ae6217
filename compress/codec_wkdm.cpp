// wkdm: a WKdm-style word codec (Wilson & Kaplan) for pages of small
// integers and pointers. Each 32-bit word is a zero, an exact match of a
// 16-entry direct-mapped dictionary of recent words, a partial match (same
// upper 22 bits: only the low 10 bits are sent), or a miss (the whole word).
//
// Payload: header {u16 n_dict, u16 n_partial, u16 n_miss, u16 reserved=0},
// 2-bit tags for all 1024 words (256 bytes), 4-bit dictionary indices of the
// exact and partial matches, the 10-bit low parts of the partial matches as
// an LSB-first bit stream, then the missed words (little-endian). The
// section sizes follow from the header, and the header must agree with the
// tags and with the payload length exactly.
#include <bit>
#include <cstring>

#include "compress/codec.hpp"

namespace lm::compress::wkdm {
namespace {

constexpr unsigned kWords = kPageSize / 4;
constexpr size_t kHeader = 8;
constexpr size_t kTagBytes = kWords / 4;
enum Tag : uint8_t { kZero = 0, kExact = 1, kPartial = 2, kMiss = 3 };

inline unsigned slot_of(uint32_t w) { return ((w >> 10) * 2654435761u) >> 28; }

inline uint32_t load32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

template <class Popcount>
inline void count_tags_with(const uint8_t* tags, unsigned& exact, unsigned& partial, unsigned& miss, Popcount pc) {
  for (size_t off = 0; off < kTagBytes; off += 8) {
    uint64_t t;
    std::memcpy(&t, tags + off, 8);
    uint64_t lo = t & 0x5555555555555555ull, hi = (t >> 1) & 0x5555555555555555ull;
    miss += pc(lo & hi);
    partial += pc(hi & ~lo);
    exact += pc(lo & ~hi);
  }
}

// The x86-64 baseline has no popcount instruction (g++ would call
// __popcountdi2 96 times a page): use it when the CPU has it.
__attribute__((target("popcnt"))) void count_tags_popcnt(const uint8_t* tags, unsigned& e, unsigned& p,
                                                         unsigned& m) {
  count_tags_with(tags, e, p, m, [](uint64_t x) { return unsigned(__builtin_popcountll(x)); });
}

void count_tags_generic(const uint8_t* tags, unsigned& e, unsigned& p, unsigned& m) {
  count_tags_with(tags, e, p, m, [](uint64_t x) { return unsigned(std::popcount(x)); });
}

void count_tags(const uint8_t* tags, unsigned& e, unsigned& p, unsigned& m) {
  using Fn = void (*)(const uint8_t*, unsigned&, unsigned&, unsigned&);
  static const Fn fn = __builtin_cpu_supports("popcnt") ? count_tags_popcnt : count_tags_generic;
  fn(tags, e, p, m);
}

constexpr size_t payload_size(unsigned n_dict, unsigned n_partial, unsigned n_miss) {
  return kHeader + kTagBytes + (n_dict + 1) / 2 + (size_t(n_partial) * 10 + 7) / 8 + size_t(n_miss) * 4;
}

}  // namespace

size_t encode(const uint8_t* page, uint8_t* out, size_t cap) {
  uint32_t dict[16] = {};
  uint8_t tags[kWords];
  uint8_t index[kWords];
  uint16_t low[kWords];
  uint32_t miss[kWords];
  unsigned n_dict = 0, n_partial = 0, n_miss = 0;
  for (unsigned i = 0; i < kWords; i++) {
    uint32_t w = load32(page + 4 * i);
    if (w == 0) {
      tags[i] = kZero;
      continue;
    }
    unsigned s = slot_of(w);
    uint32_t d = dict[s];
    if (d == w) {
      tags[i] = kExact;
      index[n_dict++] = uint8_t(s);
    } else if (((d ^ w) >> 10) == 0) {
      tags[i] = kPartial;
      index[n_dict++] = uint8_t(s);
      low[n_partial++] = uint16_t(w & 0x3ff);
      dict[s] = w;
    } else {
      tags[i] = kMiss;
      miss[n_miss++] = w;
      dict[s] = w;
    }
  }
  size_t size = payload_size(n_dict, n_partial, n_miss);
  if (size > cap) return kDoesNotFit;

  uint8_t* p = out;
  const uint16_t header[4] = {uint16_t(n_dict), uint16_t(n_partial), uint16_t(n_miss), 0};
  std::memcpy(p, header, kHeader);
  p += kHeader;
  for (unsigned i = 0; i < kWords; i += 4)
    *p++ = uint8_t(tags[i] | tags[i + 1] << 2 | tags[i + 2] << 4 | tags[i + 3] << 6);
  index[n_dict] = 0;  // pads an odd count
  for (unsigned j = 0; j < n_dict; j += 2) *p++ = uint8_t(index[j] | index[j + 1] << 4);
  uint64_t acc = 0;
  unsigned bits = 0;
  for (unsigned j = 0; j < n_partial; j++) {
    acc |= uint64_t(low[j]) << bits;
    bits += 10;
    while (bits >= 8) {
      *p++ = uint8_t(acc);
      acc >>= 8;
      bits -= 8;
    }
  }
  if (bits) *p++ = uint8_t(acc);
  std::memcpy(p, miss, size_t(n_miss) * 4);
  p += size_t(n_miss) * 4;
  return size_t(p - out);
}

Result<void> decode(std::span<const uint8_t> in, uint8_t* dst) {
  if (in.size() < kHeader + kTagBytes || in.size() > kPageSize)
    return Error::msg(strf("wkdm payload of %zu bytes is out of range", in.size()));
  uint16_t header[4];
  std::memcpy(header, in.data(), kHeader);
  const unsigned n_dict = header[0], n_partial = header[1], n_miss = header[2];
  if (header[3] != 0 || n_dict > kWords || n_miss > kWords || n_partial > n_dict ||
      payload_size(n_dict, n_partial, n_miss) != in.size())
    return Error::msg(strf("wkdm header (dict %u, partial %u, miss %u) does not match its %zu-byte payload",
                           n_dict, n_partial, n_miss, in.size()));
  const uint8_t* tags = in.data() + kHeader;
  // Count the tags (two bits each) before trusting them.
  unsigned c_exact = 0, c_partial = 0, c_miss = 0;
  count_tags(tags, c_exact, c_partial, c_miss);
  if (c_exact + c_partial != n_dict || c_partial != n_partial || c_miss != n_miss)
    return Error::msg(strf("wkdm tags (exact %u, partial %u, miss %u) disagree with the header", c_exact,
                           c_partial, c_miss));

  const uint8_t* index = tags + kTagBytes;
  const size_t low_bytes = (size_t(n_partial) * 10 + 7) / 8;
  uint8_t low[kWords * 10 / 8 + 2] = {};  // padded copy: the bit reader loads two bytes
  std::memcpy(low, index + (n_dict + 1) / 2, low_bytes);
  const uint8_t* miss = index + (n_dict + 1) / 2 + low_bytes;

  uint32_t dict[16] = {};
  unsigned j_dict = 0, j_partial = 0, j_miss = 0;
  for (unsigned i = 0; i < kWords; i++) {
    unsigned tag = (tags[i >> 2] >> ((i & 3) * 2)) & 3;
    uint32_t w;
    switch (tag) {
      case kZero:
        w = 0;
        break;
      case kExact:
        w = dict[(index[j_dict >> 1] >> ((j_dict & 1) * 4)) & 15];
        j_dict++;
        break;
      case kPartial: {
        unsigned s = (index[j_dict >> 1] >> ((j_dict & 1) * 4)) & 15;
        j_dict++;
        size_t bit = size_t(j_partial++) * 10;
        unsigned v = unsigned(low[bit >> 3] | low[(bit >> 3) + 1] << 8) >> (bit & 7);
        w = (dict[s] & ~0x3ffu) | (v & 0x3ff);
        dict[s] = w;
        break;
      }
      default:
        w = load32(miss + 4 * size_t(j_miss++));
        dict[slot_of(w)] = w;
        break;
    }
    std::memcpy(dst + 4 * i, &w, 4);
  }
  return ok();
}

}  // namespace lm::compress::wkdm
