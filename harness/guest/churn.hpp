// --churn: mapping changes outside the RAM region, for the trackers' tests.
// Every write is logged through the runtime's write log.
#pragma once

#include <cstdint>
#include <vector>

#include "harness/guest/runtime.hpp"

namespace lm::guest {

// Body of the churn thread: every few ms maps a new region and writes it,
// rewrites pages of old ones, unmaps the oldest, moves one with
// mremap(MREMAP_MAYMOVE|MREMAP_FIXED), and MADV_DONTNEEDs part of one.
void run_churn(GuestRuntime& rt, WorkerSlot& slot, uint64_t seed);

// brk growth runs on the main thread: glibc's sbrk is not thread-safe, and the
// main thread is the only one that allocates from the brk heap (main arena).
class HeapChurn {
 public:
  // Grows the heap by a few pages and writes them; shrinks it back once it
  // has grown 2 MiB and nothing else moved the break. Call between requests.
  void tick(GuestRuntime& rt);

 private:
  uint8_t* start_ = nullptr;  // our first byte above the original break
  uint64_t grown_ = 0;
  uint64_t ticks_ = 0;
};

}  // namespace lm::guest
