#include "transport/dpdk/impaired_port.hpp"

namespace lm::dpdk {

// Every frame offered counts as transmitted (a dropped one is released here,
// as if the wire lost it).
size_t ImpairedPort::transmit(Frame* frames, size_t n) {
  std::uniform_real_distribution<double> u(0, 1);
  // Frames the device refused last time go first (they are older); frames
  // held back to reorder them go after this call's frames.
  out_.assign(backlog_.begin(), backlog_.end());
  backlog_.clear();
  std::vector<Frame> delayed;
  for (size_t i = 0; i < n; ++i) {
    Frame f = frames[i];
    if (u(rng_) < imp_.loss) {
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
  backlog_.assign(out_.begin() + ptrdiff_t(sent), out_.end());
  return n;
}

}  // namespace lm::dpdk
