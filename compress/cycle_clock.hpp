// Per-page timing with the TSC (a few ns per read, against ~20 ns for
// clock_gettime), converted to ns with a rate calibrated once per process.
#pragma once

#include <x86intrin.h>

#include <cstdint>

namespace lm::compress {

inline uint64_t cycles() { return __rdtsc(); }
double cycles_per_ns();  // calibrated on first use (~2 ms), then constant
inline uint64_t cycles_to_ns(uint64_t c) { return uint64_t(double(c) / cycles_per_ns()); }

}  // namespace lm::compress
