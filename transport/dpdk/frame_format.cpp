#include "transport/dpdk/frame_format.hpp"

#include <xxhash.h>

namespace lm::dpdk {

uint32_t checksum32(const void* data, size_t len) {
  return uint32_t(XXH3_64bits(data, len));
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
