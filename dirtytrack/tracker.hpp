// Dirty-page trackers behind one interface, called once per round:
//
//   prepare(request)-> optional: what start() needs that the process does
//                      not see, done ahead
//   start(request)  -> mappings in scope, populated pages (for round 0)
//   protect_next()  -> when start() was asked to protect in chunks: tracks
//                      the next chunk, returns its populated pages (round
//                      0's), until none is left; then collect() may run
//   collect()       -> pages dirtied since the last collect (or start),
//                      mapping changes, current mapping set, scan time
//   collect_final() -> collect() on a frozen target whose tracking ends
//                      after it: the same pages, nothing re-protected
//   hold(pages)     -> leave these (hot) pages writable until the freeze
//   stop()          -> undo everything in the target
//
// Backends (one file each): uffd-wp, soft-dirty, hash. A constant registry
// {name, probe, factory} lists them by preference; "auto" picks the first
// available on this host.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "dirtytrack/maps.hpp"
#include "dirtytrack/probe.hpp"
#include "dirtytrack/process_freezer.hpp"
#include "dirtytrack/ranges.hpp"

namespace lm::dt {

struct TrackRequest {
  pid_t pid = 0;
  Scope scope;  // all migratable mappings, or only given ranges
  // An existing hold on the target to run remote system calls through (the
  // engine's freeze). When null, the tracker seizes the target briefly itself.
  ProcessFreezer* freezer = nullptr;
  // 0: start() tracks the whole scope before it returns. Otherwise a backend
  // whose start is costly per page (uffd-wp: write-protecting every PTE) may
  // only prepare in start() and leave the per-page work to protect_next(),
  // about this many bytes of the scope at a time; the others ignore it.
  uint64_t protect_chunk_bytes = 0;
};

struct StartInfo {
  MappingList mappings;  // in scope, clipped to it
  // Pages holding data at start (present or swapped, not the shared zero
  // page, not untouched file pages of private file mappings). Round 0 sends
  // these; every other page in scope reads as zero. Of the part start()
  // tracked: protect_next() reports the rest's, chunk by chunk.
  RangeList populated;
  uint64_t setup_ns = 0;
};

struct CollectResult {
  // Pages dirtied since the previous collect, sorted and coalesced. Includes
  // every page of mappings that appeared (new, moved, replaced: their content
  // is new to the destination), and pages that were discarded
  // (MADV_DONTNEED: they now read as zero).
  RangeList dirty;
  uint64_t dirty_pages = 0;
  std::vector<MappingChange> changes;
  // Pages left writable since hold(): dirty as far as anyone knows, never in
  // `dirty`; sent after the freeze. Within the current mappings.
  RangeList held;
  MappingList mappings;  // the current set in scope
  uint64_t scan_ns = 0;  // time spent in collect()
};

class Tracker {
 public:
  virtual ~Tracker() = default;
  virtual std::string_view name() const = 0;
  // The part of start() that changes nothing the process sees and may run
  // ahead of it, e.g. beside the engine's handshake, before the destination
  // is ready (uffd-wp: its userfaultfd made inside the target, which seizes
  // it for a moment; nothing registered, nothing protected). start() does
  // whatever prepare() did not, for the same pid. Undone by stop() or by
  // destroying the tracker. Default: nothing to prepare.
  virtual Result<void> prepare(const TrackRequest& request) {
    (void)request;
    return ok();
  }
  virtual Result<StartInfo> start(const TrackRequest& request) = 0;
  // After a start() asked for chunks: tracks the next chunk of the scope and
  // returns its pages holding data (as StartInfo::populated), or nullopt
  // when the whole scope is tracked (at once for a backend that ignores
  // chunks). A page is tracked from its chunk's call on: read after it, it
  // is sent with every write before the read, and a write after the read is
  // in a later collect. collect() fails until this returned nullopt. An
  // error leaves the tracker to stop(), which undoes every chunk.
  virtual Result<std::optional<RangeList>> protect_next() { return std::optional<RangeList>{}; }
  virtual Result<CollectResult> collect() = 0;
  // The last collect, with the target frozen, before stop(): every page
  // collect() would report, without re-arming the tracking for another
  // round (uffd-wp: the scan protects nothing and registers nothing new).
  // A collect() after it reports those pages again: it never loses one.
  virtual Result<CollectResult> collect_final() { return collect(); }
  // From the next collect on, `pages` (hot: written round after round) are
  // no longer write-protected again, so the process's writes to them stop
  // faulting; collect reports them in `held`. Adds to earlier holds. A
  // backend without write protection ignores it (its pages stay in `dirty`).
  virtual void hold(const RangeList& pages) { (void)pages; }
  // Leaves the target as it was before start(). freezer: the caller's hold
  // on the target if it has one (stop works while the engine keeps the
  // target frozen). Idempotent.
  virtual Result<void> stop(ProcessFreezer* freezer = nullptr) = 0;
};

struct TrackerBackend {
  std::string_view name;
  std::string_view summary;
  // Available on this host, or unavailable and why.
  Capability (*probe)(const DirtyTrackCaps& caps);
  std::unique_ptr<Tracker> (*make)();
};

// Every backend, in order of preference.
std::span<const TrackerBackend> tracker_backends();
// The backends available on this host, in order of preference.
std::vector<const TrackerBackend*> available_trackers(const DirtyTrackCaps& caps);
// A tracker by name ("auto" = first available). An unknown name or an
// unavailable backend is an error that says why.
Result<std::unique_ptr<Tracker>> make_tracker(std::string_view name, const DirtyTrackCaps& caps);
// The same, probing the host itself for only what the choice needs: the
// soft-dirty probe runs only for "soft-dirty", or for "auto" when uffd-wp
// is unavailable.
Result<std::unique_ptr<Tracker>> make_tracker(std::string_view name);

// Pages of pid within `ranges` that hold data (see StartInfo::populated),
// via PAGEMAP_SCAN. Call it before a uffd-wp tracker starts on the same
// pages: its write-protect markers on untouched pages look "swapped".
Result<RangeList> populated_pages(pid_t pid, const MappingList& mappings);
// The same for one mapping (or part of one), added to `out` (sorted, coalesced).
class PagemapScanner;
Result<void> scan_populated(PagemapScanner& scanner, const Mapping& m, RangeList& out);

// Factories, one per backend file.
std::unique_ptr<Tracker> make_uffd_wp_tracker();
std::unique_ptr<Tracker> make_soft_dirty_tracker();
std::unique_ptr<Tracker> make_hash_tracker();

}  // namespace lm::dt
