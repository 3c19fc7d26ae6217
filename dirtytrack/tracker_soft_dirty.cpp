// soft-dirty: clear_refs "4" clears the soft-dirty bits of the target's
// pages; a write sets the bit again (pagemap bit 55, PAGE_IS_SOFT_DIRTY in
// PAGEMAP_SCAN). New VMAs carry VM_SOFTDIRTY, so new mappings come back
// whole. Kernels without CONFIG_MEM_SOFT_DIRTY accept clear_refs "4" but
// never set the bit: start() probes that and refuses.
//
// Reading the bits and clearing them are two steps; a write between them is
// lost unless the target is frozen across both (as CRIU's pre-dump does).
// start() and collect() therefore freeze the target for maps + read + clear
// when they can (maps too: a mapping created after maps was read but before
// the clear would lose its VM_SOFTDIRTY unseen). An anonymous MADV_DONTNEED leaves no
// soft-dirty trace (the PTE is simply gone), so pages populated at the last
// collect and not populated now are dirty too (they read as zero now), and
// so are pages reported empty at the last collect and zapped since
// (EmptyPageWatch: written after it, read by the engine, then discarded).
#include <fcntl.h>
#include <unistd.h>

#include <optional>

#include "common/clock.hpp"
#include "common/fd.hpp"
#include "dirtytrack/address_space.hpp"
#include "dirtytrack/empty_page_watch.hpp"
#include "dirtytrack/page_reader.hpp"
#include "dirtytrack/pagemap_scan.hpp"
#include "dirtytrack/tracker.hpp"

namespace lm::dt {

namespace {

constexpr ScanQuery kSoftDirty{0, 0, PAGE_IS_SOFT_DIRTY, 0, PAGE_IS_SOFT_DIRTY};

class SoftDirtyTracker final : public Tracker {
 public:
  std::string_view name() const override { return "soft-dirty"; }

  Result<StartInfo> start(const TrackRequest& request) override {
    Stopwatch sw;
    Capability cap = probe_soft_dirty();
    if (!cap.available)
      return Error::msg(strf("pid %d: soft-dirty tracker unavailable: %s", request.pid, cap.detail.c_str()));
    scanner_.emplace(LM_TRY(PagemapScanner::open(request.pid)));
    reader_.emplace(request.pid);
    std::string path = strf("/proc/%d/clear_refs", request.pid);
    clear_refs_.reset(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!clear_refs_.valid()) return Error::from_errno(strf("pid %d: open %s", request.pid, path.c_str()));
    // Frozen as in collect(): a page first written between reading what is
    // populated (the engine's round 0) and the clear would be in neither, its
    // bit cleared, and never sent unless written again.
    auto freezer = ProcessFreezer::seize(request.pid);
    LM_TRY(space_.init(request.pid, request.scope));
    StartInfo info;
    info.populated = LM_TRY(populated_pages(request.pid, space_.mappings()));
    populated_ = info.populated;
    LM_TRY(clear());
    if (freezer) LM_TRY((*freezer)->release());
    info.mappings = space_.mappings();
    info.setup_ns = sw.elapsed_ns();
    return info;
  }

  Result<CollectResult> collect() override { return collect_and(Rearm::yes); }
  // Nothing to map for a next collect: the engine reads these pages in its
  // downtime, once is enough. A collect() after it reports them again.
  Result<CollectResult> collect_final() override { return collect_and(Rearm::no); }

  Result<void> stop(ProcessFreezer*) override {
    clear_refs_.reset();
    scanner_.reset();
    reader_.reset();
    return ok();
  }

 private:
  enum class Rearm : bool { no, yes };

  Result<CollectResult> collect_and(Rearm rearm) {
    if (!clear_refs_.valid()) return Error::msg("soft-dirty tracker: collect before start");
    Stopwatch sw;
    CollectResult out;
    // Frozen when nobody else holds the target (a second seize fails while
    // the engine has it frozen, and then the target is not running anyway).
    auto freezer = ProcessFreezer::seize(space_.pid());
    out.changes = LM_TRY(space_.refresh());
    for (const auto& r : space_.ranges()) LM_TRY(scanner_->scan(r, kSoftDirty, out.dirty));
    RangeList populated = LM_TRY(populated_pages(space_.pid(), space_.mappings()));
    RangeList zapped = LM_TRY(empty_.zapped(*scanner_, space_.ranges()));
    LM_TRY(clear());
    if (freezer) LM_TRY((*freezer)->release());
    RangeList discarded = intersect(subtract(populated_, populated), space_.ranges());
    out.dirty = unite(unite(unite(out.dirty, discarded), zapped), appeared_ranges(out.changes));
    populated_ = std::move(populated);
    // Outside the freeze: a write or a zap racing the read is seen next time.
    empty_.watch(subtract(out.dirty, populated_));
    if (rearm == Rearm::yes) LM_TRY(empty_.map_watched(*reader_));
    out.dirty_pages = total_pages(out.dirty);
    out.mappings = space_.mappings();
    out.scan_ns = sw.elapsed_ns();
    return out;
  }

  Result<void> clear() {
    if (::pwrite(clear_refs_.get(), "4", 1, 0) != 1)
      return Error::from_errno(strf("pid %d: write 4 to clear_refs", space_.pid()));
    return ok();
  }

  ScopedAddressSpace space_;
  std::optional<PagemapScanner> scanner_;
  std::optional<PageReader> reader_;
  UniqueFd clear_refs_;
  RangeList populated_;  // pages holding data at the last collect (or start)
  EmptyPageWatch empty_;  // pages the last collect reported while they held none
};

}  // namespace

std::unique_ptr<Tracker> make_soft_dirty_tracker() { return std::make_unique<SoftDirtyTracker>(); }

}  // namespace lm::dt
