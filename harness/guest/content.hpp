// Page content of the synthetic guest: a deterministic function of
// (seed, page index, version, content class, write mode), so that `verify`
// can regenerate every page and a lost write is detected. The compression
// benchmarks reuse fill_page() to build corpora of each content profile.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/error.hpp"
#include "common/page.hpp"

namespace lm::guest {

// What a page holds. A profile is either one class for every page or `mixed`,
// where each page has its own class (fixed for the page's lifetime).
enum class ContentClass : uint32_t { zero = 0, text = 1, ints = 2, random = 3 };
enum class ContentProfile : uint32_t { zero = 0, text = 1, ints = 2, random = 3, mixed = 4 };
// page: every write regenerates the whole page; word: after the first write of
// a page, a write changes one word (plus the page's stamp word).
enum class WriteMode : uint32_t { page = 0, word = 1 };

inline constexpr size_t kWordsPerPage = kPageSize / sizeof(uint64_t);

Result<ContentProfile> parse_content_profile(std::string_view name);
Result<WriteMode> parse_write_mode(std::string_view name);
std::string_view content_profile_name(ContentProfile p);
std::string_view content_class_name(ContentClass c);
std::string_view write_mode_name(WriteMode m);

// The class a page of this profile holds (mixed: ~30% zero, 30% small
// integers/pointers, 25% text, 15% random, chosen per page from the seed).
ContentClass page_class(ContentProfile profile, uint64_t seed, uint64_t page_index);

// The page's stamp word (word 0 of every written page): changes with every
// version and is never 0, so a lost write is visible even on a zero-class page.
uint64_t page_stamp(uint64_t seed, uint64_t page_index, uint64_t version);

// Writes the full content of page `page_index` at `version` (4096 bytes) into
// `out`. Version 0 is a never-written page: all zeros.
void fill_page(void* out, ContentProfile profile, WriteMode mode, uint64_t seed, uint64_t page_index,
               uint64_t version);

// Page content without the stamp word (a pure corpus page of one class);
// `key` selects the instance (any 64-bit value).
void fill_class_page(void* out, ContentClass cls, uint64_t key);

// Turns a page holding version `version - 1` into `version` with the fewest
// stores the write mode allows. Stores go to `page` in order: content first,
// the stamp word last. For version 1 or page mode this is a full fill_page.
void write_page_version(void* page, ContentProfile profile, WriteMode mode, uint64_t seed,
                        uint64_t page_index, uint64_t version);

}  // namespace lm::guest
