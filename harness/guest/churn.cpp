#include "harness/guest/churn.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <deque>

#include "common/clock.hpp"

namespace lm::guest {

namespace {

struct Region {
  uint8_t* addr;
  size_t pages;
};

void write_pages(GuestRuntime& rt, WorkerSlot& slot, uint64_t epoch, uint8_t* addr, size_t first, size_t count,
                 uint64_t value) {
  for (size_t i = first; i < first + count; i++) {
    uint8_t* page = addr + i * kPageSize;
    std::memset(page, int(value & 0xff), 64);
    std::memcpy(page + 64, &value, sizeof value);
    rt.log_page(slot, epoch, uint64_t(page));
  }
}

void log_pages(GuestRuntime& rt, WorkerSlot& slot, uint64_t epoch, uint8_t* addr, size_t count) {
  for (size_t i = 0; i < count; i++) rt.log_page(slot, epoch, uint64_t(addr + i * kPageSize));
}

void warn_once(bool& warned, const char* what) {
  if (!warned) std::fprintf(stderr, "livemig-guest: churn: %s: %s\n", what, std::strerror(errno));
  warned = true;
}

}  // namespace

void run_churn(GuestRuntime& rt, WorkerSlot& slot, uint64_t seed) {
  std::deque<Region> regions;
  uint64_t rng = seed ^ 0xc4a12e;
  auto next = [&] {
    rng += 0x9e3779b97f4a7c15ull;
    uint64_t z = rng;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  bool warned = false;
  uint64_t iteration = 0;
  while (rt.boundary(slot)) {
    rt.sleep_until(now_ns() + (2 + next() % 4) * 1000000);
    if (!rt.boundary(slot)) break;
    uint64_t epoch = rt.begin_step(slot);
    iteration++;
    switch (iteration % 5) {
      case 0: {  // map a new region and write it
        size_t pages = 2 + next() % 15;
        void* p = ::mmap(nullptr, pages * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
          warn_once(warned, "mmap");
          break;
        }
        regions.push_back({static_cast<uint8_t*>(p), pages});
        write_pages(rt, slot, epoch, regions.back().addr, 0, pages, iteration);
        break;
      }
      case 1:  // unmap the oldest region
        if (regions.size() > 6) {
          uint64_t at = uint64_t(regions.front().addr), bytes = regions.front().pages * kPageSize;
          if (::munmap(regions.front().addr, bytes) == 0) rt.log_unmap(slot, epoch, {at, at + bytes});
          regions.pop_front();
        }
        break;
      case 2: {  // move a region to a new address chosen by us
        if (regions.empty()) break;
        size_t k = next() % regions.size();
        Region& r = regions[k];
        size_t bytes = r.pages * kPageSize;
        void* target = ::mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (target == MAP_FAILED) {
          warn_once(warned, "mmap mremap target");
          break;
        }
        void* moved = ::mremap(r.addr, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, target);
        if (moved == MAP_FAILED) {
          // Linux 6.17+ moves a range spanning several VMAs one VMA at a time
          // and may fail part way (EFAULT), leaving the region half moved:
          // drop both places rather than write into what is no longer there.
          warn_once(warned, "mremap");
          ::munmap(target, bytes);
          ::munmap(r.addr, bytes);
          rt.log_unmap(slot, epoch, {uint64_t(target), uint64_t(target) + bytes});
          rt.log_unmap(slot, epoch, {uint64_t(r.addr), uint64_t(r.addr) + bytes});
          regions.erase(regions.begin() + std::ptrdiff_t(k));
          break;
        }
        rt.log_unmap(slot, epoch, {uint64_t(r.addr), uint64_t(r.addr) + bytes});
        r.addr = static_cast<uint8_t*>(moved);
        log_pages(rt, slot, epoch, r.addr, r.pages);
        break;
      }
      case 3: {  // zap part of a region: the pages read back as zeros
        if (regions.empty()) break;
        Region& r = regions[next() % regions.size()];
        size_t first = next() % r.pages, count = 1 + next() % (r.pages - first);
        if (::madvise(r.addr + first * kPageSize, count * kPageSize, MADV_DONTNEED) != 0) {
          warn_once(warned, "madvise(MADV_DONTNEED)");
          break;
        }
        log_pages(rt, slot, epoch, r.addr + first * kPageSize, count);
        break;
      }
      default:
        break;
    }
    if (!regions.empty()) {  // and an ordinary write to some existing page
      Region& r = regions[next() % regions.size()];
      write_pages(rt, slot, epoch, r.addr, next() % r.pages, 1, iteration);
    }
    rt.end_step(slot);
  }
  for (auto& r : regions) ::munmap(r.addr, r.pages * kPageSize);
}

void HeapChurn::tick(GuestRuntime& rt) {
  if (rt.paused() || ++ticks_ % 2 != 0) return;
  WorkerSlot& slot = rt.control_slot();
  uint64_t epoch = rt.epoch();  // the control thread also closes epochs: no barrier needed
  constexpr uint64_t kLimit = 2 << 20;
  void* brk_now = ::sbrk(0);
  if (grown_ >= kLimit) {
    if (brk_now == start_ + grown_ && ::sbrk(-intptr_t(grown_)) != reinterpret_cast<void*>(-1)) {
      rt.log_unmap(slot, epoch, {page_ceil(uint64_t(start_)), page_ceil(uint64_t(start_) + grown_)});
      grown_ = 0;
      start_ = nullptr;
    }
    return;
  }
  uint64_t bytes = 4 * kPageSize;
  if (start_ && brk_now != start_ + grown_) {
    start_ = nullptr;  // someone else (malloc) moved the break: start a new run
    grown_ = 0;
  }
  // Align the break to a page first so that whole pages are ours.
  uint64_t misalign = uint64_t(brk_now) % kPageSize;
  uint64_t pad = misalign ? kPageSize - misalign : 0;
  void* old = ::sbrk(intptr_t(bytes + pad));
  if (old == reinterpret_cast<void*>(-1)) return;
  auto* pages = static_cast<uint8_t*>(old) + pad;
  if (!start_) start_ = static_cast<uint8_t*>(old);
  grown_ += bytes + pad;
  for (uint64_t off = 0; off < bytes; off += kPageSize) {
    std::memset(pages + off, int(ticks_ & 0xff), 128);
    rt.log_page(slot, epoch, uint64_t(pages + off));
  }
}

}  // namespace lm::guest
