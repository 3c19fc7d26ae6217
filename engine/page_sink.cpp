#include "engine/page_sink.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <climits>
#include <utility>

#include "common/clock.hpp"
#include "common/populate.hpp"

namespace lm::engine {

Result<MappedMemfd> MappedMemfd::map(uint64_t addr, uint64_t bytes, UniqueFd memfd, Prealloc prealloc) {
  MappedMemfd m;
  m.addr_ = addr;
  m.bytes_ = bytes;
  m.memfd_ = std::move(memfd);
  const uint64_t t0 = now_ns();
  if (prealloc == Prealloc::yes && fallocate(m.memfd_.get(), 0, 0, off_t(bytes)) != 0)
    return Error::from_errno(strf("preallocate %llu bytes of destination memory", (unsigned long long)bytes));
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | (prealloc == Prealloc::yes ? MAP_POPULATE : 0),
                 m.memfd_.get(), 0);
  if (p == MAP_FAILED)
    return Error::from_errno(strf("map destination memory for [0x%llx,0x%llx)", (unsigned long long)addr,
                                  (unsigned long long)(addr + bytes)));
  m.base_ = static_cast<uint8_t*>(p);
  if (prealloc == Prealloc::yes) m.population_ns_ = now_ns() - t0;
  return m;
}

Result<MappedMemfd> MappedMemfd::create(uint64_t addr, uint64_t bytes) {
  int fd = memfd_create("livemig-image", MFD_CLOEXEC);
  if (fd < 0) return Error::from_errno("memfd_create for the destination memory");
  UniqueFd memfd(fd);
  if (ftruncate(fd, off_t(bytes)) != 0)
    return Error::from_errno(strf("size the destination memory of [0x%llx,+%llu)", (unsigned long long)addr,
                                  (unsigned long long)bytes));
  return map(addr, bytes, std::move(memfd), Prealloc::no);
}

Result<MappedMemfd> MappedMemfd::anonymous(uint64_t addr, uint64_t bytes, bool populate) {
  MappedMemfd m;
  m.addr_ = addr;
  m.bytes_ = bytes;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return Error::from_errno(strf("map anonymous destination memory for [0x%llx,+%llu)", (unsigned long long)addr,
                                  (unsigned long long)bytes));
  m.base_ = static_cast<uint8_t*>(p);
  // Huge pages only for memory written in whole: a sparse page would commit 2 MiB.
  (void)madvise(p, bytes, populate ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);  // a kernel without THP: 4 KiB pages
  if (!populate) return m;
  m.population_ns_ = LM_TRY_CTX(populate_for_write(p, bytes), strf("destination memory for [0x%llx,+%llu)",
                                                                     (unsigned long long)addr,
                                                                     (unsigned long long)bytes));
  return m;
}

MappedMemfd::MappedMemfd(MappedMemfd&& o) noexcept
    : addr_(o.addr_),
      bytes_(o.bytes_),
      memfd_(std::move(o.memfd_)),
      base_(std::exchange(o.base_, nullptr)),
      population_ns_(o.population_ns_) {}

MappedMemfd& MappedMemfd::operator=(MappedMemfd&& o) noexcept {
  if (this != &o) {
    if (base_) munmap(base_, bytes_);
    addr_ = o.addr_;
    bytes_ = o.bytes_;
    memfd_ = std::move(o.memfd_);
    base_ = std::exchange(o.base_, nullptr);
    population_ns_ = o.population_ns_;
  }
  return *this;
}

MappedMemfd::~MappedMemfd() {
  if (base_) munmap(base_, bytes_);
}

namespace {

// Appends [p, p + len) to `v`, extending the last piece when it ends there.
void append_piece(std::vector<iovec>& v, void* p, size_t len) {
  if (!v.empty() && static_cast<uint8_t*>(v.back().iov_base) + v.back().iov_len == p) v.back().iov_len += len;
  else v.push_back({p, len});
}

}  // namespace

// A delta patches the page it was computed against: its scratch slot gets
// the page's current bytes from the process first.
Result<void> ProcessPageWriter::read_delta_bases(pid_t pid, std::span<const PageEntry> entries) {
  local_.clear();
  remote_.clear();
  for (size_t i = 0; i <= entries.size(); i++) {
    const bool full = local_.size() == IOV_MAX || i == entries.size();
    if (full && !local_.empty()) {
      const size_t want = local_.size() * kPageSize;
      if (process_vm_readv(pid, local_.data(), local_.size(), remote_.data(), remote_.size(), 0) != ssize_t(want))
        return Error::from_errno(strf("read %zu pages from 0x%llx of pid %d for their deltas", local_.size(),
                                      (unsigned long long)reinterpret_cast<uintptr_t>(remote_.front().iov_base), pid));
      local_.clear();
      remote_.clear();
    }
    if (i == entries.size() || entries[i].codec != Codec::delta) continue;
    local_.push_back({dst_[i], kPageSize});
    remote_.push_back({reinterpret_cast<void*>(uintptr_t(entries[i].addr)), kPageSize});
  }
  return ok();
}

Result<void> ProcessPageWriter::write(pid_t pid, std::span<const PageEntry> entries, std::span<const uint8_t> payload,
                                      compress::Decompressor& decompressor, const compress::PageVisitor& visit) {
  size_t decoded = 0;
  for (const auto& e : entries) decoded += e.codec != Codec::raw;
  if (decoded > scratch_pages_) {
    scratch_.reset(new uint8_t[decoded * kPageSize]);
    scratch_pages_ = decoded;
  }
  dst_.assign(entries.size(), nullptr);
  for (size_t i = 0, k = 0; i < entries.size(); i++)
    if (entries[i].codec != Codec::raw) dst_[i] = scratch_.get() + kPageSize * k++;
  LM_TRY(read_delta_bases(pid, entries));
  LM_TRY(decompressor.decompress_batch(entries, payload, dst_, visit));

  local_.clear();
  remote_.clear();
  size_t pending = 0;
  auto flush = [&]() -> Result<void> {
    if (pending == 0) return ok();
    ssize_t n = process_vm_writev(pid, local_.data(), local_.size(), remote_.data(), remote_.size(), 0);
    if (n != ssize_t(pending)) {
      const auto first = (unsigned long long)reinterpret_cast<uintptr_t>(remote_.front().iov_base);
      if (n < 0)
        return Error::from_errno(strf("write %zu bytes of pages from 0x%llx into pid %d", pending, first, pid));
      return Error::msg(strf("write pages from 0x%llx into pid %d: %zd of %zu bytes written (the rest is not mapped "
                             "there)", first, pid, n, pending));
    }
    local_.clear();
    remote_.clear();
    pending = 0;
    return ok();
  };
  size_t pos = 0;
  for (size_t i = 0; i < entries.size(); i++) {
    const PageEntry& e = entries[i];
    uint8_t* src = dst_[i] ? dst_[i] : const_cast<uint8_t*>(payload.data() + pos);
    pos += e.length;
    if (local_.size() == IOV_MAX || remote_.size() == IOV_MAX) LM_TRY(flush());
    append_piece(local_, src, kPageSize);
    append_piece(remote_, reinterpret_cast<void*>(uintptr_t(e.addr)), kPageSize);
    pending += kPageSize;
  }
  return flush();
}

}  // namespace lm::engine
