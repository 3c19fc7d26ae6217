// Where the destination's pages go and what runs from them: the seam between
// the destination's phase machine (engine/destination.cpp) and the memory it
// fills. Implementations: the image sink (engine/image_sink.hpp: memory per
// mapping of an unmodified process, kept as an image), the guest-RAM sink
// (GuestRamSink, in the harness: livemig-guest's RAM, resumed), and the fakes
// of the engine tests. The engine calls it once per phase, never per page:
// pages are written straight into the regions it hands out.
//
//   prepare ─> [adopt ─> drop ...] ─> take_exec_state ─> [postcopy_ram] ─>
//   resume ─> wait_running ─> wait_ready ─> [progress ...] ─> keep | discard
//
// A newer mapping table is an adopt (regions for its new mappings, holding
// what the old regions had at the addresses they share) then a drop (the
// regions it no longer has, released), both while no page is being written.
//
// One migration per sink. discard() may come at any point, also before
// prepare() (a session that never came) and after a failed call.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "engine/config.hpp"
#include "common/fd.hpp"
#include "compress/compressor.hpp"
#include "engine/postcopy_destination.hpp"
#include "transport/channel.hpp"
#include "transport/protocol.hpp"

namespace lm::engine {

// Destination memory for one mapping of the source, by source address. The
// engine writes pages through `base` (a mapping of `memfd`, or the sink's
// anonymous memory; both stay the sink's), or, when base is null, into
// process `pid` at the same address with process_vm_writev (a resumed
// guest's anonymous RAM, which has no fd to map).
struct SinkRegion {
  uint64_t addr = 0;
  uint64_t bytes = 0;
  uint8_t* base = nullptr;
  int memfd = -1;
  pid_t pid = -1;
};

// How a sink made its memory ready before `ready` (reported to the source).
struct PreparedMemory {
  uint64_t population_ns = 0;  // writing every page in (0: not populated)
  std::string kind;            // "hugetlb", "anon-thp", "shmem"; empty: the sink does not say
};

// How the memory is filled: from the bulk channels only (pre-copy), or also
// by serving the resumed VM's faults (post-copy: nothing preallocated, a
// userfaultfd on the VM's mapping).
enum class ServeFaults { no, yes };

// How long a sink may wait for what it runs, and what ends the wait early.
struct SinkWait {
  transport::Timeout timeout{kDefaultPeerTimeout};
  // Asked every 200 ms; true ends the wait with ECANCELED (a cancel, or a
  // post-copy link that broke meanwhile). Empty: only the timeout.
  std::function<bool()> stopped;
};

// When a sink's memory is committed: all of it at prepare/adopt (a guest's
// RAM: the destination's admission charges the mappings' whole size), or page
// by page as pages arrive (the image's sparse anonymous memory: a process may
// reserve terabytes and touch megabytes; the destination charges each
// distinct page received against its RAM limit instead).
enum class MemoryCommit { up_front, per_page };

class PageSink {
 public:
  virtual ~PageSink() = default;

  virtual MemoryCommit memory_commit() const { return MemoryCommit::up_front; }

  // Memory for the mappings the source announced, before the destination
  // says `ready`: the regions the receivers write into.
  virtual Result<std::vector<SinkRegion>> prepare(const transport::MappingTable& table, ServeFaults faults,
                                                  const SinkWait& wait) = 0;
  // After prepare: how its memory was made ready.
  virtual PreparedMemory prepared() const { return {}; }
  // A newer mapping table, announced in band: the regions added for its new
  // mappings; where one overlaps a held region (a mapping grown or replaced)
  // it takes over the pages held there. A sink that cannot follow the change
  // refuses it.
  virtual Result<std::vector<SinkRegion>> adopt(const transport::MappingTable& table) = 0;
  // After adopt: the regions held for no mapping of the table with the same
  // extent are released, and their ranges returned; the engine writes
  // nothing there any more. A sink whose regions all stay (a guest's one RAM
  // mapping) returns none.
  virtual Result<std::vector<PageRange>> drop(const transport::MappingTable&) { return std::vector<PageRange>{}; }
  // The source's commit: the state to resume from (the view is valid during
  // the call only).
  virtual Result<void> take_exec_state(const transport::ExecStateView& state) = 0;
  // Post-copy: the RAM whose faults the destination serves, registered with
  // a userfaultfd. A sink from which nothing runs cannot do post-copy and
  // says so.
  virtual Result<PostcopyGuestRam> postcopy_ram() = 0;

  // Whether a VM runs from the pages (the destination reports `resumed`) or
  // they are only kept (`ready`).
  virtual bool resumes_vm() const = 0;
  // Lets the VM run; nothing for a sink that only keeps the pages.
  virtual Result<void> resume() = 0;
  // The VM's report that it runs, after resume(): its CLOCK_MONOTONIC time
  // (a sink that runs nothing: now).
  virtual Result<uint64_t> wait_running(const SinkWait& wait) = 0;
  // After the report: waits until the VM can be talked to (the guest's READY).
  virtual Result<void> wait_ready(transport::Timeout timeout) = 0;
  // The VM's progress so far (guest steps), for the post-copy rate; after
  // wait_ready. nullopt when it has none or cannot say.
  virtual std::optional<uint64_t> progress() = 0;

  // The source's verdict released the copy to this side; `table` is the
  // source's last mapping table.
  virtual Result<void> keep(const transport::MappingTable& table) = 0;
  // The copy is discarded, or the VM lost: whatever runs from it is ended.
  virtual void discard() = 0;
};

// A memfd and the engine's shared mapping of it, or the engine's own
// anonymous memory (memfd() -1; unmapped when destroyed): the memory of one
// SinkRegion.
class MappedMemfd {
 public:
  // Prealloc::yes allocates and maps the memory up front (fallocate +
  // MAP_POPULATE), like QEMU's -mem-prealloc: first touch of fresh memory
  // costs several µs per page on these machines, which would otherwise be
  // paid page by page while receiving.
  enum class Prealloc { no, yes };
  static Result<MappedMemfd> map(uint64_t addr, uint64_t bytes, UniqueFd memfd, Prealloc prealloc);
  // A new memfd of `bytes`, mapped.
  static Result<MappedMemfd> create(uint64_t addr, uint64_t bytes);
  // Anonymous private memory, for memory nothing else maps: on transparent
  // huge pages (MADV_HUGEPAGE) and written in when `populate` (see
  // population_ns()); else on 4 KiB pages (MADV_NOHUGEPAGE), so that a
  // sparse write commits one page, not 2 MiB.
  static Result<MappedMemfd> anonymous(uint64_t addr, uint64_t bytes, bool populate);
  // What populating it took (map with Prealloc::yes, anonymous with populate).
  uint64_t population_ns() const { return population_ns_; }

  SinkRegion region() const { return {addr_, bytes_, base_, memfd_.get()}; }
  uint64_t addr() const { return addr_; }
  uint64_t bytes() const { return bytes_; }
  uint8_t* base() const { return base_; }
  int memfd() const { return memfd_.get(); }

  MappedMemfd(MappedMemfd&& o) noexcept;
  MappedMemfd& operator=(MappedMemfd&& o) noexcept;
  ~MappedMemfd();

 private:
  MappedMemfd() = default;
  uint64_t addr_ = 0;
  uint64_t bytes_ = 0;
  UniqueFd memfd_;
  uint8_t* base_ = nullptr;
  uint64_t population_ns_ = 0;
};

// Writes received page batches into another process (its memory at the
// pages' own addresses) with process_vm_writev, one call per up to IOV_MAX
// pieces: raw pages straight from the payload, other codecs decoded into a
// scratch buffer first (a delta onto the page's current bytes, read from the
// process). One per receiving thread.
class ProcessPageWriter {
 public:
  // `visit` sees each page's bytes before they are written (hashing).
  Result<void> write(pid_t pid, std::span<const PageEntry> entries, std::span<const uint8_t> payload,
                     compress::Decompressor& decompressor, const compress::PageVisitor& visit = {});

 private:
  Result<void> read_delta_bases(pid_t pid, std::span<const PageEntry> entries);
  std::vector<uint8_t*> dst_;
  std::unique_ptr<uint8_t[]> scratch_;
  size_t scratch_pages_ = 0;
  std::vector<iovec> local_, remote_;
};

}  // namespace lm::engine
