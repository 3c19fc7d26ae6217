#include "compress/corpus.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cstring>

#include "common/fd.hpp"

namespace lm::compress {
namespace {

constexpr char kMagic[8] = {'L', 'M', 'C', 'O', 'R', 'P', 'U', 'S'};

Result<void> write_all(int fd, const void* p, size_t n, const std::string& path) {
  auto* b = static_cast<const uint8_t*>(p);
  while (n) {
    ssize_t w = ::write(fd, b, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return Error::from_errno(strf("write corpus %s", path.c_str()));
    b += w;
    n -= size_t(w);
  }
  return ok();
}

Result<void> read_all(int fd, void* p, size_t n, const std::string& path) {
  auto* b = static_cast<uint8_t*>(p);
  while (n) {
    ssize_t r = ::read(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Error::from_errno(strf("read corpus %s", path.c_str()));
    if (r == 0) return Error::msg(strf("read corpus %s: truncated", path.c_str()));
    b += r;
    n -= size_t(r);
  }
  return ok();
}

}  // namespace

void Corpus::add(uint64_t addr, const uint8_t* content) {
  addrs.push_back(addr);
  data.insert(data.end(), content, content + kPageSize);
}

Result<CorpusWriter> CorpusWriter::create(const std::string& path, int64_t pid, const std::string& source,
                                          const std::vector<uint64_t>& addrs) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return Error::from_errno(strf("create corpus %s", path.c_str()));
  CorpusHeader h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = 1;
  h.page_size = kPageSize;
  h.page_count = addrs.size();
  h.pid = pid;
  std::strncpy(h.source, source.c_str(), sizeof h.source - 1);
  LM_TRY(write_all(fd.get(), &h, sizeof h, path));
  LM_TRY(write_all(fd.get(), addrs.data(), addrs.size() * 8, path));
  return CorpusWriter(path, fd.release(), addrs.size());
}

CorpusWriter::~CorpusWriter() {
  if (fd_ >= 0) ::close(fd_);
}

Result<void> CorpusWriter::append(const uint8_t* pages, size_t count) {
  if (written_ + count > expected_)
    return Error::msg(strf("corpus %s: more pages than the %llu announced", path_.c_str(),
                           (unsigned long long)expected_));
  LM_TRY(write_all(fd_, pages, count * kPageSize, path_));
  written_ += count;
  return ok();
}

Result<void> CorpusWriter::finish() {
  if (written_ != expected_)
    return Error::msg(strf("corpus %s: %llu of %llu pages written", path_.c_str(), (unsigned long long)written_,
                           (unsigned long long)expected_));
  if (::close(std::exchange(fd_, -1)) != 0) return Error::from_errno(strf("close corpus %s", path_.c_str()));
  return ok();
}

Result<void> write_corpus(const std::string& path, const Corpus& corpus) {
  auto w = LM_TRY(CorpusWriter::create(path, corpus.pid, corpus.name, corpus.addrs));
  LM_TRY(w.append(corpus.data.data(), corpus.pages()));
  return w.finish();
}

Result<Corpus> read_corpus(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Error::from_errno(strf("open corpus %s", path.c_str()));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Error::from_errno(strf("stat corpus %s", path.c_str()));
  CorpusHeader h;
  LM_TRY(read_all(fd.get(), &h, sizeof h, path));
  if (std::memcmp(h.magic, kMagic, 8) != 0 || h.version != 1 || h.page_size != kPageSize)
    return Error::msg(strf("corpus %s: not a version-1 corpus of 4 KiB pages", path.c_str()));
  if (h.page_count > (uint64_t(st.st_size) - sizeof h) / (8 + kPageSize))
    return Error::msg(strf("corpus %s: header claims %llu pages, the file is %lld bytes", path.c_str(),
                           (unsigned long long)h.page_count, (long long)st.st_size));
  Corpus c;
  c.name.assign(h.source, strnlen(h.source, sizeof h.source));
  c.pid = h.pid;
  c.addrs.resize(h.page_count);
  c.data.resize(h.page_count * kPageSize);
  LM_TRY(read_all(fd.get(), c.addrs.data(), c.addrs.size() * 8, path));
  LM_TRY(read_all(fd.get(), c.data.data(), c.data.size(), path));
  return c;
}

}  // namespace lm::compress
