#include "engine/prepaging.hpp"

#include <algorithm>

#include "common/strf.hpp"

namespace lm::engine {

Result<PrepagingKind> parse_prepaging(std::string_view name) {
  if (name == "none") return PrepagingKind::none;
  if (name == "sequential") return PrepagingKind::sequential;
  if (name == "bubble") return PrepagingKind::bubble;
  if (name == "bubble-forward") return PrepagingKind::bubble_forward;
  return Error::msg(strf("unknown pre-paging policy '%.*s' (none, sequential, bubble, bubble-forward)",
                         int(name.size()), name.data()));
}

std::string_view prepaging_name(PrepagingKind k) {
  switch (k) {
    case PrepagingKind::none: return "none";
    case PrepagingKind::sequential: return "sequential";
    case PrepagingKind::bubble: return "bubble";
    case PrepagingKind::bubble_forward: return "bubble-forward";
  }
  return "?";
}

Prepager::Prepager(PrepagingKind kind, unsigned pivots, std::span<const PageRange> needed)
    : kind_(kind), max_pivots_(std::max(1u, pivots)), ranges_(needed.begin(), needed.end()) {
  for (const auto& r : ranges_) {
    first_index_.push_back(total_);
    total_ += r.pages();
  }
  unsent_ = total_;
  sent_.assign((total_ + 63) / 64, 0);
}

bool Prepager::take(uint64_t index) {
  uint64_t bit = uint64_t(1) << (index % 64);
  if (sent_[index / 64] & bit) return false;
  sent_[index / 64] |= bit;
  unsent_--;
  return true;
}

uint64_t Prepager::index_of(uint64_t addr) const {
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), addr,
                             [](uint64_t a, const PageRange& r) { return a < r.start; });
  if (it == ranges_.begin()) return total_;
  --it;
  if (!it->contains(addr)) return total_;
  return first_index_[size_t(it - ranges_.begin())] + (addr - it->start) / kPageSize;
}

uint64_t Prepager::addr_of(uint64_t index) const {
  auto it = std::upper_bound(first_index_.begin(), first_index_.end(), index);
  size_t r = size_t(it - first_index_.begin()) - 1;
  return ranges_[r].start + (index - first_index_[r]) * kPageSize;
}

bool Prepager::on_fault(uint64_t addr) {
  uint64_t index = index_of(addr);
  if (index >= total_) return false;
  bool fresh = take(index);
  if (kind_ == PrepagingKind::bubble || kind_ == PrepagingKind::bubble_forward) {
    pivots_.push_back({index, index + 1, index, true});
    if (pivots_.size() > max_pivots_) pivots_.erase(pivots_.begin());
  }
  return fresh;
}

// The next unsent page of a pivot's bubble; false when the bubble is exhausted.
bool Prepager::from_pivot(Pivot& p, uint64_t& index) {
  const bool both = kind_ == PrepagingKind::bubble;
  while (true) {
    bool can_forward = p.forward < total_;
    bool can_backward = both && p.backward > 0;
    if (!can_forward && !can_backward) return false;
    bool forward = can_forward && (!can_backward || p.forward_turn);
    uint64_t i = forward ? p.forward++ : --p.backward;
    p.forward_turn = !forward;
    if (take(i)) {
      index = i;
      return true;
    }
  }
}

size_t Prepager::next(std::span<uint64_t> out, bool idle) {
  size_t n = 0;
  if (kind_ == PrepagingKind::none && !idle) return 0;
  while (n < out.size() && unsent_ > 0) {
    uint64_t index = total_;
    while (!pivots_.empty() && index == total_) {
      size_t k = (turn_++) % pivots_.size();
      // The newest pivot gets every other page: it is where the guest runs now.
      if (turn_ % 2 == 0) k = pivots_.size() - 1;
      if (!from_pivot(pivots_[k], index)) {
        pivots_.erase(pivots_.begin() + ptrdiff_t(k));
        index = total_;
      }
    }
    if (index == total_) {
      while (sequential_ < total_ && !take(sequential_)) sequential_++;
      if (sequential_ >= total_) break;
      index = sequential_++;
    }
    out[n++] = addr_of(index);
  }
  return n;
}

}  // namespace lm::engine
