// Page codecs: one file per codec (codec_<name>.cpp), one per-thread context
// that owns the reusable library state (an LZ4 stream, zstd contexts), and a
// switch-based dispatch so the per-page hot path has no virtual call.
//
// Encoders write at most `cap` bytes and return the payload length, or
// kDoesNotFit when the page does not fit (the caller then sends it raw); a
// payload may be empty (zero pages, an unchanged page's delta). Decoders validate
// their whole input and write exactly one page into dst, never outside it;
// a truncated, corrupted or foreign payload is an error naming the codec.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "common/error.hpp"
#include "common/page.hpp"
#include "common/page_batch.hpp"

namespace lm::compress {

// Codec parameters that change the encoding effort but never the format.
struct CodecParams {
  int lz4_acceleration = 1;  // 1 = LZ4 default; larger is faster, weaker
  int zstd_level = 1;
};

// Reusable per-thread library state (a fresh zstd context costs ~15 µs, more
// than compressing a page). Not thread-safe: one per worker thread.
class CodecContext {
 public:
  CodecContext();
  ~CodecContext();
  CodecContext(const CodecContext&) = delete;
  CodecContext& operator=(const CodecContext&) = delete;

  void* lz4_stream();  // LZ4_stream_t*
  void* zstd_cctx();   // ZSTD_CCtx*
  void* zstd_dctx();   // ZSTD_DCtx*

 private:
  struct State;
  std::unique_ptr<State> s_;
};

// Largest payload any encoder produces for one page (raw).
inline constexpr size_t kMaxPayload = kPageSize;
inline constexpr size_t kDoesNotFit = SIZE_MAX;

// Encodes one page with `codec`; returns the payload length, or kDoesNotFit
// when it does not fit in cap or the codec cannot encode this page (zero on a
// non-zero page, delta without a previous version). `previous` is the last-sent version of the page (delta only).
size_t encode_page(Codec codec, const CodecParams& params, CodecContext& ctx, const uint8_t* page,
                   const uint8_t* previous, uint8_t* out, size_t cap);

// Decodes one payload into dst (exactly kPageSize bytes). For delta, dst must
// already hold the previously sent version: the delta is applied in place.
Result<void> decode_page(Codec codec, CodecContext& ctx, std::span<const uint8_t> payload, uint8_t* dst);

// Per-codec entry points (codec_<name>.cpp).
namespace raw {
size_t encode(const uint8_t* page, uint8_t* out, size_t cap);
Result<void> decode(std::span<const uint8_t> in, uint8_t* dst);
}  // namespace raw
namespace zero {
size_t encode(const uint8_t* page, uint8_t* out, size_t cap);  // 0 for a zero page
bool encodable(const uint8_t* page);
Result<void> decode(std::span<const uint8_t> in, uint8_t* dst);
}  // namespace zero
namespace uniform {
inline constexpr size_t kPayload = 8;
// Encodes a page known to be one repeated word (the classifier found it).
size_t encode_word(uint64_t word, uint8_t* out, size_t cap);
size_t encode(const uint8_t* page, uint8_t* out, size_t cap);  // checks the page
Result<void> decode(std::span<const uint8_t> in, uint8_t* dst);
}  // namespace uniform
namespace lz4 {
size_t encode(CodecContext& ctx, int acceleration, const uint8_t* page, uint8_t* out, size_t cap);
Result<void> decode(std::span<const uint8_t> in, uint8_t* dst);
}  // namespace lz4
namespace zstd {
size_t encode(CodecContext& ctx, int level, const uint8_t* page, uint8_t* out, size_t cap);
Result<void> decode(CodecContext& ctx, std::span<const uint8_t> in, uint8_t* dst);
}  // namespace zstd
namespace wkdm {
size_t encode(const uint8_t* page, uint8_t* out, size_t cap);
Result<void> decode(std::span<const uint8_t> in, uint8_t* dst);
}  // namespace wkdm
namespace delta {
// XOR of page and previous, as (skip, length, literal XOR bytes) runs.
size_t encode(const uint8_t* page, const uint8_t* previous, uint8_t* out, size_t cap);
// XORs the runs into dst, which holds the previous version.
Result<void> decode(std::span<const uint8_t> in, uint8_t* dst);
}  // namespace delta

}  // namespace lm::compress
