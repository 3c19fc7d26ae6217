// The mappings a tracker covers, re-read from /proc/PID/maps each round.
// Shared by the tracker backends.
#pragma once

#include <sys/types.h>

#include "common/error.hpp"
#include "dirtytrack/maps.hpp"

namespace lm::dt {

class ScopedAddressSpace {
 public:
  Result<void> init(pid_t pid, const Scope& scope);
  // Re-reads the maps; returns what changed since the previous read. A
  // process that exited is an error naming the PID.
  Result<std::vector<MappingChange>> refresh();

  pid_t pid() const { return pid_; }
  const Scope& scope() const { return scope_; }
  const MappingList& mappings() const { return mappings_; }
  const RangeList& ranges() const { return ranges_; }

 private:
  Result<MappingList> read_selected() const;
  pid_t pid_ = 0;
  Scope scope_;
  MappingList mappings_;
  RangeList ranges_;
};

// Where mappings appeared this round (added, moved, replaced, or the new part
// of a grown one): all their pages are new content to the destination.
RangeList appeared_ranges(const std::vector<MappingChange>& changes);

// The mappings a tracker of `scope` would cover, read from maps without
// tracking anything (the session announces them before tracking starts).
Result<MappingList> scoped_mappings(pid_t pid, const Scope& scope);

// "pid N: no such process" when pid does not exist (before any attach).
Result<void> check_process_exists(pid_t pid);

}  // namespace lm::dt
