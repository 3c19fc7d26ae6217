// lz4: one independent LZ4 block per page. The stream state lives in the
// per-thread CodecContext; LZ4_resetStream_fast (stable API since 1.9.0)
// avoids the 16 KiB table clear that LZ4_compress_fast_extState does per call.
#include <lz4.h>

#include "compress/codec.hpp"

namespace lm::compress::lz4 {

size_t encode(CodecContext& ctx, int acceleration, const uint8_t* page, uint8_t* out, size_t cap) {
  auto* stream = static_cast<LZ4_stream_t*>(ctx.lz4_stream());
  LZ4_resetStream_fast(stream);
  int n = LZ4_compress_fast_continue(stream, reinterpret_cast<const char*>(page), reinterpret_cast<char*>(out),
                                     int(kPageSize), int(cap), acceleration);
  return n > 0 ? size_t(n) : kDoesNotFit;
}

Result<void> decode(std::span<const uint8_t> in, uint8_t* dst) {
  if (in.empty() || in.size() >= kPageSize)
    return Error::msg(strf("lz4 payload of %zu bytes is out of range", in.size()));
  int n = LZ4_decompress_safe(reinterpret_cast<const char*>(in.data()), reinterpret_cast<char*>(dst),
                              int(in.size()), int(kPageSize));
  if (n != int(kPageSize))
    return Error::msg(strf("lz4 payload of %zu bytes is corrupt (decoded %d bytes, want %zu)", in.size(), n,
                           kPageSize));
  return ok();
}

}  // namespace lm::compress::lz4
