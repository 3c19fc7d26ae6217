// Vectorised "is this page one repeated 8-byte word?" test (zero pages are
// the word 0). Runs on every page before anything else, so it must be far
// cheaper than any codec: AVX2 when the CPU has it (~27 GB/s on a uniform page
// here), and it stops at the first differing 256-byte block on the others.
#pragma once

#include <cstdint>
#include <optional>

namespace lm::compress {

// The repeated word when the page is uniform, nothing otherwise.
std::optional<uint64_t> uniform_word(const uint8_t* page);

// Copies the page to dst (kPageSize bytes) and tests it in the same pass:
// for pages that will most likely be sent raw, the test is then nearly free.
std::optional<uint64_t> copy_page_uniform_word(uint8_t* dst, const uint8_t* page);

inline bool is_zero_page(const uint8_t* page) {
  auto w = uniform_word(page);
  return w && *w == 0;
}

}  // namespace lm::compress
