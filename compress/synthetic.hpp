// Synthetic page content by class, for tests and the benchmark's default
// corpora (the guest's content profiles are separate; this needs no guest).
#pragma once

#include <cstdint>
#include <random>
#include <string_view>

#include "common/error.hpp"

namespace lm::compress {

enum class Content : uint8_t {
  zero,     // all zero
  uniform,  // one random 8-byte word repeated
  words,    // small integers, pointers into a few regions, int32 arrays
  text,     // words and punctuation from a small vocabulary
  random,   // uniformly random bytes
  mixed,    // per page: 30% zero, 5% uniform, 25% words, 25% text, 15% random
};
inline constexpr Content kAllContents[] = {Content::zero, Content::uniform, Content::words,
                                           Content::text, Content::random,  Content::mixed};

std::string_view content_name(Content c);
Result<Content> parse_content(std::string_view name);

// Fills one page with content of the given kind (deterministic for a seed).
void fill_page(Content c, std::mt19937_64& rng, uint8_t* page);
// Changes `words` random 8-byte words of the page (a re-sent page).
void mutate_page(std::mt19937_64& rng, uint8_t* page, unsigned words);

}  // namespace lm::compress
