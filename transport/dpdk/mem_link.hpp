// An in-memory link between two FramePorts with injected impairments (loss,
// duplication, reordering, corruption, a queue limit) and a cut switch that
// makes the peer vanish. Used to test the reliable protocol without DPDK and
// to measure its cost. Time comes from a caller-owned clock (simulated time in
// tests) or the monotonic clock when none is given.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "transport/dpdk/frame_port.hpp"

namespace lm::dpdk {

struct LinkImpairment {
  double loss = 0;        // probability a frame is dropped
  double duplicate = 0;   // probability a frame is delivered twice
  double reorder = 0;     // probability a frame is delayed by reorder_extra_ns
  double corrupt = 0;     // probability one byte of a frame is flipped
  uint64_t latency_ns = 10'000;
  uint64_t reorder_extra_ns = 40'000;
  size_t queue_frames = 8192;  // frames in flight on the wire; beyond: dropped
  uint64_t drop_nth = 0;       // drop exactly the nth frame sent (1-based; 0: none)
};

struct LinkStats {
  uint64_t sent = 0, delivered = 0, lost = 0, duplicated = 0, reordered = 0, corrupted = 0,
           overflowed = 0;
};

class MemLink {
 public:
  MemLink(uint32_t frame_capacity, LinkImpairment a_to_b, LinkImpairment b_to_a,
          const uint64_t* clock = nullptr, uint64_t seed = 1);
  ~MemLink();
  FramePort& a();
  FramePort& b();
  // From now on nothing is delivered in either direction.
  void cut();
  LinkStats stats_a_to_b() const;
  LinkStats stats_b_to_a() const;
  // Frames held by the endpoints, not on the wire (leak check in tests).
  int64_t live_frames() const;

  class Side;
  struct Block;
  struct InFlight {
    uint64_t due_ns;
    uint64_t order;
    Block* block;
    uint32_t len;
    uint16_t flow;
    bool operator>(const InFlight& o) const {
      return due_ns != o.due_ns ? due_ns > o.due_ns : order > o.order;
    }
  };
  using Wire = std::priority_queue<InFlight, std::vector<InFlight>, std::greater<>>;

 private:
  friend class Side;
  uint64_t now() const;
  Block* new_block();
  void unref(Block* b);

  uint32_t capacity_;
  const uint64_t* clock_;
  mutable std::mutex mu_;
  std::mt19937_64 rng_;
  bool cut_ = false;
  uint64_t order_ = 0;
  int64_t live_ = 0;
  std::unique_ptr<Side> a_, b_;
};

}  // namespace lm::dpdk
