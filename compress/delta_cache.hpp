// Source-side cache of the last-sent version of pages, keyed by page address
// (QEMU's XBZRLE page cache, with LRU eviction). Thread-safe: the workers of
// one migration share it; it is split into shards, each under its own mutex.
//
// Invariant the user must keep: the cache holds exactly what the destination
// holds. Every page sent through a delta-enabled compressor updates it, and
// the batch that sent version N of a page must be applied at the destination
// before a batch carrying a delta against version N (the pre-copy engine
// finishes a round before re-sending its pages). A page sent some other way
// must be erase()d.
#pragma once

#include <cstddef>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common/page.hpp"

namespace lm::compress {

class DeltaCache {
 public:
  explicit DeltaCache(size_t capacity_pages);
  ~DeltaCache();
  DeltaCache(const DeltaCache&) = delete;
  DeltaCache& operator=(const DeltaCache&) = delete;

  // Records `page` as the last-sent version of addr. On a hit, first calls
  // on_previous(previous_version) under the shard lock and returns true.
  // With `store_miss` false a page not cached stays out (the destination's
  // version of it then has no copy here, which the invariant allows).
  template <class F>
  bool exchange(uint64_t addr, const uint8_t* page, F&& on_previous, bool store_miss = true) {
    Shard& s = shard_of(addr);
    std::lock_guard lock(s.mutex);
    const uint8_t* previous = s.find(addr);
    if (previous) on_previous(previous);
    if (!previous && !store_miss) return false;
    s.store(addr, page);
    nonempty_.store(true, std::memory_order_relaxed);
    return previous != nullptr;
  }
  bool contains(uint64_t addr) const;
  bool empty() const { return !nonempty_.load(std::memory_order_relaxed); }
  void erase(uint64_t addr);
  void erase(uint64_t start, uint64_t end);  // every page in [start, end)
  void clear();  // cheap when already empty

  size_t capacity_pages() const { return capacity_; }
  size_t size() const;
  uint64_t evictions() const;

 private:
  struct Shard {
    struct Node {
      uint64_t addr;
      uint32_t prev, next;  // LRU list; kNone ends it
    };
    static constexpr uint32_t kNone = UINT32_MAX;
    explicit Shard(size_t capacity);
    const uint8_t* find(uint64_t addr);  // moves a hit to the front
    void store(uint64_t addr, const uint8_t* page);
    void unlink(uint32_t i);
    void push_front(uint32_t i);
    void remove(uint64_t addr);

    mutable std::mutex mutex;
    size_t capacity;
    std::unique_ptr<uint8_t[]> data;  // capacity pages, touched only when used
    std::vector<Node> nodes;
    std::vector<uint32_t> free_slots;
    std::unordered_map<uint64_t, uint32_t> index;
    uint32_t head = kNone, tail = kNone;
    uint64_t evictions = 0;
  };
  Shard& shard_of(uint64_t addr) const {
    return *shards_[((addr >> kPageShift) * 0x9E3779B97F4A7C15ull) >> 32 & (shards_.size() - 1)];
  }

  size_t capacity_;
  std::atomic<bool> nonempty_{false};
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace lm::compress
