// The compression seam's main objects.
//
// Compressor: one per worker thread, made from a policy name. Its batch call
// turns pages (addresses + pointers to their current content) into a
// CompressedBatch: one lm::PageEntry per page, in input order, and one
// payload buffer holding the payloads concatenated in entry order — exactly
// what the transport's page-batch message carries. Workers of one migration
// share the delta cache and the adaptive model (make_worker()).
//
// Decompressor: validates a whole batch (entry fields, lengths against the
// payload, destination addresses) and decodes each page straight into its
// destination page.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "common/page.hpp"
#include "common/page_batch.hpp"
#include "compress/adaptive.hpp"
#include "compress/codec.hpp"
#include "compress/delta_cache.hpp"
#include "compress/policy.hpp"
#include "compress/stats.hpp"

namespace lm::compress {

// std::vector that does not zero what resize() adds: the payload buffer is
// sized for the worst case, then written and shrunk.
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <class U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};
using Bytes = std::vector<uint8_t, DefaultInitAllocator<uint8_t>>;

struct CompressedBatch {
  std::vector<PageEntry> entries;
  Bytes payload;

  void clear() {
    entries.clear();
    payload.clear();
  }
  size_t wire_bytes() const { return entries.size() * sizeof(PageEntry) + payload.size(); }
};

// Whether the destination already holds an earlier version of these pages.
// Only re-sent pages use the delta cache (as QEMU's XBZRLE starts after the
// bulk stage): a first send neither looks up nor fills it, so round 0 pays
// no copy into the cache. The last send of a page (the stop-and-copy round)
// uses the versions cached but caches no new page: nothing would use it, and
// a new cache slot costs a first touch (~5 us here) and a copy.
enum class SendKind { first, resend, last };

struct CompressorOptions {
  size_t delta_cache_pages = 16384;  // 64 MiB of last-sent pages; 0 disables delta
  uint32_t delta_max_bytes = 2048;   // a larger delta is not sent; the class codec is used
  unsigned workers = 1;              // compression workers (adaptive: CPU available)
  double link_bytes_per_s = 1.25e9;  // adaptive: link estimate until report_link()
  // adaptive: the destination runs on the same CPUs (one host: loopback,
  // memif, the rig's namespaces), so its receiving and decoding count too.
  bool destination_shares_cpus = false;
};

class Compressor {
 public:
  static Result<std::unique_ptr<Compressor>> create(std::string_view policy, const CompressorOptions& options = {});
  static Result<std::unique_ptr<Compressor>> create(PolicySpec policy, const CompressorOptions& options = {});
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;

  // Another worker for the same migration: same policy, shared delta cache
  // and adaptive model, its own codec contexts and counters.
  std::unique_ptr<Compressor> make_worker() const;

  // Compresses pages[i] (the content of page addrs[i]) into out (cleared
  // first). Pages must not change during the call. Addresses must be page
  // aligned.
  Result<void> compress_batch(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                              CompressedBatch& out, SendKind kind = SendKind::first);
  // As compress_batch, for pages read into one writable buffer (the page of
  // addrs[i] at buffer[i * kPageSize]). When the plan sends every page raw
  // (adaptive on a fast link) the buffer itself becomes the payload, with no
  // copy per page: pages may move within it. Returns the payload: in
  // `buffer`, or out.payload.
  Result<std::span<std::byte>> compress_batch_in(std::span<const uint64_t> addrs, std::span<std::byte> buffer,
                                                 CompressedBatch& out, SendKind kind);

  // Adaptive feedback (no effect on fixed and cbc policies).
  void report_link(const LinkReport& link);
  void probe_link_first();  // AdaptiveModel::probe_link_first
  bool probing_link() const;  // adaptive, sending raw until the link is measured
  void set_workers(unsigned workers);

  const PolicySpec& policy() const { return spec_; }
  Plan current_plan() const;
  const CompressStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }
  DeltaCache* delta_cache() const { return shared_->cache.get(); }
  const AdaptiveModel* model() const { return shared_->model.get(); }

 private:
  struct Shared {
    std::shared_ptr<DeltaCache> cache;
    std::shared_ptr<AdaptiveModel> model;
  };
  Compressor(PolicySpec spec, CompressorOptions options, std::shared_ptr<Shared> shared);
  size_t compress_fixed(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages, CompressedBatch& out,
                        DeltaCache* cache, SendKind kind);
  Result<void> check_batch(std::span<const uint64_t> addrs, size_t pages) const;
  // in_place: the pages lie contiguous there, and may be rearranged into
  // the payload (then *in_place_used is set and out.payload is empty).
  size_t compress_classified(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                             CompressedBatch& out, SendKind kind, uint8_t* in_place = nullptr,
                             bool* in_place_used = nullptr);
  size_t compress_per_page(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                           CompressedBatch& out, const Plan& plan, DeltaCache* cache, SendKind kind,
                           Feedback& fb);
  size_t compress_all_raw(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                          CompressedBatch& out, const Plan& plan, Feedback& fb);
  size_t compress_all_raw_in_place(std::span<const uint64_t> addrs, uint8_t* base, CompressedBatch& out,
                                   const Plan& plan, Feedback& fb);
  unsigned sample_one_in_32(const uint8_t* page, uint64_t& sample_cycles, unsigned& samples);
  // The all-raw paths' timing, shared: records_ hold codec and class.
  void time_all_raw(size_t n, uint64_t total_cycles, uint64_t sample_cycles, unsigned samples, const Plan& plan,
                    Feedback& fb);
  void explore(std::span<const uint8_t* const> pages, Feedback& fb);
  uint64_t account(size_t n, Feedback* fb);
  void charge_medians(Feedback& fb);  // the batch's model slots: their median page time

  struct PageRecord {
    Codec codec;
    uint8_t stat_class;  // PageClass, or kUnclassified
    int8_t candidate;    // adaptive candidate charged, -1 none
    uint32_t len;
    uint64_t ns;         // page cost without the sampling classifier
    uint64_t sample_ns;  // the sampling classifier, when it ran
  };

  PolicySpec spec_;
  CompressorOptions options_;
  std::shared_ptr<Shared> shared_;
  Plan cbc_plan_;
  CodecContext ctx_;
  CompressStats stats_;
  // One page in (mask + 1), chosen by a xorshift generator rather than a
  // counter: a counter aliases with periodic layouts (slabs, arrays of
  // structures) and would always sample the same kind of page.
  bool sample_tick(uint64_t mask) {
    sample_rng_ ^= sample_rng_ << 13;
    sample_rng_ ^= sample_rng_ >> 7;
    sample_rng_ ^= sample_rng_ << 17;
    return (sample_rng_ & mask) == 0;
  }
  uint64_t sample_rng_ = 0x9E3779B97F4A7C15ull;
  uint64_t explore_cursor_ = 0;
  std::unique_ptr<uint8_t[]> scratch_;
  std::vector<const uint8_t*> in_place_ptrs_;
  std::vector<std::optional<uint64_t>> words_;  // the in-place path's uniform words
  std::vector<PageRecord> records_;
  std::vector<std::pair<uint16_t, uint64_t>> slot_ns_;  // (class * kCandidates + candidate, ns) of a batch's pages
  std::array<float, kClassCount> split_acc_{};
};

// Where decoded pages go: regions of destination memory by source address.
struct DestinationRegion {
  uint64_t addr = 0;        // source virtual address of the first page
  uint64_t bytes = 0;
  uint8_t* base = nullptr;  // where that page lives at the destination
};

class DestinationMap {
 public:
  // Regions must not overlap; addresses and sizes page aligned.
  Result<void> add(const DestinationRegion& region);
  // Removes the region of exactly addr+bytes (a mapping that went away);
  // false when there is none.
  bool remove(uint64_t addr, uint64_t bytes);
  // The destination of page addr, or nullptr.
  uint8_t* find(uint64_t addr) const;

 private:
  std::vector<DestinationRegion> regions_;  // sorted by addr
};

// Given each page's bytes as soon as they are decoded (a raw page left in the
// payload: its payload slice), while they are still in cache.
using PageVisitor = std::function<void(const PageEntry& entry, const uint8_t* bytes)>;

class Decompressor {
 public:
  // entries[i] decodes into dst[i]. A null dst[i] leaves a raw page in the
  // payload (its caller writes it from there); for another codec it is an error.
  Result<void> decompress_batch(std::span<const PageEntry> entries, std::span<const uint8_t> payload,
                                std::span<uint8_t* const> dst, const PageVisitor& visit = {});
  // Each entry decodes into the page the map gives for its address; an
  // address outside the map is an error.
  Result<void> decompress_batch(std::span<const PageEntry> entries, std::span<const uint8_t> payload,
                                const DestinationMap& map, const PageVisitor& visit = {});

  const DecompressStats& stats() const { return stats_; }

 private:
  CodecContext ctx_;
  DecompressStats stats_;
};

// Checks entries against the payload before anything is written: known
// codec, reserved fields zero, aligned address, per-codec length bounds, and
// lengths summing to the payload size.
Result<void> validate_batch(std::span<const PageEntry> entries, size_t payload_bytes);

}  // namespace lm::compress
