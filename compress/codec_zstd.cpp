// zstd: one frame per page, compressed with the worker's reused ZSTD_CCtx at
// the policy's level; decoded with a reused ZSTD_DCtx whose window is capped
// so a hostile frame cannot make it allocate a large window.
#include <zstd.h>

#include "compress/codec.hpp"

namespace lm::compress::zstd {

size_t encode(CodecContext& ctx, int level, const uint8_t* page, uint8_t* out, size_t cap) {
  size_t n = ZSTD_compressCCtx(static_cast<ZSTD_CCtx*>(ctx.zstd_cctx()), out, cap, page, kPageSize, level);
  return ZSTD_isError(n) ? kDoesNotFit : n;
}

Result<void> decode(CodecContext& ctx, std::span<const uint8_t> in, uint8_t* dst) {
  if (in.empty() || in.size() >= kPageSize)
    return Error::msg(strf("zstd payload of %zu bytes is out of range", in.size()));
  size_t n = ZSTD_decompressDCtx(static_cast<ZSTD_DCtx*>(ctx.zstd_dctx()), dst, kPageSize, in.data(), in.size());
  if (ZSTD_isError(n))
    return Error::msg(strf("zstd payload of %zu bytes is corrupt: %s", in.size(), ZSTD_getErrorName(n)));
  if (n != kPageSize)
    return Error::msg(strf("zstd payload of %zu bytes decodes to %zu bytes, not %zu", in.size(), n, kPageSize));
  return ok();
}

}  // namespace lm::compress::zstd
