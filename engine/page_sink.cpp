#include "engine/page_sink.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <utility>

namespace lm::engine {

Result<MappedMemfd> MappedMemfd::map(uint64_t addr, uint64_t bytes, UniqueFd memfd, Prealloc prealloc) {
  MappedMemfd m;
  m.addr_ = addr;
  m.bytes_ = bytes;
  m.memfd_ = std::move(memfd);
  if (prealloc == Prealloc::yes && fallocate(m.memfd_.get(), 0, 0, off_t(bytes)) != 0)
    return Error::from_errno(strf("preallocate %llu bytes of destination memory", (unsigned long long)bytes));
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | (prealloc == Prealloc::yes ? MAP_POPULATE : 0),
                 m.memfd_.get(), 0);
  if (p == MAP_FAILED)
    return Error::from_errno(strf("map destination memory for [0x%llx,0x%llx)", (unsigned long long)addr,
                                  (unsigned long long)(addr + bytes)));
  m.base_ = static_cast<uint8_t*>(p);
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

MappedMemfd::MappedMemfd(MappedMemfd&& o) noexcept
    : addr_(o.addr_), bytes_(o.bytes_), memfd_(std::move(o.memfd_)), base_(std::exchange(o.base_, nullptr)) {}

MappedMemfd& MappedMemfd::operator=(MappedMemfd&& o) noexcept {
  if (this != &o) {
    if (base_) munmap(base_, bytes_);
    addr_ = o.addr_;
    bytes_ = o.bytes_;
    memfd_ = std::move(o.memfd_);
    base_ = std::exchange(o.base_, nullptr);
  }
  return *this;
}

MappedMemfd::~MappedMemfd() {
  if (base_) munmap(base_, bytes_);
}

}  // namespace lm::engine
