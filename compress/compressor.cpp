#include "compress/compressor.hpp"

#include <algorithm>
#include <cstring>
#include <ctime>

#include "compress/classifier.hpp"
#include "compress/cycle_clock.hpp"
#include "compress/uniform_scan.hpp"

namespace lm::compress {
namespace {

// A compressed payload must save at least this much over raw to be sent.
constexpr size_t kMinSaving = 64;
constexpr size_t kCompressCap = kPageSize - kMinSaving;
constexpr uint64_t kEntryBytes = sizeof(PageEntry);

// Pages sent without going through the cache must not keep an older
// version there (the cache must match the destination).
void forget(DeltaCache& cache, std::span<const uint64_t> addrs) {
  if (cache.empty()) return;
  for (uint64_t a : addrs) cache.erase(a);
}

// A page's time is read from the TSC: cheap (the thread CPU clock is a
// ~2 us system call here), but wall time, so a preemption would charge
// milliseconds to one page. Each page is capped at kMaxPageNs, and at 4x
// what the adaptive model expects for its class and codec.
constexpr uint64_t kMaxPageNs = 50000;

uint64_t cap_ns(uint64_t ns, float expected) {
  if (expected > 0) ns = std::min<uint64_t>(ns, uint64_t(4 * expected) + 1000);
  return std::min(ns, kMaxPageNs);
}

bool is_sampled_class(PageClass c) {
  return c == PageClass::words || c == PageClass::text || c == PageClass::random;
}

}  // namespace

Result<std::unique_ptr<Compressor>> Compressor::create(std::string_view policy, const CompressorOptions& options) {
  return create(LM_TRY(parse_policy(policy)), options);
}

Result<std::unique_ptr<Compressor>> Compressor::create(PolicySpec spec, const CompressorOptions& options) {
  auto shared = std::make_shared<Shared>();
  bool uses_delta = spec.kind != PolicyKind::fixed || spec.fixed.codec == Codec::delta;
  if (uses_delta && options.delta_cache_pages > 0)
    shared->cache = std::make_shared<DeltaCache>(options.delta_cache_pages);
  if (spec.kind == PolicyKind::fixed && spec.fixed.codec == Codec::delta && !shared->cache)
    return Error::msg(strf("policy '%s' needs a delta cache (delta_cache_pages > 0)", spec.name.c_str()));
  if (spec.kind == PolicyKind::adaptive)
    shared->model = std::make_shared<AdaptiveModel>(options.workers, options.link_bytes_per_s, shared->cache != nullptr,
                                                    options.destination_shares_cpus);
  return std::unique_ptr<Compressor>(new Compressor(std::move(spec), options, std::move(shared)));
}

Compressor::Compressor(PolicySpec spec, CompressorOptions options, std::shared_ptr<Shared> shared)
    : spec_(std::move(spec)),
      options_(options),
      shared_(std::move(shared)),
      cbc_plan_(cbc_plan(spec_.cbc_text, shared_->cache != nullptr)),
      scratch_(new uint8_t[kPageSize]) {}

Compressor::~Compressor() = default;

std::unique_ptr<Compressor> Compressor::make_worker() const {
  return std::unique_ptr<Compressor>(new Compressor(spec_, options_, shared_));
}

void Compressor::report_link(const LinkReport& link) {
  if (shared_->model) shared_->model->report_link(link);
}

void Compressor::probe_link_first() {
  if (shared_->model) shared_->model->probe_link_first();
}

bool Compressor::probing_link() const { return shared_->model && shared_->model->probing(); }

void Compressor::set_workers(unsigned workers) {
  if (shared_->model) shared_->model->set_workers(workers);
}

Plan Compressor::current_plan() const {
  if (shared_->model) return shared_->model->plan();
  if (spec_.kind == PolicyKind::cbc) return cbc_plan_;
  Plan p;
  p.by_class.fill(spec_.fixed);
  p.sample = false;
  p.delta = spec_.fixed.codec == Codec::delta;
  return p;
}

Result<void> Compressor::check_batch(std::span<const uint64_t> addrs, size_t pages) const {
  if (addrs.size() != pages)
    return Error::msg(strf("compress batch: %zu addresses for %zu pages", addrs.size(), pages));
  for (uint64_t a : addrs)
    if (a & (kPageSize - 1))
      return Error::msg(strf("compress batch: address 0x%llx is not page aligned", (unsigned long long)a));
  return ok();
}

Result<std::span<std::byte>> Compressor::compress_batch_in(std::span<const uint64_t> addrs,
                                                           std::span<std::byte> buffer, CompressedBatch& out,
                                                           SendKind kind) {
  if (buffer.size() % kPageSize)
    return Error::msg(strf("compress batch: buffer of %zu bytes is not whole pages", buffer.size()));
  const size_t n = buffer.size() / kPageSize;
  LM_TRY(check_batch(addrs, n));
  uint8_t* base = reinterpret_cast<uint8_t*>(buffer.data());
  in_place_ptrs_.resize(n);
  for (size_t i = 0; i < n; i++) in_place_ptrs_[i] = base + i * kPageSize;
  if (spec_.kind == PolicyKind::fixed) {
    LM_TRY(compress_batch(addrs, in_place_ptrs_, out, kind));
    return std::as_writable_bytes(std::span{out.payload});
  }
  out.entries.resize(n);
  out.payload.resize(n * kPageSize);
  bool in_place = false;
  size_t used = compress_classified(addrs, in_place_ptrs_, out, kind, base, &in_place);
  if (in_place) {
    out.payload.clear();
    return buffer.first(used);
  }
  out.payload.resize(used);
  return std::as_writable_bytes(std::span{out.payload});
}

Result<void> Compressor::compress_batch(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                                        CompressedBatch& out, SendKind kind) {
  LM_TRY(check_batch(addrs, pages.size()));
  out.entries.resize(pages.size());
  out.payload.resize(pages.size() * kPageSize);
  size_t used;
  if (spec_.kind == PolicyKind::fixed) {
    DeltaCache* cache = shared_->cache.get();
    if (cache && kind == SendKind::first) {
      forget(*cache, addrs);
      cache = nullptr;
    }
    used = compress_fixed(addrs, pages, out, cache, kind);
  } else {
    used = compress_classified(addrs, pages, out, kind);
  }
  out.payload.resize(used);
  return ok();
}

size_t Compressor::compress_fixed(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                                  CompressedBatch& out, DeltaCache* cache, SendKind kind) {
  const CodecChoice& choice = spec_.fixed;
  uint8_t* const base = out.payload.data();
  size_t pos = 0;
  records_.resize(pages.size());
  for (size_t i = 0; i < pages.size(); i++) {
    uint64_t t0 = cycles();
    const uint8_t* page = pages[i];
    uint8_t* dst = base + pos;
    Codec codec = choice.codec;
    size_t len;
    if (codec == Codec::raw) {
      len = raw::encode(page, dst, kPageSize);
    } else if (codec == Codec::delta) {
      len = kDoesNotFit;  // a first send goes raw
      if (cache) {
        bool hit = cache->exchange(
            addrs[i], page,
            [&](const uint8_t* previous) {
              len = delta::encode(page, previous, dst, std::min<size_t>(options_.delta_max_bytes, kCompressCap));
            },
            kind != SendKind::last);
        (hit ? stats_.delta_hits : stats_.delta_misses)++;
      }
    } else {
      len = encode_page(codec, choice.params, ctx_, page, nullptr, dst, kCompressCap);
    }
    if (len == kDoesNotFit) {
      if (codec != Codec::delta) stats_.fallbacks_to_raw++;
      codec = Codec::raw;
      len = raw::encode(page, dst, kPageSize);
    }
    out.entries[i] = PageEntry{addrs[i], uint32_t(len), codec, 0, 0};
    pos += len;
    records_[i] = {codec, uint8_t(kUnclassified), -1, uint32_t(len), std::min(cycles_to_ns(cycles() - t0), kMaxPageNs), 0};
  }
  account(pages.size(), nullptr);
  return pos;
}

size_t Compressor::compress_classified(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                                       CompressedBatch& out, SendKind kind, uint8_t* in_place,
                                       bool* in_place_used) {
  AdaptiveModel* model = shared_->model.get();
  const Plan plan = model ? model->plan() : cbc_plan_;
  DeltaCache* cache = plan.delta && kind != SendKind::first ? shared_->cache.get() : nullptr;
  // A last send with nothing cached can find no delta: the plain path.
  if (cache && kind == SendKind::last && cache->empty()) cache = nullptr;
  if (shared_->cache && !cache) {
    // While deltas are off (the CPU is the bottleneck) the whole cache goes:
    // it would have to be kept equal to the destination for nothing.
    if (!plan.delta) shared_->cache->clear();
    else forget(*shared_->cache, addrs);
  }
  // Every non-uniform page goes raw (a link faster than compression): copy
  // and test for zero/uniform in one pass, and sample one page in 32 only to
  // follow the class mix.
  const bool all_raw = !cache && !plan.sample && plan.by_class[unsigned(PageClass::text)].codec == Codec::raw;
  Feedback fb;
  const bool trials = model && !pages.empty() && model->may_explore();
  size_t pos;
  if (all_raw && in_place) {
    if (trials) explore(pages, fb);  // before: this path moves pages
    pos = compress_all_raw_in_place(addrs, in_place, out, plan, fb);
    *in_place_used = true;
  } else {
    pos = all_raw ? compress_all_raw(addrs, pages, out, plan, fb)
                  : compress_per_page(addrs, pages, out, plan, cache, kind, fb);
    if (trials) explore(pages, fb);
  }
  if (model) model->feed(fb);
  return pos;
}

// The general path: per page, the uniform test, a delta against the cached
// version (re-sends), the sample classifier, the plan's codec for the class.
size_t Compressor::compress_per_page(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                                     CompressedBatch& out, const Plan& plan, DeltaCache* cache, SendKind kind,
                                     Feedback& fb) {
  const size_t delta_cap = std::min<size_t>(options_.delta_max_bytes, kCompressCap);
  size_t pos = 0;
  // A split class takes its other codec for whole batches, in the planned
  // share of batches: pages alternating between two codecs run both slower
  // (caches, branch predictors), which would also mislead the model.
  std::array<bool, kClassCount> use_alt{};
  for (unsigned c = 0; c < kClassCount; c++)
    if (plan.alt_fraction[c] > 0) {
      split_acc_[c] += plan.alt_fraction[c];
      use_alt[c] = split_acc_[c] >= 1;
      if (use_alt[c]) split_acc_[c] -= 1;
    }
  uint8_t* const base = out.payload.data();
  records_.resize(pages.size());
  for (size_t i = 0; i < pages.size(); i++) {
    uint64_t t0 = cycles(), sample_cycles = 0;
    const uint8_t* page = pages[i];
    uint8_t* dst = base + pos;
    auto sample = [&] {
      uint64_t s0 = cycles();
      PageClass c = classify_sample(page).cls;
      sample_cycles = cycles() - s0;
      return c;
    };
    std::optional<uint64_t> word = uniform_word(page);
    PageClass cls;
    Codec codec;
    int candidate = 0;  // model slot the page's cost is charged to; -1: none
    size_t len = kDoesNotFit;
    bool sampled = true;
    float expected = 0;
    if (word) {
      cls = *word == 0 ? PageClass::zero : PageClass::uniform;
      codec = *word == 0 ? Codec::zero : Codec::uniform;
      len = *word == 0 ? 0 : uniform::encode_word(*word, dst, kPageSize);
      if (cache) cache->erase(addrs[i]);
    } else {
      if (cache) {
        bool hit = cache->exchange(
            addrs[i], page, [&](const uint8_t* previous) { len = delta::encode(page, previous, dst, delta_cap); },
            kind != SendKind::last);
        (hit ? stats_.delta_hits : stats_.delta_misses)++;
      }
      if (len != kDoesNotFit) {
        cls = PageClass::resent;
        codec = Codec::delta;
      } else {
        // When every class gets the same codec, sample one page in 16 only.
        sampled = plan.sample || sample_tick(15);
        cls = sampled ? sample() : PageClass::text;
        const CodecChoice* chosen = &plan.by_class[unsigned(cls)];
      expected = plan.expected_ns[unsigned(cls)];
      if (use_alt[unsigned(cls)]) {
        chosen = &plan.alt[unsigned(cls)];
        expected = plan.alt_expected_ns[unsigned(cls)];
      }
      const CodecChoice& choice = *chosen;
        codec = choice.codec;
        candidate = candidate_index(choice);
        len = codec == Codec::raw ? raw::encode(page, dst, kPageSize)
                                  : encode_page(codec, choice.params, ctx_, page, nullptr, dst, kCompressCap);
        if (len == kDoesNotFit) {
          stats_.fallbacks_to_raw++;
          codec = Codec::raw;
          len = raw::encode(page, dst, kPageSize);
        }
      }
    }
    out.entries[i] = PageEntry{addrs[i], uint32_t(len), codec, 0, 0};
    pos += len;
    uint64_t total = cycles() - t0;
    records_[i] = {codec,
                   uint8_t(sampled ? unsigned(cls) : kUnclassified),
                   int8_t(candidate),
                   uint32_t(len),
                   cap_ns(cycles_to_ns(total - sample_cycles), expected),
                   cap_ns(cycles_to_ns(sample_cycles), plan.expected_sample_ns)};
  }
  fb.ns = account(pages.size(), &fb);
  return pos;
}

// The all-raw plan (a link faster than compression): each page is copied
// and tested for zero/uniform in one pass; one page in 32 is classified,
// before its copy so that it is as cold as in the general path. Timed per
// batch (two TSC reads), not per page: this path is as cheap as fixed:raw.
size_t Compressor::compress_all_raw(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                                    CompressedBatch& out, const Plan& plan, Feedback& fb) {
  uint8_t* const base = out.payload.data();
  size_t pos = 0;
  uint64_t sample_cycles = 0;
  unsigned samples = 0;
  records_.resize(pages.size());
  const uint64_t t0 = cycles();
  for (size_t i = 0; i < pages.size(); i++) {
    const uint8_t* page = pages[i];
    uint8_t* dst = base + pos;
    unsigned stat_class = sample_one_in_32(page, sample_cycles, samples);
    std::optional<uint64_t> word = copy_page_uniform_word(dst, page);
    Codec codec = Codec::raw;
    size_t len = kPageSize;
    if (word) {
      codec = *word == 0 ? Codec::zero : Codec::uniform;
      len = *word == 0 ? 0 : uniform::encode_word(*word, dst, kPageSize);
      stat_class = unsigned(*word == 0 ? PageClass::zero : PageClass::uniform);
    }
    out.entries[i] = PageEntry{addrs[i], uint32_t(len), codec, 0, 0};
    pos += len;
    records_[i] = {codec, uint8_t(stat_class), -1, uint32_t(len), 0, 0};
  }
  time_all_raw(pages.size(), cycles() - t0, sample_cycles, samples, plan, fb);
  fb.page_copy = fb.fused_raw;  // the copy is nearly all of it
  return pos;
}

// The all-raw plan in the read buffer: it becomes the payload. With R raw
// pages, those among the first R stay where they are; each raw page beyond
// moves into the place of a zero or uniform page among the first R (one copy
// per such page, none in a batch without them); the uniform pages' words
// follow. The entries list the pages in that order.
size_t Compressor::compress_all_raw_in_place(std::span<const uint64_t> addrs, uint8_t* base, CompressedBatch& out,
                                             const Plan& plan, Feedback& fb) {
  const size_t n = addrs.size();
  uint64_t sample_cycles = 0, copy_cycles = 0;
  unsigned samples = 0, copies = 0;
  records_.resize(n);
  words_.resize(n);
  const uint64_t t0 = cycles();
  size_t raw = 0;
  for (size_t i = 0; i < n; i++) {
    const uint8_t* page = base + i * kPageSize;
    unsigned stat_class = sample_one_in_32(page, sample_cycles, samples);
    words_[i] = uniform_word(page);
    Codec codec = Codec::raw;
    if (words_[i]) {
      codec = *words_[i] == 0 ? Codec::zero : Codec::uniform;
      stat_class = unsigned(*words_[i] == 0 ? PageClass::zero : PageClass::uniform);
    } else {
      raw++;
    }
    records_[i] = {codec, uint8_t(stat_class), -1, uint32_t(codec == Codec::raw ? kPageSize : 0), 0, 0};
  }
  size_t from = raw;  // the next raw page beyond the first `raw` places
  for (size_t slot = 0; slot < raw; slot++) {
    size_t page = slot;
    if (words_[slot]) {
      while (words_[from]) from++;
      page = from++;
      const uint64_t c0 = cycles();
      std::memcpy(base + slot * kPageSize, base + page * kPageSize, kPageSize);
      copy_cycles += cycles() - c0;
      copies++;
    }
    out.entries[slot] = PageEntry{addrs[page], uint32_t(kPageSize), Codec::raw, 0, 0};
  }
  size_t pos = raw * kPageSize, e = raw;
  for (size_t i = 0; i < n; i++) {
    if (!words_[i]) continue;
    const size_t len = *words_[i] == 0 ? 0 : uniform::encode_word(*words_[i], base + pos, kPageSize);
    out.entries[e++] = PageEntry{addrs[i], uint32_t(len), records_[i].codec, 0, 0};
    records_[i].len = uint32_t(len);
    pos += len;
  }
  time_all_raw(n, cycles() - t0, sample_cycles, samples, plan, fb);
  fb.page_copy = {copies, 0, cycles_to_ns(copy_cycles)};
  return pos;
}

// The all-raw paths classify one page in 32, only to follow the class mix:
// its class, or kUnclassified.
unsigned Compressor::sample_one_in_32(const uint8_t* page, uint64_t& sample_cycles, unsigned& samples) {
  if (!sample_tick(31)) return kUnclassified;
  const uint64_t s0 = cycles();
  const unsigned cls = unsigned(classify_sample(page).cls);
  sample_cycles += cycles() - s0;
  samples++;
  return cls;
}

void Compressor::time_all_raw(size_t n, uint64_t total_cycles, uint64_t sample_cycles, unsigned samples,
                              const Plan& plan, Feedback& fb) {
  const uint64_t sample_ns = samples ? cap_ns(cycles_to_ns(sample_cycles) / samples, plan.expected_sample_ns) : 0;
  const uint64_t page_ns =
      cap_ns(cycles_to_ns(total_cycles - sample_cycles) / std::max<size_t>(1, n), plan.expected_fused_raw_ns);
  for (size_t i = 0; i < n; i++) {
    PageRecord& r = records_[i];
    r.ns = page_ns;
    bool classified = r.stat_class != kUnclassified && r.codec == Codec::raw;
    r.sample_ns = classified ? sample_ns : 0;
    if (r.codec == Codec::raw) {
      fb.fused_raw.pages++;
      fb.fused_raw.wire_bytes += kPageSize + kEntryBytes;
      fb.fused_raw.ns += page_ns;
    }
  }
  fb.ns = account(n, &fb);
}

// Adds the batch's page records to the counters (and to the model's
// feedback). Returns the batch's time.
uint64_t Compressor::account(size_t n, Feedback* fb) {
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    const PageRecord& r = records_[i];
    uint64_t ns = r.ns, sample_ns = r.sample_ns;
    total += ns + sample_ns;
    CodecCounters& c = stats_.by_codec_class[unsigned(r.codec)][r.stat_class];
    c.pages++;
    c.bytes_in += kPageSize;
    c.bytes_out += r.len;
    c.ns += ns + sample_ns;
    if (!fb) continue;
    if (r.stat_class == kUnclassified) {
      fb->unsampled_pages++;
      continue;
    }
    fb->class_pages[r.stat_class]++;
    if (is_sampled_class(PageClass(r.stat_class))) {
      fb->sample_pages++;
      fb->sample_ns += sample_ns;
    }
    if (r.candidate >= 0) {
      Sample& s = fb->by_class[r.stat_class][unsigned(r.candidate)];
      s.pages++;
      s.wire_bytes += r.len + kEntryBytes;
      slot_ns_.push_back({uint16_t(r.stat_class * kCandidates + unsigned(r.candidate)), ns});
    }
  }
  if (fb) charge_medians(*fb);
  return total;
}

// Each model slot is charged its pages' median time, not their mean: a
// page's time is wall time, and the one page in a batch during which the
// thread lost its CPU (other threads, a timer, a hypervisor exit) would
// otherwise raise the mean several-fold on a busy 2-core host. Found on the
// rig: raw estimated at 11 us per page on this path against 0.3 us measured
// per batch, so the plan compressed where raw was faster.
void Compressor::charge_medians(Feedback& fb) {
  std::sort(slot_ns_.begin(), slot_ns_.end());
  for (size_t i = 0; i < slot_ns_.size();) {
    size_t j = i;
    while (j < slot_ns_.size() && slot_ns_[j].first == slot_ns_[i].first) j++;
    const uint64_t median = slot_ns_[i + (j - i) / 2].second;
    const unsigned slot = slot_ns_[i].first;
    Sample& s = fb.by_class[slot / kCandidates][slot % kCandidates];
    s.ns = median * s.pages;
    i = j;
  }
  slot_ns_.clear();
}

// Trial compressions with a codec the plan does not use, so the model keeps
// measuring the alternatives (within the model's budget): a burst of up to
// three pages of one class, the first untimed (a codec that has not run for
// a while starts with cold caches and branch predictors, which would make
// it look slower than it is in steady use).
void Compressor::explore(std::span<const uint8_t* const> pages, Feedback& fb) {
  size_t j = explore_cursor_++ % pages.size();
  uint64_t t0 = cycles();
  PageClass cls = classify(pages[j]).cls;
  if (!is_sampled_class(cls)) return;
  unsigned k = shared_->model->explore_candidate(cls);
  const CodecChoice& choice = adaptive_candidates()[k];
  uint64_t timed_ns = 0, bytes = 0;
  unsigned timed = 0, tried = 0;
  for (unsigned burst = 0; burst < 3 && j < pages.size(); burst++, j++) {
    if (burst > 0 && classify_sample(pages[j]).cls != cls) break;
    uint64_t t1 = cycles();
    size_t len = encode_page(choice.codec, choice.params, ctx_, pages[j], nullptr, scratch_.get(),
                             choice.codec == Codec::raw ? kPageSize : kCompressCap);
    if (len == kDoesNotFit) len = kPageSize;  // it would go raw
    uint64_t ns = std::min(cycles_to_ns(cycles() - t1), kMaxPageNs);
    tried++;
    bytes += len + kEntryBytes;
    if (burst > 0 || j + 1 >= pages.size()) {  // the first page is a warm-up unless it is alone
      timed_ns += ns;
      timed++;
    }
  }
  stats_.explore_pages += tried;
  if (timed) {
    // Every page of the burst is charged the mean of the timed ones.
    Sample& s = fb.by_class[unsigned(cls)][k];
    s.pages += tried;
    s.wire_bytes += bytes;
    s.ns += timed_ns * tried / timed;
  }
  uint64_t spent = cycles_to_ns(cycles() - t0);
  fb.explore_ns += spent;
  stats_.explore_ns += spent;
}

Result<void> DestinationMap::add(const DestinationRegion& r) {
  if ((r.addr | r.bytes) & (kPageSize - 1) || r.bytes == 0 || !r.base)
    return Error::msg(strf("destination region 0x%llx+%llu is empty or not page aligned",
                           (unsigned long long)r.addr, (unsigned long long)r.bytes));
  auto it = std::lower_bound(regions_.begin(), regions_.end(), r.addr,
                             [](const DestinationRegion& a, uint64_t addr) { return a.addr < addr; });
  if ((it != regions_.end() && it->addr < r.addr + r.bytes) ||
      (it != regions_.begin() && std::prev(it)->addr + std::prev(it)->bytes > r.addr))
    return Error::msg(strf("destination region 0x%llx+%llu overlaps another", (unsigned long long)r.addr,
                           (unsigned long long)r.bytes));
  regions_.insert(it, r);
  return ok();
}

bool DestinationMap::remove(uint64_t addr, uint64_t bytes) {
  auto it = std::lower_bound(regions_.begin(), regions_.end(), addr,
                             [](const DestinationRegion& a, uint64_t at) { return a.addr < at; });
  if (it == regions_.end() || it->addr != addr || it->bytes != bytes) return false;
  regions_.erase(it);
  return true;
}

uint8_t* DestinationMap::find(uint64_t addr) const {
  auto it = std::upper_bound(regions_.begin(), regions_.end(), addr,
                             [](uint64_t a, const DestinationRegion& r) { return a < r.addr; });
  if (it == regions_.begin()) return nullptr;
  --it;
  if (addr - it->addr >= it->bytes) return nullptr;
  return it->base + (addr - it->addr);
}

Result<void> validate_batch(std::span<const PageEntry> entries, size_t payload_bytes) {
  uint64_t total = 0;
  for (size_t i = 0; i < entries.size(); i++) {
    const PageEntry& e = entries[i];
    auto bad = [&](const char* why) {
      return Error::msg(strf("page entry %zu (addr 0x%llx, codec %u, length %u): %s", i, (unsigned long long)e.addr,
                             unsigned(e.codec), e.length, why));
    };
    if (unsigned(e.codec) >= kCodecCount) return bad("unknown codec");
    if (e.flags || e.reserved) return bad("reserved fields are not zero");
    if (e.addr & (kPageSize - 1)) return bad("address not page aligned");
    bool length_ok = true;
    switch (e.codec) {
      case Codec::raw: length_ok = e.length == kPageSize; break;
      case Codec::zero: length_ok = e.length == 0; break;
      case Codec::uniform: length_ok = e.length == uniform::kPayload; break;
      case Codec::delta: length_ok = e.length < kPageSize; break;
      default: length_ok = e.length > 0 && e.length < kPageSize; break;
    }
    if (!length_ok) return bad("length out of range for the codec");
    total += e.length;
  }
  if (total != payload_bytes)
    return Error::msg(strf("page entries describe %llu payload bytes, the batch carries %zu",
                           (unsigned long long)total, payload_bytes));
  return ok();
}

Result<void> Decompressor::decompress_batch(std::span<const PageEntry> entries, std::span<const uint8_t> payload,
                                            std::span<uint8_t* const> dst, const PageVisitor& visit) {
  if (dst.size() != entries.size())
    return Error::msg(strf("decompress batch: %zu destinations for %zu entries", dst.size(), entries.size()));
  LM_TRY(validate_batch(entries, payload.size()));
  size_t pos = 0;
  for (size_t i = 0; i < entries.size(); i++) {
    const PageEntry& e = entries[i];
    uint64_t t0 = cycles();
    const uint8_t* bytes = dst[i];
    if (dst[i]) {
      auto r = decode_page(e.codec, ctx_, payload.subspan(pos, e.length), dst[i]);
      if (!r)
        return std::move(r).error().context(strf("page 0x%llx (entry %zu)", (unsigned long long)e.addr, i));
    } else if (e.codec == Codec::raw) {
      bytes = payload.data() + pos;
    } else {
      return Error::msg(strf("decompress batch: page 0x%llx (entry %zu, codec %s) has no destination",
                             (unsigned long long)e.addr, i, std::string(codec_name(e.codec)).c_str()));
    }
    pos += e.length;
    CodecCounters& c = stats_.by_codec[unsigned(e.codec)];
    c.pages++;
    c.bytes_in += e.length;
    c.bytes_out += kPageSize;
    c.ns += cycles_to_ns(cycles() - t0);
    if (visit) visit(e, bytes);
  }
  return ok();
}

Result<void> Decompressor::decompress_batch(std::span<const PageEntry> entries, std::span<const uint8_t> payload,
                                            const DestinationMap& map, const PageVisitor& visit) {
  std::vector<uint8_t*> dst(entries.size());
  for (size_t i = 0; i < entries.size(); i++) {
    dst[i] = map.find(entries[i].addr);
    if (!dst[i])
      return Error::msg(strf("decompress batch: page 0x%llx (entry %zu) is outside the destination",
                             (unsigned long long)entries[i].addr, i));
  }
  return decompress_batch(entries, payload, dst, visit);
}

}  // namespace lm::compress
