#include "compress/cycle_clock.hpp"

#include "common/clock.hpp"

namespace lm::compress {

static double calibrate() {
  uint64_t t0 = now_ns(), c0 = cycles();
  while (now_ns() - t0 < 2000000) {
  }
  uint64_t t1 = now_ns(), c1 = cycles();
  return double(c1 - c0) / double(t1 - t0);
}

double cycles_per_ns() {
  static const double rate = calibrate();
  return rate;
}

}  // namespace lm::compress
