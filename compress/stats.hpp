// Counters per codec and per page class, for the results JSON: pages, bytes
// in and out (payload; the 16-byte entry is counted separately), CPU time.
#pragma once

#include <array>
#include <cstdint>

#include "common/page_batch.hpp"
#include "compress/classifier.hpp"

namespace lm {
class JsonWriter;
}

namespace lm::compress {

// Pages compressed by a fixed policy are not classified: they count here.
inline constexpr unsigned kUnclassified = kClassCount;
inline constexpr unsigned kStatClasses = kClassCount + 1;

struct CodecCounters {
  uint64_t pages = 0;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  uint64_t ns = 0;
  CodecCounters& operator+=(const CodecCounters& o) {
    pages += o.pages;
    bytes_in += o.bytes_in;
    bytes_out += o.bytes_out;
    ns += o.ns;
    return *this;
  }
};

struct CompressStats {
  // [codec actually sent][class]
  std::array<std::array<CodecCounters, kStatClasses>, kCodecCount> by_codec_class{};
  uint64_t fallbacks_to_raw = 0;  // pages whose chosen codec did not pay
  uint64_t delta_hits = 0;        // re-sent pages found in the delta cache
  uint64_t delta_misses = 0;      // pages not in the cache (first send, evicted)
  uint64_t explore_pages = 0;     // adaptive's trial compressions
  uint64_t explore_ns = 0;

  CodecCounters total() const;
  CodecCounters codec_total(Codec c) const;
  CompressStats& operator+=(const CompressStats& o);
  // "compression": {"pages":..,"bytes-in":..,"bytes-out":..,"ratio":..,"codecs":{..}}
  void write_json(JsonWriter& w, const char* key = "compression") const;
};

struct DecompressStats {
  std::array<CodecCounters, kCodecCount> by_codec{};
  DecompressStats& operator+=(const DecompressStats& o) {
    for (unsigned c = 0; c < kCodecCount; c++) by_codec[c] += o.by_codec[c];
    return *this;
  }
};

}  // namespace lm::compress
