#include "compress/codec.hpp"

#include <lz4.h>
#include <zstd.h>

namespace lm::compress {

struct CodecContext::State {
  LZ4_stream_t* lz4 = LZ4_createStream();
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_DCtx* dctx = [] {
    ZSTD_DCtx* d = ZSTD_createDCtx();
    // A page frame needs a 4 KiB window; refuse frames that ask for more.
    if (d) ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 14);
    return d;
  }();
  ~State() {
    LZ4_freeStream(lz4);
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
  }
};

CodecContext::CodecContext() : s_(std::make_unique<State>()) {}
CodecContext::~CodecContext() = default;
void* CodecContext::lz4_stream() { return s_->lz4; }
void* CodecContext::zstd_cctx() { return s_->cctx; }
void* CodecContext::zstd_dctx() { return s_->dctx; }

size_t encode_page(Codec codec, const CodecParams& params, CodecContext& ctx, const uint8_t* page,
                   const uint8_t* previous, uint8_t* out, size_t cap) {
  switch (codec) {
    case Codec::raw: return raw::encode(page, out, cap);
    case Codec::zero: return zero::encode(page, out, cap);
    case Codec::uniform: return uniform::encode(page, out, cap);
    case Codec::lz4: return lz4::encode(ctx, params.lz4_acceleration, page, out, cap);
    case Codec::zstd: return zstd::encode(ctx, params.zstd_level, page, out, cap);
    case Codec::wkdm: return wkdm::encode(page, out, cap);
    case Codec::delta: return previous ? delta::encode(page, previous, out, cap) : kDoesNotFit;
  }
  return kDoesNotFit;
}

Result<void> decode_page(Codec codec, CodecContext& ctx, std::span<const uint8_t> payload, uint8_t* dst) {
  switch (codec) {
    case Codec::raw: return raw::decode(payload, dst);
    case Codec::zero: return zero::decode(payload, dst);
    case Codec::uniform: return uniform::decode(payload, dst);
    case Codec::lz4: return lz4::decode(payload, dst);
    case Codec::zstd: return zstd::decode(ctx, payload, dst);
    case Codec::wkdm: return wkdm::decode(payload, dst);
    case Codec::delta: return delta::decode(payload, dst);
  }
  return Error::msg(strf("unknown codec id %u", unsigned(codec)));
}

}  // namespace lm::compress
