// A VM for in-process post-copy tests: a thread of the test process reading
// a memfd mapping registered (MISSING) with a userfaultfd the destination
// serves, so the source's and destination's post-copy phases run without
// spawning livemig-guest.
#pragma once

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "common/page.hpp"

namespace lm::engine::test {

// This kernel or its settings refuse userfaultfd on shmem: such a test skips.
inline bool no_userfaultfd_here(const Error& e) { return e.code == EPERM || e.code == ENOSYS || e.code == EINVAL; }

// Its RAM is a memfd mapped where the kernel likes, registered (MISSING) with
// a userfaultfd that the destination serves; once resumed, a thread reads
// every page in turn, each first read a fault, and counts its steps.
class FaultingGuest {
 public:
  Result<void> create(uint64_t pages) {
    bytes_ = pages * kPageSize;
    memfd_.reset(memfd_create("matrix-guest-ram", MFD_CLOEXEC));
    if (memfd_.get() < 0 || ftruncate(memfd_.get(), off_t(bytes_)) != 0) return Error::from_errno("guest RAM memfd");
    void* p = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
    if (p == MAP_FAILED) return Error::from_errno("map the guest RAM");
    ram_ = static_cast<uint8_t*>(p);
    uffd_.reset(int(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
    if (uffd_.get() < 0) return Error::from_errno("userfaultfd");
    uffdio_api api{UFFD_API, 0, 0};
    if (ioctl(uffd_.get(), UFFDIO_API, &api) != 0) return Error::from_errno("UFFDIO_API");
    uffdio_register reg{};
    reg.range = {uint64_t(ram_), bytes_};
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (ioctl(uffd_.get(), UFFDIO_REGISTER, &reg) != 0) return Error::from_errno("UFFDIO_REGISTER the guest RAM");
    return ok();
  }
  uint64_t addr() const { return uint64_t(ram_); }
  // For the sink: the engine's copy of the memfd, and the userfaultfd.
  UniqueFd memfd() const { return UniqueFd(dup(memfd_.get())); }
  UniqueFd take_uffd() { return std::move(uffd_); }

  void start(std::atomic<uint64_t>& steps) {
    runner_ = std::thread([this, &steps] {
      for (uint64_t off = 0; off < bytes_ && !stop_; off += kPageSize, steps++) {
        uint64_t word;
        std::memcpy(&word, ram_ + off, sizeof word);  // faults until the destination installs the page
        seen_.push_back(word);
      }
    });
  }
  // The first word of each page as the VM read it; after stop().
  const std::vector<uint64_t>& seen() const { return seen_; }
  void stop() {
    stop_ = true;
    if (runner_.joinable()) runner_.join();
  }
  ~FaultingGuest() {
    stop();
    if (ram_) munmap(ram_, bytes_);
  }

 private:
  uint64_t bytes_ = 0;
  uint8_t* ram_ = nullptr;
  UniqueFd memfd_;
  UniqueFd uffd_;
  std::atomic<bool> stop_{false};
  std::vector<uint64_t> seen_;
  std::thread runner_;
};

}  // namespace lm::engine::test
