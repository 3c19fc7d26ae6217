// A process's address space from /proc/PID/maps: parsing, the choice of what
// to migrate, and the differences between two reads (one per round).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "common/page.hpp"
#include "dirtytrack/ranges.hpp"

namespace lm::dt {

enum class MappingKind { anonymous, heap, stack, file, vdso, vvar, vsyscall, special };
std::string_view mapping_kind_name(MappingKind k);

struct Mapping {
  uint64_t start = 0;
  uint64_t end = 0;
  bool read = false, write = false, exec = false, shared = false;
  uint64_t offset = 0;
  uint32_t dev_major = 0, dev_minor = 0;
  uint64_t inode = 0;
  std::string path;  // "" for anonymous, "[heap]", "/usr/lib/...", "/memfd:x (deleted)"
  MappingKind kind = MappingKind::anonymous;

  PageRange range() const { return {start, end}; }
  uint64_t bytes() const { return end - start; }
  // Same object at the same place: start, end, permissions and backing.
  bool same_as(const Mapping& o) const;
};

using MappingList = std::vector<Mapping>;

// Parses the text of a maps file (exposed for tests).
Result<MappingList> parse_maps(std::string_view text);
// Reads /proc/PID/maps. A vanished process is an error naming the PID.
Result<MappingList> read_maps(pid_t pid);

// What migration copies: private writable memory (heap, stack, anonymous,
// private file mappings whose written pages became anonymous). Skipped:
// vdso/vvar/vsyscall, guard pages (no permissions), read-only or shared files.
bool is_migratable(const Mapping& m);

// What a tracker covers.
enum class ScopeKind {
  migratable,  // every migratable mapping, re-read each round
  ranges,      // only the given address ranges (e.g. the guest's RAM); any
               // writable mapping inside them counts, shared ones included
};

struct Scope {
  ScopeKind kind = ScopeKind::migratable;
  RangeList ranges;  // sorted, coalesced; used when kind == ranges
};

// The mappings a scope selects, clipped to the scope's ranges.
MappingList select(const MappingList& all, const Scope& scope);
RangeList ranges_of(const MappingList& mappings);  // sorted, coalesced

struct MappingChange {
  enum class Kind { added, removed, grown, shrunk, remapped, replaced };
  Kind kind;
  Mapping before;  // unset (start == end == 0) for added
  Mapping after;   // unset for removed
};
std::string_view change_kind_name(MappingChange::Kind k);

// Differences from one selection to the next. Matching is by start address;
// a removed and an added anonymous mapping of the same size and permissions
// are reported as one 'remapped' (maps shows no more than that of a move).
std::vector<MappingChange> diff_mappings(const MappingList& before, const MappingList& after);

}  // namespace lm::dt
