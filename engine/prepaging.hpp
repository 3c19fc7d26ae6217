// Pre-paging for post-copy: which not-yet-sent pages the source pushes next,
// given the destination's recent faults. Every page of the needed set is
// handed out exactly once, whether pushed or requested.
//
//   none            demand paging only; the pages never asked for are pushed
//                   in address order once faults stopped for a while, so the
//                   migration still completes
//   sequential      address order from the lowest page
//   bubble          around the latest fault (the pivot), alternating forward
//                   and backward (Hines & Gopalan's bidirectional bubble)
//   bubble-forward  forward from the latest fault only
//   pivots > 1      the k most recent faults each grow a bubble, served in turn
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "common/page.hpp"

namespace lm::engine {

enum class PrepagingKind { none, sequential, bubble, bubble_forward };

Result<PrepagingKind> parse_prepaging(std::string_view name);
std::string_view prepaging_name(PrepagingKind k);

// Not thread-safe: the source serialises calls under one lock.
class Prepager {
 public:
  // `needed`: sorted, disjoint page ranges the destination must receive.
  Prepager(PrepagingKind kind, unsigned pivots, std::span<const PageRange> needed);

  // A demand fault at addr: marks it sent (true if it was not yet) and makes it a pivot.
  bool on_fault(uint64_t addr);
  // Up to out.size() unsent pages in policy order, marked sent; `idle` says
  // the destination has not faulted for a while (policy none then drains).
  size_t next(std::span<uint64_t> out, bool idle);

  uint64_t total() const { return total_; }
  uint64_t unsent() const { return unsent_; }
  PrepagingKind kind() const { return kind_; }

 private:
  struct Pivot {
    uint64_t center;  // page index
    uint64_t forward;   // next index to try forward
    uint64_t backward;  // one past the next index to try backward (0: exhausted)
    bool forward_turn = true;
  };
  bool take(uint64_t index);             // marks sent; false if it was
  uint64_t index_of(uint64_t addr) const;  // total_ if outside the set
  uint64_t addr_of(uint64_t index) const;
  bool from_pivot(Pivot& p, uint64_t& index);

  PrepagingKind kind_;
  unsigned max_pivots_;
  std::vector<PageRange> ranges_;
  std::vector<uint64_t> first_index_;  // index of ranges_[i].start
  std::vector<uint64_t> sent_;         // bitmap by index
  uint64_t total_ = 0;
  uint64_t unsent_ = 0;
  uint64_t sequential_ = 0;  // cursor of the address-order sweep
  std::vector<Pivot> pivots_;  // oldest first
  size_t turn_ = 0;
};

}  // namespace lm::engine
