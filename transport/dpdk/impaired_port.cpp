#include "transport/dpdk/impaired_port.hpp"

namespace lm::dpdk {

// Every frame offered counts as transmitted (a dropped one is released here,
// as if the wire lost it).
size_t ImpairedPort::transmit(Frame* frames, size_t n) {
  std::uniform_real_distribution<double> u(0, 1);
  out_.clear();
  std::vector<Frame> delayed;
  for (size_t i = 0; i < n; ++i) {
    Frame f = frames[i];
    double r = u(rng_);
    if (r < imp_.loss) {
      counters_.dropped++;
      inner_.release(&f, 1);
      continue;
    }
    if (u(rng_) < imp_.duplicate) {
      inner_.retain(f);
      out_.push_back(f);
      counters_.duplicated++;
    }
    if (u(rng_) < imp_.reorder) {
      delayed.push_back(f);
      counters_.reordered++;
      continue;
    }
    out_.push_back(f);
  }
  out_.insert(out_.end(), held_.begin(), held_.end());  // last call's delayed frames, now late
  held_ = std::move(delayed);
  size_t sent = out_.empty() ? 0 : inner_.transmit(out_.data(), out_.size());
  // What the device did not take goes out on the next call (in order, late).
  held_.insert(held_.begin(), out_.begin() + ptrdiff_t(sent), out_.end());
  return n;
}

}  // namespace lm::dpdk
