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
#include <utility>
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

// Writes a corpus page by page (a process image need not fit in memory):
// the header and all addresses first, then append() the pages in order.
class CorpusWriter {
 public:
  static Result<CorpusWriter> create(const std::string& path, int64_t pid, const std::string& source,
                                     const std::vector<uint64_t>& addrs);
  Result<void> append(const uint8_t* pages, size_t count);
  Result<void> finish();  // checks that every announced page was written

 private:
  CorpusWriter(std::string path, int fd, uint64_t expected) : path_(std::move(path)), fd_(fd), expected_(expected) {}
  std::string path_;
  int fd_;
  uint64_t expected_;
  uint64_t written_ = 0;

 public:
  CorpusWriter(CorpusWriter&& o) noexcept
      : path_(std::move(o.path_)), fd_(std::exchange(o.fd_, -1)), expected_(o.expected_), written_(o.written_) {}
  CorpusWriter(const CorpusWriter&) = delete;
  CorpusWriter& operator=(const CorpusWriter&) = delete;
  CorpusWriter& operator=(CorpusWriter&&) = delete;
  ~CorpusWriter();
};
Result<Corpus> read_corpus(const std::string& path);

}  // namespace lm::compress
