#include "harness/guest/content.hpp"

#include <cstring>

namespace lm::guest {

namespace {

constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

uint64_t version_key(uint64_t seed, uint64_t page_index, uint64_t version) {
  return mix64(seed ^ mix64(page_index * kGolden + 0x1234567) ^ mix64(version + 0x5bd1e995ull));
}

// Eight bytes of English-like text per word; a small, skewed vocabulary makes
// pages compress like real text (repeated fragments at 8-byte granularity).
constexpr char kTextTokens[64][9] = {
    "the page", " of the ", "memory, ", "and the ", "process ", "in a vm ", "to be co", "pied by ",
    "migrate ", "source. ", "dirty bi", "t is set", " when a ", "write hi", "ts the p", "age.\n   ",
    "Linux ke", "rnel: mm", "ap(2), m", "remap(2)", " returns", " -1 and ", "errno is", " set to ",
    "EINVAL. ", "<div cla", "ss=\"row\"", "></div>\n", "{\"key\": ", "\"value\",", " \"id\": 4", "2, \"ok\":",
    " true}, ", "SELECT *", " FROM t ", "WHERE id", " = ?;\n  ", "int main", "(void) {", "\n  retur",
    "n 0;\n}\n ", "        ", "        ", "        ", "the the ", "a an is ", "it was a", " dark an",
    "d stormy", " night, ", "and then", " nothing", " happene", "d at all", ". Again.", "\r\n\r\n    ",
    "lorem ip", "sum dolo", "r sit am", "et, cons", "ectetur ", "adipisci", "ng elit.", "        "};

uint64_t class_word(ContentClass cls, uint64_t key, size_t index) {
  if (cls == ContentClass::zero) return 0;
  uint64_t h = mix64(key + index * kGolden);
  switch (cls) {
    case ContentClass::zero:
      return 0;
    case ContentClass::random:
      return h;
    case ContentClass::text: {
      // AND of two uniform 6-bit values skews towards small token indices.
      unsigned token = unsigned(h & 63) & unsigned((h >> 6) & 63);
      uint64_t w;
      std::memcpy(&w, kTextTokens[token], sizeof w);
      return w;
    }
    case ContentClass::ints: {
      // Computed without branches on the random kind (mispredictions cost more
      // than the arithmetic): small integer, pointer near a per-page base,
      // zero, or two small 32-bit fields.
      unsigned kind = unsigned(h & 0xff);
      uint64_t small = (h >> 8) & 0x3ff;
      uint64_t pointer = (0x00007f0000000000ull | ((key >> 40) & 0xffff) << 20) + ((h >> 8) & 0xffff8);
      uint64_t pair = ((h >> 8) & 0xff) | (((h >> 16) & 0xff) << 32);
      uint64_t is_small = -uint64_t(kind < 100), is_pointer = -uint64_t(kind >= 100 && kind < 170);
      uint64_t is_pair = -uint64_t(kind >= 220);
      return (small & is_small) | (pointer & is_pointer) | (pair & is_pair);
    }
  }
  return 0;
}

}  // namespace

Result<ContentProfile> parse_content_profile(std::string_view name) {
  if (name == "zero") return ContentProfile::zero;
  if (name == "text") return ContentProfile::text;
  if (name == "ints") return ContentProfile::ints;
  if (name == "random") return ContentProfile::random;
  if (name == "mixed") return ContentProfile::mixed;
  return Error::msg(strf("unknown content profile '%.*s' (zero, text, ints, random, mixed)", int(name.size()),
                         name.data()));
}

Result<WriteMode> parse_write_mode(std::string_view name) {
  if (name == "page") return WriteMode::page;
  if (name == "word") return WriteMode::word;
  return Error::msg(strf("unknown write mode '%.*s' (page, word)", int(name.size()), name.data()));
}

std::string_view content_profile_name(ContentProfile p) {
  switch (p) {
    case ContentProfile::zero: return "zero";
    case ContentProfile::text: return "text";
    case ContentProfile::ints: return "ints";
    case ContentProfile::random: return "random";
    case ContentProfile::mixed: return "mixed";
  }
  return "unknown";
}

std::string_view content_class_name(ContentClass c) {
  return content_profile_name(static_cast<ContentProfile>(c));
}

std::string_view write_mode_name(WriteMode m) { return m == WriteMode::page ? "page" : "word"; }

ContentClass page_class(ContentProfile profile, uint64_t seed, uint64_t page_index) {
  if (profile != ContentProfile::mixed) return static_cast<ContentClass>(profile);
  unsigned pick = unsigned(mix64(seed * 31 + page_index * kGolden + 0xc1a55) % 100);
  if (pick < 30) return ContentClass::zero;
  if (pick < 60) return ContentClass::ints;
  if (pick < 85) return ContentClass::text;
  return ContentClass::random;
}

uint64_t page_stamp(uint64_t seed, uint64_t page_index, uint64_t version) {
  return mix64(version_key(seed, page_index, version) ^ 0x57a3b) | 1;
}

void fill_class_page(void* out, ContentClass cls, uint64_t key) {
  auto* words = static_cast<uint64_t*>(out);
  for (size_t i = 0; i < kWordsPerPage; i++) words[i] = class_word(cls, key, i);
}

// Word mode: version 1 writes the whole page; version u >= 2 rewrites word
// (u - 2) % 511 + 1 with that word of version u's key. Word i therefore holds
// the value of the latest such u <= v, or of version 1 if there is none.
void fill_page(void* out, ContentProfile profile, WriteMode mode, uint64_t seed, uint64_t page_index,
               uint64_t version) {
  auto* words = static_cast<uint64_t*>(out);
  if (version == 0) {
    std::memset(out, 0, kPageSize);
    return;
  }
  ContentClass cls = page_class(profile, seed, page_index);
  if (mode == WriteMode::page) {
    fill_class_page(out, cls, version_key(seed, page_index, version));
  } else {
    fill_class_page(out, cls, version_key(seed, page_index, 1));
    constexpr uint64_t kSlots = kWordsPerPage - 1;
    for (uint64_t i = 1; i < kWordsPerPage && version >= i + 1; i++) {
      uint64_t u = i + 1 + kSlots * ((version - i - 1) / kSlots);
      words[i] = class_word(cls, version_key(seed, page_index, u), i);
    }
  }
  words[0] = page_stamp(seed, page_index, version);
}

void write_page_version(void* page, ContentProfile profile, WriteMode mode, uint64_t seed, uint64_t page_index,
                        uint64_t version) {
  auto* words = static_cast<volatile uint64_t*>(page);
  if (mode == WriteMode::page || version <= 1) {
    ContentClass cls = page_class(profile, seed, page_index);
    uint64_t key = version_key(seed, page_index, version);
    for (size_t i = 1; i < kWordsPerPage; i++) words[i] = class_word(cls, key, i);
  } else {
    size_t i = size_t((version - 2) % (kWordsPerPage - 1)) + 1;
    words[i] = class_word(page_class(profile, seed, page_index), version_key(seed, page_index, version), i);
  }
  words[0] = page_stamp(seed, page_index, version);
}

}  // namespace lm::guest
