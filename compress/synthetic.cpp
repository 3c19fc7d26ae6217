#include "compress/synthetic.hpp"

#include <cstring>

#include "common/page.hpp"

namespace lm::compress {
namespace {

constexpr const char* kVocabulary[] = {
    "the", "of", "and", "page", "memory", "migration", "to", "in", "is", "dirty", "round", "a", "for",
    "process", "that", "with", "link", "compress", "ratio", "source", "destination", "kernel", "fault",
    "userfaultfd", "write", "protect", "on", "by", "as", "this", "be", "are", "from", "at", "or", "an",
    "it", "not", "which", "have", "was", "all", "can", "has", "been", "more", "than", "time", "they",
    "error", "value", "key", "server", "client", "request", "response", "http", "GET", "200", "json",
    "{\"id\":", "\"name\":", "null", "true", "false", "return", "int", "void", "static", "const",
};

void fill_words(std::mt19937_64& rng, uint8_t* page) {
  uint64_t* w = reinterpret_cast<uint64_t*>(page);
  const unsigned n = kPageSize / 8;
  switch (rng() % 3) {
    case 0:  // structs of small counters, lengths and flags
      for (unsigned i = 0; i < n; i++) w[i] = (i % 4 == 3) ? 0 : rng() % 1000;
      break;
    case 1: {  // pointers into a couple of heap regions, with small fields between
      uint64_t heap = 0x00005555'55550000ull + (rng() % 4096) * 0x10000;
      uint64_t mmap = 0x00007f00'00000000ull + (rng() % 65536) * 0x100000;
      for (unsigned i = 0; i < n; i++) {
        switch (i % 4) {
          case 0: w[i] = heap + (rng() % 65536) * 16; break;
          case 1: w[i] = mmap + (rng() % 65536) * 16; break;
          case 2: w[i] = rng() % 64; break;
          default: w[i] = heap + (rng() % 65536) * 16; break;
        }
      }
      break;
    }
    default: {  // int32 arrays of small values
      uint32_t* v = reinterpret_cast<uint32_t*>(page);
      for (unsigned i = 0; i < kPageSize / 4; i++) v[i] = uint32_t(rng() % 5000);
      break;
    }
  }
}

void fill_text(std::mt19937_64& rng, uint8_t* page) {
  size_t pos = 0;
  constexpr size_t kVocab = sizeof(kVocabulary) / sizeof(kVocabulary[0]);
  while (pos < kPageSize) {
    // Zipf-like: small indices much more often.
    size_t r = rng() % (kVocab * kVocab);
    size_t k = kVocab - 1 - size_t(__builtin_sqrt(double(r)));
    const char* word = kVocabulary[k];
    size_t len = std::strlen(word);
    for (size_t i = 0; i < len && pos < kPageSize; i++) page[pos++] = uint8_t(word[i]);
    if (pos < kPageSize) page[pos++] = (rng() % 12 == 0) ? '\n' : ' ';
    if (pos < kPageSize && rng() % 40 == 0) {
      // a number now and then
      unsigned num = unsigned(rng() % 100000);
      char buf[16];
      int m = std::snprintf(buf, sizeof buf, "%u ", num);
      for (int i = 0; i < m && pos < kPageSize; i++) page[pos++] = uint8_t(buf[i]);
    }
  }
}

}  // namespace

std::string_view content_name(Content c) {
  switch (c) {
    case Content::zero: return "zero";
    case Content::uniform: return "uniform";
    case Content::words: return "words";
    case Content::text: return "text";
    case Content::random: return "random";
    case Content::mixed: return "mixed";
  }
  return "unknown";
}

Result<Content> parse_content(std::string_view name) {
  for (Content c : kAllContents)
    if (content_name(c) == name) return c;
  return Error::msg(strf("unknown content '%.*s' (zero, uniform, words, text, random, mixed)", int(name.size()),
                         name.data()));
}

void fill_page(Content c, std::mt19937_64& rng, uint8_t* page) {
  switch (c) {
    case Content::zero: std::memset(page, 0, kPageSize); return;
    case Content::uniform: {
      uint64_t w = rng() | 1;
      for (size_t off = 0; off < kPageSize; off += 8) std::memcpy(page + off, &w, 8);
      return;
    }
    case Content::words: fill_words(rng, page); return;
    case Content::text: fill_text(rng, page); return;
    case Content::random:
      for (size_t off = 0; off < kPageSize; off += 8) {
        uint64_t w = rng();
        std::memcpy(page + off, &w, 8);
      }
      return;
    case Content::mixed: {
      unsigned r = unsigned(rng() % 100);
      Content k = r < 30 ? Content::zero : r < 35 ? Content::uniform : r < 60 ? Content::words
                : r < 85 ? Content::text : Content::random;
      fill_page(k, rng, page);
      return;
    }
  }
}

void mutate_page(std::mt19937_64& rng, uint8_t* page, unsigned words) {
  for (unsigned i = 0; i < words; i++) {
    uint64_t w = rng();
    std::memcpy(page + (rng() % (kPageSize / 8)) * 8, &w, 8);
  }
}

}  // namespace lm::compress
