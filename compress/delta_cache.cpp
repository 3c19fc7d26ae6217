#include "compress/delta_cache.hpp"

#include <cstring>

namespace lm::compress {

DeltaCache::DeltaCache(size_t capacity_pages) : capacity_(capacity_pages) {
  // Small caches keep one shard so eviction is exact LRU.
  size_t n = capacity_pages >= 1024 ? 16 : 1;
  for (size_t i = 0; i < n; i++)
    shards_.push_back(std::make_unique<Shard>(capacity_pages / n + (i < capacity_pages % n ? 1 : 0)));
}

DeltaCache::~DeltaCache() = default;

DeltaCache::Shard::Shard(size_t cap) : capacity(cap) {
  if (capacity) data.reset(new uint8_t[capacity * kPageSize]);
  nodes.reserve(capacity);
  index.reserve(capacity);
}

void DeltaCache::Shard::unlink(uint32_t i) {
  Node& n = nodes[i];
  (n.prev == kNone ? head : nodes[n.prev].next) = n.next;
  (n.next == kNone ? tail : nodes[n.next].prev) = n.prev;
}

void DeltaCache::Shard::push_front(uint32_t i) {
  nodes[i].prev = kNone;
  nodes[i].next = head;
  if (head != kNone) nodes[head].prev = i;
  head = i;
  if (tail == kNone) tail = i;
}

const uint8_t* DeltaCache::Shard::find(uint64_t addr) {
  auto it = index.find(addr);
  if (it == index.end()) return nullptr;
  unlink(it->second);
  push_front(it->second);
  return data.get() + size_t(it->second) * kPageSize;
}

void DeltaCache::Shard::store(uint64_t addr, const uint8_t* page) {
  if (capacity == 0) return;
  uint32_t slot;
  auto it = index.find(addr);
  if (it != index.end()) {
    slot = it->second;  // find() already moved it to the front
  } else {
    if (!free_slots.empty()) {
      slot = free_slots.back();
      free_slots.pop_back();
    } else if (nodes.size() < capacity) {
      slot = uint32_t(nodes.size());
      nodes.push_back({});
    } else {
      slot = tail;
      unlink(slot);
      index.erase(nodes[slot].addr);
      evictions++;
    }
    nodes[slot].addr = addr;
    push_front(slot);
    index.emplace(addr, slot);
  }
  std::memcpy(data.get() + size_t(slot) * kPageSize, page, kPageSize);
}

void DeltaCache::Shard::remove(uint64_t addr) {
  auto it = index.find(addr);
  if (it == index.end()) return;
  unlink(it->second);
  free_slots.push_back(it->second);
  index.erase(it);
}

bool DeltaCache::contains(uint64_t addr) const {
  Shard& s = shard_of(addr);
  std::lock_guard lock(s.mutex);
  return s.index.count(addr) != 0;
}

void DeltaCache::erase(uint64_t addr) {
  Shard& s = shard_of(addr);
  std::lock_guard lock(s.mutex);
  s.remove(addr);
}

void DeltaCache::clear() {
  if (!nonempty_.exchange(false, std::memory_order_relaxed)) return;
  for (auto& s : shards_) {
    std::lock_guard lock(s->mutex);
    s->index.clear();
    s->nodes.clear();
    s->free_slots.clear();
    s->head = s->tail = Shard::kNone;
  }
}

size_t DeltaCache::size() const {
  size_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard lock(s->mutex);
    n += s->index.size();
  }
  return n;
}

uint64_t DeltaCache::evictions() const {
  uint64_t n = 0;
  for (auto& s : shards_) {
    std::lock_guard lock(s->mutex);
    n += s->evictions;
  }
  return n;
}

}  // namespace lm::compress
