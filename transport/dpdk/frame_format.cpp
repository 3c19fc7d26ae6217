#include "transport/dpdk/frame_format.hpp"

#include <xxhash.h>

namespace lm::dpdk {

uint32_t checksum32_avx2(const void* data, size_t len);  // checksum_avx2.cpp

namespace {
uint32_t checksum32_generic(const void* data, size_t len) { return uint32_t(XXH3_64bits(data, len)); }
using ChecksumFn = uint32_t (*)(const void*, size_t);
ChecksumFn pick_checksum() { return __builtin_cpu_supports("avx2") ? checksum32_avx2 : checksum32_generic; }
}  // namespace

// Same xxh3 value whichever implementation runs, so peers may differ.
uint32_t checksum32(const void* data, size_t len) {
  static const ChecksumFn fn = pick_checksum();  // constant after first use
  return fn(data, len);
}

void seal_header(FrameHeader& h) {
  h.header_sum = 0;
  h.header_sum = checksum32(&h, sizeof(h));
}

bool header_valid(const FrameHeader& h) {
  if (h.magic != kFrameMagic || h.version != kProtocolVersion) return false;
  FrameHeader copy = h;
  copy.header_sum = 0;
  return checksum32(&copy, sizeof(copy)) == h.header_sum;
}

}  // namespace lm::dpdk
