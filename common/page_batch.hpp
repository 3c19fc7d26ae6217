// How a batch of pages looks between compress/ and transport/: one entry per
// page (address, codec, payload length) plus the payloads concatenated in
// entry order. PageEntry is also the wire layout (little-endian, x86_64).
#pragma once

#include <cstdint>
#include <string_view>
#include <type_traits>

namespace lm {

// Codec identifiers as they appear on the wire. Never renumber.
enum class Codec : uint8_t {
  raw = 0,      // 4096 bytes of payload
  zero = 1,     // no payload
  uniform = 2,  // one 8-byte word repeated over the page
  lz4 = 3,
  zstd = 4,
  wkdm = 5,     // word codec for small integers / pointers
  delta = 6,    // XOR + run-length against the previously sent version
};
inline constexpr unsigned kCodecCount = 7;

constexpr std::string_view codec_name(Codec c) {
  switch (c) {
    case Codec::raw: return "raw";
    case Codec::zero: return "zero";
    case Codec::uniform: return "uniform";
    case Codec::lz4: return "lz4";
    case Codec::zstd: return "zstd";
    case Codec::wkdm: return "wkdm";
    case Codec::delta: return "delta";
  }
  return "unknown";
}

struct PageEntry {
  uint64_t addr;    // page-aligned virtual address in the migrated process
  uint32_t length;  // payload bytes for this page (0 for zero pages)
  Codec codec;
  uint8_t flags;    // reserved, 0
  uint16_t reserved;
};
static_assert(sizeof(PageEntry) == 16);
static_assert(std::is_trivially_copyable_v<PageEntry>);

}  // namespace lm
