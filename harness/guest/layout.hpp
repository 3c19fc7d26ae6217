// The guest's RAM region holds its whole execution state:
//
//   page 0                 GuestHeader (magic, layout version, configuration)
//   pages 1..              ThreadState[threads] (RNG, step counter, step in progress)
//   then                   uint64_t version[data_pages] (per data page)
//   then                   data pages
//
// A frozen image of the region resumes exactly where it stopped in another
// process at the same address. Everything is fixed-layout and trivially
// copyable; offsets are bytes from the start of the region.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include "common/error.hpp"
#include "common/page.hpp"
#include "harness/guest/content.hpp"

namespace lm::guest {

inline constexpr uint64_t kGuestMagic = 0x314d4c5453455547ull;  // "GUESTLM1"
inline constexpr uint32_t kLayoutVersion = 1;
inline constexpr uint64_t kDefaultRamAddr = 0x400000000000ull;
inline constexpr unsigned kMaxThreads = 64;

enum class Pattern : uint32_t { uniform = 0, hotspot = 1, zipf = 2, sequential = 3, stride = 4 };

// What the guest does; stored in the header so a resumed guest continues the
// same workload.
struct WorkloadConfig {
  uint64_t seed = 1;
  double rate = 1000;  // pages written per second, all threads together; 0 = unlimited
  Pattern pattern = Pattern::uniform;
  double pattern_p1 = 0;  // hotspot: hot fraction; zipf: exponent; stride: pages
  double pattern_p2 = 0;  // hotspot: probability of writing the hot set
  ContentProfile content = ContentProfile::mixed;
  WriteMode write = WriteMode::page;
  uint32_t threads = 1;
};

// "uniform", "hotspot[:F[:P]]", "zipf[:S]", "sequential", "stride[:PAGES]".
Result<void> parse_pattern(std::string_view text, WorkloadConfig& cfg);
std::string pattern_text(const WorkloadConfig& cfg);

struct GuestHeader {
  uint64_t magic;
  uint32_t layout_version;
  uint32_t header_bytes;  // sizeof(GuestHeader)
  uint64_t ram_addr;
  uint64_t ram_size;
  uint64_t seed;
  double rate;
  uint32_t pattern;
  uint32_t content;
  double pattern_p1;
  double pattern_p2;
  uint32_t write_mode;
  uint32_t threads;
  uint64_t thread_state_offset;
  uint64_t version_table_offset;
  uint64_t data_offset;
  uint64_t data_pages;
};
static_assert(sizeof(GuestHeader) == 112);
static_assert(std::is_trivially_copyable_v<GuestHeader>);

// One writer's "registers". A step reads rng/steps, records the step in
// progress (pending_*; informational), writes the page, then commits
// version[page], rng and steps — in that order.
struct alignas(64) ThreadState {
  uint64_t rng;              // splitmix64 state
  uint64_t steps;            // completed steps of this thread
  uint64_t pending_page;     // data page index of the last step begun
  uint64_t pending_version;  // the version that step writes
  uint64_t reserved[4];
};
static_assert(sizeof(ThreadState) == 64);

struct RamLayout {
  uint64_t ram_size = 0;
  uint32_t threads = 0;
  uint64_t thread_state_offset = 0;
  uint64_t version_table_offset = 0;
  uint64_t data_offset = 0;
  uint64_t data_pages = 0;
};

// Splits a region of ram_size bytes (a multiple of the page size) for
// `threads` writers; fails when it leaves no data page per thread.
Result<RamLayout> plan_layout(uint64_t ram_size, uint32_t threads);

// The state inside a mapped region (or a copy of one). Pointers into it.
struct RamView {
  uint8_t* base = nullptr;
  GuestHeader* header = nullptr;
  ThreadState* threads = nullptr;
  uint64_t* versions = nullptr;
  uint8_t* data = nullptr;

  WorkloadConfig config() const;
  uint64_t data_pages() const { return header->data_pages; }
  uint8_t* data_page(uint64_t index) const { return data + index * kPageSize; }
  // Address of a byte of the region in the guest's address space.
  uint64_t guest_addr(const void* p) const {
    return header->ram_addr + uint64_t(static_cast<const uint8_t*>(p) - base);
  }
  uint64_t total_steps() const;

  // Writes a fresh header and thread states (all versions are 0: the region
  // must be zero-filled, as fresh anonymous memory is).
  static Result<RamView> initialize(void* base, uint64_t ram_addr, uint64_t ram_size, const WorkloadConfig& cfg);
  // Validates the header of an existing image: magic, layout version, the
  // address and size it was made for, and that its offsets fit.
  static Result<RamView> attach(void* base, uint64_t ram_addr, uint64_t ram_size);
};

// Maps the RAM region at exactly ram_addr (MAP_FIXED_NOREPLACE): anonymous
// private memory when memfd < 0, else the memfd MAP_SHARED. The error names the
// address and this pid, and says when the range is already mapped.
Result<void*> map_guest_ram(uint64_t ram_addr, uint64_t ram_size, int memfd);

// The page size a new guest asks for its anonymous RAM: transparent huge
// pages (MADV_HUGEPAGE, as QEMU's guest RAM) or 4 KiB pages.
enum class RamPages { huge, small };
Result<RamPages> parse_ram_pages(std::string_view text);
// Maps a new guest's RAM (map_guest_ram, anonymous) and advises its pages.
Result<void*> map_new_guest_ram(uint64_t ram_addr, uint64_t ram_size, RamPages pages);

// strict: every page must match its version. tolerate_pending: a frozen image
// may hold each thread's step in progress half-written; skip those pages.
enum class PendingPages { strict, tolerate };

// Regenerates every data page from the version table and compares. Returns
// the number of data pages checked, or an error
// "page=<ram page index> addr=0x.. version=<v> data-page=<i> offset=<first differing byte> ..."
Result<uint64_t> verify_ram(const RamView& ram, PendingPages pending);

}  // namespace lm::guest
