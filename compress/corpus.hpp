// Page corpus files: pages captured from a live process (livemig snapshot)
// or generated, for the compression benchmark.
//
// Layout (little-endian): header {char magic[8] = "LMCORPUS"; u32 version = 1;
// u32 page_size = 4096; u64 page_count; i64 pid (0 when generated);
// char source[64] (NUL-padded description)}, then page_count u64 addresses,
// then page_count pages.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/page.hpp"

namespace lm::compress {

struct CorpusHeader {
  char magic[8];
  uint32_t version;
  uint32_t page_size;
  uint64_t page_count;
  int64_t pid;
  char source[64];
};
static_assert(sizeof(CorpusHeader) == 96);

struct Corpus {
  std::string name;
  int64_t pid = 0;
  std::vector<uint64_t> addrs;
  std::vector<uint8_t> data;  // addrs.size() pages

  size_t pages() const { return addrs.size(); }
  const uint8_t* page(size_t i) const { return data.data() + i * kPageSize; }
  uint8_t* page(size_t i) { return data.data() + i * kPageSize; }
  void add(uint64_t addr, const uint8_t* content);
};

Result<void> write_corpus(const std::string& path, const Corpus& corpus);
Result<Corpus> read_corpus(const std::string& path);

}  // namespace lm::compress
