#include "compress/uniform_scan.hpp"

#include <immintrin.h>

#include <cstring>

#include "common/page.hpp"

namespace lm::compress {
namespace {

uint64_t first_word(const uint8_t* page) {
  uint64_t w;
  std::memcpy(&w, page, 8);
  return w;
}

bool uniform_scalar(const uint8_t* page, uint64_t w) {
  for (size_t off = 0; off < kPageSize; off += 64) {
    uint64_t diff = 0;
    for (size_t i = 0; i < 64; i += 8) {
      uint64_t v;
      std::memcpy(&v, page + off + i, 8);
      diff |= v ^ w;
    }
    if (diff) return false;
  }
  return true;
}

__attribute__((target("avx2"))) bool uniform_avx2(const uint8_t* page, uint64_t w) {
  const __m256i pattern = _mm256_set1_epi64x(int64_t(w));
  // The first block is checked alone: most non-uniform pages differ there.
  for (size_t off = 0; off < kPageSize; off += 256) {
    const __m256i* p = reinterpret_cast<const __m256i*>(page + off);
    __m256i d0 = _mm256_or_si256(_mm256_xor_si256(_mm256_loadu_si256(p + 0), pattern),
                                 _mm256_xor_si256(_mm256_loadu_si256(p + 1), pattern));
    __m256i d1 = _mm256_or_si256(_mm256_xor_si256(_mm256_loadu_si256(p + 2), pattern),
                                 _mm256_xor_si256(_mm256_loadu_si256(p + 3), pattern));
    __m256i d2 = _mm256_or_si256(_mm256_xor_si256(_mm256_loadu_si256(p + 4), pattern),
                                 _mm256_xor_si256(_mm256_loadu_si256(p + 5), pattern));
    __m256i d3 = _mm256_or_si256(_mm256_xor_si256(_mm256_loadu_si256(p + 6), pattern),
                                 _mm256_xor_si256(_mm256_loadu_si256(p + 7), pattern));
    __m256i d = _mm256_or_si256(_mm256_or_si256(d0, d1), _mm256_or_si256(d2, d3));
    if (!_mm256_testz_si256(d, d)) return false;
  }
  return true;
}

bool copy_uniform_scalar(uint8_t* dst, const uint8_t* page, uint64_t w) {
  std::memcpy(dst, page, kPageSize);
  return uniform_scalar(page, w);
}

__attribute__((target("avx2"))) bool copy_uniform_avx2(uint8_t* dst, const uint8_t* page, uint64_t w) {
  const __m256i pattern = _mm256_set1_epi64x(int64_t(w));
  __m256i acc = _mm256_setzero_si256();
  for (size_t off = 0; off < kPageSize; off += 128) {
    const __m256i* p = reinterpret_cast<const __m256i*>(page + off);
    __m256i* d = reinterpret_cast<__m256i*>(dst + off);
    __m256i v0 = _mm256_loadu_si256(p + 0), v1 = _mm256_loadu_si256(p + 1);
    __m256i v2 = _mm256_loadu_si256(p + 2), v3 = _mm256_loadu_si256(p + 3);
    _mm256_storeu_si256(d + 0, v0);
    _mm256_storeu_si256(d + 1, v1);
    _mm256_storeu_si256(d + 2, v2);
    _mm256_storeu_si256(d + 3, v3);
    acc = _mm256_or_si256(acc, _mm256_or_si256(_mm256_xor_si256(v0, pattern), _mm256_xor_si256(v1, pattern)));
    acc = _mm256_or_si256(acc, _mm256_or_si256(_mm256_xor_si256(v2, pattern), _mm256_xor_si256(v3, pattern)));
  }
  return _mm256_testz_si256(acc, acc);
}

using UniformFn = bool (*)(const uint8_t*, uint64_t);
using CopyUniformFn = bool (*)(uint8_t*, const uint8_t*, uint64_t);

UniformFn pick() { return __builtin_cpu_supports("avx2") ? uniform_avx2 : uniform_scalar; }
CopyUniformFn pick_copy() { return __builtin_cpu_supports("avx2") ? copy_uniform_avx2 : copy_uniform_scalar; }

}  // namespace

std::optional<uint64_t> uniform_word(const uint8_t* page) {
  static const UniformFn fn = pick();  // immutable after first use
  uint64_t w = first_word(page);
  if (fn(page, w)) return w;
  return std::nullopt;
}

std::optional<uint64_t> copy_page_uniform_word(uint8_t* dst, const uint8_t* page) {
  static const CopyUniformFn fn = pick_copy();  // immutable after first use
  uint64_t w = first_word(page);
  if (fn(dst, page, w)) return w;
  return std::nullopt;
}

}  // namespace lm::compress
