// uffd-wp: a userfaultfd created inside the target (UFFDIO_* act on the mm
// of the process that created the fd), registered for async write-protect
// (with WP_UNPOPULATED: untouched pages get markers) per mapping. start()
// registers every mapping in scope; the protection, which rewrites every
// populated PTE (~30 ms per GiB here), follows at once or, when asked,
// chunk by chunk in protect_next() while the engine sends round 0. collect():
//   1. PAGEMAP_SCAN's get-and-re-protect of WRITTEN pages, outside the held
//      (hot) pages, which stay writable and are reported held until the end.
//      Its fast path (category_mask == return_mask == WRITTEN) treats an
//      empty PTE as written and puts a marker on it: that is how a page
//      discarded by MADV_DONTNEED (an empty PTE, no marker: anonymous zaps
//      drop them) shows up, once. VMAs not registered are skipped silently.
//   2. then mappings not registered (new, moved by mremap, grown by brk into
//      a new VMA, replaced in place, or registered ones that lost their
//      registration to a neighbour's mremap) are found by scanning for
//      !WPALLOWED, registered, cleared of stale WP bits, protected, and
//      counted dirty as a whole. Step 2 comes after step 1 so that a VMA
//      unregistered while step 1 skipped it is still caught in this collect.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include <algorithm>
#include <optional>
#include <span>

#include "common/clock.hpp"
#include "common/fd.hpp"
#include "dirtytrack/address_space.hpp"
#include "dirtytrack/pagemap_scan.hpp"
#include "dirtytrack/remote_syscall.hpp"
#include "dirtytrack/tracker.hpp"

namespace lm::dt {

namespace {

// Registering for WP (with WP_UNPOPULATED) makes the kernel build page
// tables and markers over the whole mapping on the first protect, about
// 0.2% of its size: an ASan build's shadow (~100 TiB reserved) exhausted
// 24 GiB of RAM that way. Larger mappings are not registered; their
// populated pages count dirty every round instead.
constexpr uint64_t kMaxRegisterBytes = 64ull << 30;

constexpr ScanQuery kUnregistered{0, PAGE_IS_WPALLOWED, PAGE_IS_WPALLOWED, 0, PAGE_IS_WPALLOWED};
constexpr ScanQuery kPresent{0, PAGE_IS_PFNZERO, PAGE_IS_PRESENT | PAGE_IS_PFNZERO, 0, PAGE_IS_PRESENT};

class UffdWpTracker final : public Tracker {
 public:
  std::string_view name() const override { return "uffd-wp"; }
  ~UffdWpTracker() override { (void)stop(nullptr); }

  // The userfaultfd, made in the target (a ptrace seize of its threads for
  // the remote call: tens of ms under load) and set up for async WP. Until
  // start() registers a mapping it does nothing to the target.
  Result<void> prepare(const TrackRequest& request) override {
    if (started_) return Error::msg(strf("pid %d: uffd-wp tracker already started", request.pid));
    if (uffd_.valid()) {
      if (prepared_for_ == request.pid) return ok();
      return Error::msg(strf("pid %d: uffd-wp tracker prepared for pid %d", request.pid, prepared_for_));
    }
    UniqueFd uffd = LM_TRY_CTX(create_uffd(request), "uffd-wp tracker");
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
    if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0)
      return Error::from_errno(strf("pid %d: UFFDIO_API (WP_ASYNC|WP_UNPOPULATED)", request.pid));
    uffd_ = std::move(uffd);
    prepared_for_ = request.pid;
    return ok();
  }

  // Registers every mapping (cheap: no page is touched) and plans the
  // protection in chunks. Without chunks it protects them all here;
  // otherwise protect_next() does, chunk by chunk, while the engine sends
  // round 0 (docs/dirtytrack.md, "Start in chunks").
  Result<StartInfo> start(const TrackRequest& request) override {
    if (started_) return Error::msg(strf("pid %d: uffd-wp tracker already started", space_.pid()));
    Stopwatch sw;
    LM_TRY(space_.init(request.pid, request.scope));
    scanner_.emplace(LM_TRY(PagemapScanner::open(request.pid)));
    LM_TRY(prepare(request));
    started_ = true;
    plan(space_.mappings(), request.protect_chunk_bytes);
    StartInfo info;
    if (request.protect_chunk_bytes == 0)
      while (auto chunk = LM_TRY(protect_next())) info.populated = unite(info.populated, *chunk);
    info.mappings = space_.mappings();
    info.setup_ns = sw.elapsed_ns();
    return info;
  }

  // Populated pages of the chunk: those holding data before it is protected,
  // plus those that became present while it was (written in between, so not
  // WRITTEN afterwards).
  Result<std::optional<RangeList>> protect_next() override {
    if (!started_) return Error::msg("uffd-wp tracker: protect_next before start");
    if (next_piece_ == pieces_.size()) return std::optional<RangeList>{};
    const size_t first = next_piece_;
    uint64_t bytes = 0;
    do bytes += pieces_[next_piece_++].part.bytes();
    while (next_piece_ < pieces_.size() && bytes + pieces_[next_piece_].part.bytes() <= chunk_bytes_);
    const std::span<const Piece> chunk(pieces_.data() + first, next_piece_ - first);
    RangeList before;
    for (const auto& p : chunk) LM_TRY(scan_populated(*scanner_, p.part, before));
    for (const auto& p : chunk)
      if (p.registered) LM_TRY(protect(p.part.range()));
    RangeList after;
    for (const auto& p : chunk) {
      ScanQuery q = kPresent;
      if (p.part.inode != 0 && !p.part.shared) {  // the file's own pages are not process data
        q.category_mask |= PAGE_IS_FILE;
        q.category_inverted |= PAGE_IS_FILE;
      }
      LM_TRY(scanner_->scan(p.part.range(), q, after));
    }
    if (next_piece_ == pieces_.size()) pieces_.clear(), next_piece_ = 0;
    return std::optional<RangeList>{unite(before, after)};
  }

  Result<CollectResult> collect() override { return collect(Rearm::yes); }
  // The target is frozen and tracking ends: nothing is written until stop(),
  // so protecting the written pages again (a PTE write and a TLB flush per
  // written range, in the downtime) would buy nothing.
  Result<CollectResult> collect_final() override { return collect(Rearm::no); }

 private:
  enum class Rearm { no, yes };

  Result<CollectResult> collect(Rearm rearm) {
    if (!started_) return Error::msg("uffd-wp tracker: collect before start");
    if (!pieces_.empty()) return Error::msg(strf("pid %d: uffd-wp tracker: collect before protect_next() "
                                                 "tracked the whole scope", space_.pid()));
    Stopwatch sw;
    CollectResult out;
    out.changes = LM_TRY(space_.refresh());
    const RangeList& ranges = space_.ranges();
    held_ = intersect(held_, ranges);
    RangeList written;
    for (const auto& r : held_.empty() ? ranges : subtract(ranges, held_))
      LM_TRY(scanner_->scan(r, rearm == Rearm::yes ? kGetAndProtectWritten : kGetWritten, written));
    // Mappings not registered now (new, moved, replaced in place, grown into
    // a new VMA, or a registered VMA that a neighbour's mremap merged into
    // and unregistered): their content is new to the destination, zero
    // pages included (they may sit where another mapping was), so they count
    // whole. Those above kMaxRegisterBytes stay unregistered and count by
    // their populated pages, every round.
    RangeList unregistered;
    for (const auto& r : ranges) LM_TRY(scanner_->scan(r, kUnregistered, unregistered));
    // Registered by their extent now, not as the maps read above had them:
    // registering part of a VMA splits it, and a mapping made in place of
    // one that went away since would end up in two VMAs, which mremap then
    // refuses (EFAULT) or, on 6.17+, moves only in part.
    MappingList fresh;
    if (!unregistered.empty()) {
      auto now = read_maps(space_.pid());
      if (!now) return std::move(now).error();
      fresh = mappings_touching(select(*now, space_.scope()), unregistered);
    }
    RangeList whole, populated;
    MappingList too_big;
    for (const auto& m : fresh) {
      if (m.bytes() <= kMaxRegisterBytes)
        append_merge(whole, m.range());
      else
        too_big.push_back(m);
    }
    // Only within the mappings this collect reports: a part that maps did
    // not show yet shows next round as appeared, and counts whole then.
    whole = intersect(whole, ranges);
    if (!too_big.empty()) populated = intersect(LM_TRY(populated_pages(space_.pid(), too_big)), ranges);
    if (!fresh.empty() && rearm == Rearm::yes) LM_TRY(register_and_protect(fresh));
    // Also whatever maps shows as having appeared: a mapping moved onto an
    // address after the scan above passed it is registered by nobody yet,
    // but one moved while the scan ran can be missed by it.
    RangeList appeared;
    for (const auto& r : appeared_ranges(out.changes))
      if (r.bytes() <= kMaxRegisterBytes) appeared.push_back(r);
    out.dirty = subtract(unite(unite(written, whole), unite(populated, appeared)), held_);
    out.held = held_;
    out.dirty_pages = total_pages(out.dirty);
    out.mappings = space_.mappings();
    out.scan_ns = sw.elapsed_ns();
    return out;
  }

 public:
  void hold(const RangeList& pages) override { held_ = unite(held_, pages); }

  Result<void> stop(ProcessFreezer*) override {
    // Every UFFDIO_* acts on the target's mm from here, and the target's own
    // copy of the fd was closed at start: stopping needs no ptrace.
    if (!started_) {  // prepared at most: nothing registered
      uffd_.reset();
      return ok();
    }
    auto maps = read_maps(space_.pid());
    if (maps) {
      for (const auto& m : select(*maps, Scope{ScopeKind::migratable, {}})) (void)unregister(m.range());
      for (const auto& m : space_.mappings()) (void)unregister(m.range());
    }
    uffd_.reset();
    started_ = false;
    scanner_.reset();
    held_.clear();
    pieces_.clear();
    next_piece_ = 0;
    return ok();
  }

 private:
  Result<UniqueFd> create_uffd(const TrackRequest& request) {
    std::unique_ptr<ProcessFreezer> own;
    ProcessFreezer* f = request.freezer;
    if (!f) {
      own = LM_TRY(ProcessFreezer::seize(request.pid));
      f = own.get();
    }
    int remote = LM_TRY(remote_userfaultfd(*f, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
    auto local = fetch_fd(request.pid, remote);
    auto closed = remote_close(*f, remote);
    if (own) LM_TRY(own->release());
    if (!local) return std::move(local).error();
    if (!closed) return std::move(closed).error();
    return std::move(*local);
  }

  Result<void> unregister(PageRange r) {
    uffdio_range range{r.start, r.bytes()};
    if (::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range) != 0) return Error::from_errno("UFFDIO_UNREGISTER");
    return ok();
  }

  // The mappings of `mappings` that overlap `ranges`, whole.
  static MappingList mappings_touching(const MappingList& mappings, const RangeList& ranges) {
    MappingList out;
    for (const auto& m : mappings)
      if (!intersect({m.range()}, ranges).empty()) out.push_back(m);
    return out;
  }

  // Registers and write-protects per mapping: one VMA that cannot be
  // registered must not fail its neighbours. A failure (the mapping vanished
  // meanwhile, or cannot be registered) is left for the next round, which
  // finds the range still unregistered and counts it dirty again.
  Result<void> register_and_protect(const MappingList& mappings) {
    for (const auto& m : mappings)
      if (register_wp(m)) LM_TRY(protect(m.range()));
    return ok();
  }

  // Mappings above kMaxRegisterBytes are left alone.
  bool register_wp(const Mapping& m) {
    if (m.bytes() > kMaxRegisterBytes) return false;
    uffdio_register reg{};
    reg.range = {m.start, m.bytes()};
    reg.mode = UFFDIO_REGISTER_MODE_WP;
    return ::ioctl(uffd_.get(), UFFDIO_REGISTER, &reg) == 0;
  }

  // Write-protects a registered range. A VMA that lost its registration
  // (mremap merged a moved VMA into it: the kernel then drops the context
  // without clearing PTEs) keeps the uffd-wp bits of its PTEs, and writes
  // while unregistered leave them writable *with* the bit, which every later
  // scan takes for protected: so the pages that carry a bit or marker are
  // unprotected (UFFDIO_WRITEPROTECT mode 0) before PAGEMAP_SCAN's
  // get-and-protect protects the range. Only those: mode 0 over a whole
  // range rewrites every PTE of it, ~100 ms per 512 MiB populated here (most
  // of the tracker's start), while finding that no page carries one is a
  // walk of ~2 ms. Nothing but this tracker sets the bits (the range is
  // ours: registering fails if another userfaultfd has it), so none appears
  // between the walk and the protect. A range whose bits cannot be cleared
  // (it went away) stays unprotected: a later collect finds it.
  Result<void> protect(PageRange r) {
    RangeList stale, ignored;
    LM_TRY(scanner_->scan(r, kWriteProtected, stale));
    if (!unprotect(stale)) return ok();
    return scanner_->scan(r, kGetAndProtectWritten, ignored);
  }

  bool unprotect(const RangeList& ranges) {
    for (const auto& r : ranges) {
      uffdio_writeprotect clear{};
      clear.range = {r.start, r.bytes()};
      clear.mode = 0;
      if (::ioctl(uffd_.get(), UFFDIO_WRITEPROTECT, &clear) != 0) return false;
    }
    return true;
  }

  // Registers every mapping and cuts the scope into pieces of at most
  // `chunk_bytes` (0: one per mapping) at multiples of it, so that a chunk
  // never splits a huge page. Pieces of mappings not registered (too large,
  // or refused) are protected by nobody: their populated pages still go to
  // round 0, and the first collect finds them unregistered (or, too large,
  // counts their populated pages) as it does for new mappings.
  void plan(const MappingList& mappings, uint64_t chunk_bytes) {
    constexpr uint64_t kHugePage = 2ull << 20;
    chunk_bytes_ = chunk_bytes == 0 ? UINT64_MAX : std::max(kHugePage, chunk_bytes / kHugePage * kHugePage);
    pieces_.clear();
    next_piece_ = 0;
    for (const auto& m : mappings) {
      const bool registered = register_wp(m);
      for (uint64_t at = m.start; at < m.end;) {
        const uint64_t end = chunk_bytes == 0 ? m.end : std::min(m.end, (at / chunk_bytes_ + 1) * chunk_bytes_);
        Mapping part = m;
        part.start = at;
        part.end = end;
        pieces_.push_back({std::move(part), registered});
        at = end;
      }
    }
  }

  struct Piece {
    Mapping part;  // of one mapping
    bool registered;
  };

  ScopedAddressSpace space_;
  std::optional<PagemapScanner> scanner_;
  UniqueFd uffd_;            // made by prepare() (or start()), for prepared_for_
  pid_t prepared_for_ = 0;
  bool started_ = false;     // from start() to stop(): mappings registered
  RangeList held_;  // left writable until the end (hold())
  // What start() registered and protect_next() has yet to protect, in
  // address order; empty once all is protected.
  std::vector<Piece> pieces_;
  size_t next_piece_ = 0;
  uint64_t chunk_bytes_ = 0;
};

}  // namespace

std::unique_ptr<Tracker> make_uffd_wp_tracker() { return std::make_unique<UffdWpTracker>(); }

}  // namespace lm::dt
