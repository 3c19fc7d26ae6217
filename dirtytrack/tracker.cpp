// The tracker registry and what the backends share.
#include "dirtytrack/tracker.hpp"

#include "dirtytrack/pagemap_scan.hpp"

namespace lm::dt {

namespace {

Capability probe_uffd_wp(const DirtyTrackCaps& c) {
  for (const Capability* need : {&c.userfaultfd, &c.uffd_wp_async, &c.uffd_wp_unpopulated, &c.pagemap_scan,
                                 &c.ptrace, &c.pidfd_getfd})
    if (!need->available) return {false, need->detail};
  return {true, "userfaultfd WP_ASYNC + WP_UNPOPULATED, PAGEMAP_SCAN, ptrace, pidfd_getfd"};
}

Capability probe_soft_dirty_backend(const DirtyTrackCaps& c) {
  if (!c.soft_dirty.available) return c.soft_dirty;
  if (!c.pagemap_scan.available) return {false, "needs PAGEMAP_SCAN: " + c.pagemap_scan.detail};
  return {true, "clear_refs + PAGEMAP_SCAN PAGE_IS_SOFT_DIRTY"};
}

Capability probe_hash(const DirtyTrackCaps& c) {
  if (!c.process_vm_readv.available) return c.process_vm_readv;
  return {true, "reads and hashes every page each round (xxHash)"};
}

constexpr TrackerBackend kBackends[] = {
    {"uffd-wp", "userfaultfd async write-protect, collected with PAGEMAP_SCAN", probe_uffd_wp,
     make_uffd_wp_tracker},
    {"soft-dirty", "clear_refs + soft-dirty bits (CONFIG_MEM_SOFT_DIRTY)", probe_soft_dirty_backend,
     make_soft_dirty_tracker},
    {"hash", "hash every page every round; portable reference, slow", probe_hash, make_hash_tracker},
};

}  // namespace

std::span<const TrackerBackend> tracker_backends() { return kBackends; }

std::vector<const TrackerBackend*> available_trackers(const DirtyTrackCaps& caps) {
  std::vector<const TrackerBackend*> out;
  for (const auto& b : kBackends)
    if (b.probe(caps).available) out.push_back(&b);
  return out;
}

Result<std::unique_ptr<Tracker>> make_tracker(std::string_view name, const DirtyTrackCaps& caps) {
  if (name == "auto") {
    auto avail = available_trackers(caps);
    if (avail.empty()) return Error::msg("no dirty tracker is available on this host (see 'livemig check')");
    return avail.front()->make();
  }
  std::string known;
  for (const auto& b : kBackends) {
    if (b.name == name) {
      Capability cap = b.probe(caps);
      if (!cap.available)
        return Error::msg(strf("tracker '%s' is unavailable on this host: %s", b.name.data(), cap.detail.c_str()));
      return b.make();
    }
    known += (known.empty() ? "" : ", ") + std::string(b.name);
  }
  return Error::msg(strf("unknown tracker '%.*s' (known: auto, %s)", int(name.size()), name.data(), known.c_str()));
}

Result<std::unique_ptr<Tracker>> make_tracker(std::string_view name) {
  DirtyTrackCaps caps = probe_dirtytrack(SoftDirtyProbe::skip);
  if (name == "soft-dirty" || (name == "auto" && !probe_uffd_wp(caps).available)) caps.soft_dirty = probe_soft_dirty();
  return make_tracker(name, caps);
}

Result<void> scan_populated(PagemapScanner& scanner, const Mapping& m, RangeList& out) {
  // Untouched pages of a private file mapping are the file's: only the
  // written (anonymous) ones hold process data.
  uint64_t exclude = PAGE_IS_PFNZERO | (m.inode != 0 && !m.shared ? PAGE_IS_FILE : 0);
  ScanQuery q{0, exclude, exclude, PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_PRESENT | PAGE_IS_SWAPPED};
  return scanner.scan(m.range(), q, out);
}

Result<RangeList> populated_pages(pid_t pid, const MappingList& mappings) {
  PagemapScanner scanner = LM_TRY(PagemapScanner::open(pid));
  RangeList out;
  for (const auto& m : mappings) LM_TRY(scan_populated(scanner, m, out));
  return out;
}

}  // namespace lm::dt
