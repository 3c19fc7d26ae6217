// Monotonic time for measurements.
#pragma once

#include <cstdint>
#include <ctime>

namespace lm {

inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// CPU time consumed by the whole process (all threads), in seconds.
inline double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

class Stopwatch {
 public:
  Stopwatch() : start_(now_ns()) {}
  void reset() { start_ = now_ns(); }
  uint64_t elapsed_ns() const { return now_ns() - start_; }
  double elapsed_ms() const { return double(elapsed_ns()) * 1e-6; }
  double elapsed_s() const { return double(elapsed_ns()) * 1e-9; }

 private:
  uint64_t start_;
};

}  // namespace lm

namespace lm {

// CPU time consumed by the calling thread, in seconds.
inline double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

}  // namespace lm
