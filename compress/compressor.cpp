#include "compress/compressor.hpp"

#include <algorithm>
#include <cstring>

#include "compress/classifier.hpp"
#include "compress/cycle_clock.hpp"

namespace lm::compress {
namespace {

// A compressed payload must save at least this much over raw to be sent.
constexpr size_t kMinSaving = 64;
constexpr size_t kCompressCap = kPageSize - kMinSaving;
constexpr uint64_t kEntryBytes = sizeof(PageEntry);

bool is_sampled_class(PageClass c) {
  return c == PageClass::words || c == PageClass::text || c == PageClass::random;
}

}  // namespace

Result<std::unique_ptr<Compressor>> Compressor::create(std::string_view policy, const CompressorOptions& options) {
  PolicySpec spec = LM_TRY(parse_policy(policy));
  auto shared = std::make_shared<Shared>();
  bool uses_delta = spec.kind != PolicyKind::fixed || spec.fixed.codec == Codec::delta;
  if (uses_delta && options.delta_cache_pages > 0)
    shared->cache = std::make_shared<DeltaCache>(options.delta_cache_pages);
  if (spec.kind == PolicyKind::fixed && spec.fixed.codec == Codec::delta && !shared->cache)
    return Error::msg(strf("policy '%s' needs a delta cache (delta_cache_pages > 0)", spec.name.c_str()));
  if (spec.kind == PolicyKind::adaptive)
    shared->model = std::make_shared<AdaptiveModel>(options.workers, options.link_bytes_per_s, shared->cache != nullptr);
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

void Compressor::report_link_rate(double bytes_per_s) {
  if (shared_->model) shared_->model->report_link_rate(bytes_per_s);
}

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

Result<void> Compressor::compress_batch(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                                        CompressedBatch& out) {
  if (addrs.size() != pages.size())
    return Error::msg(strf("compress batch: %zu addresses for %zu pages", addrs.size(), pages.size()));
  for (uint64_t a : addrs)
    if (a & (kPageSize - 1))
      return Error::msg(strf("compress batch: address 0x%llx is not page aligned", (unsigned long long)a));
  out.entries.resize(pages.size());
  out.payload.resize(pages.size() * kPageSize);
  size_t used = spec_.kind == PolicyKind::fixed ? compress_fixed(addrs, pages, out)
                                                : compress_classified(addrs, pages, out);
  out.payload.resize(used);
  return ok();
}

size_t Compressor::compress_fixed(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                                  CompressedBatch& out) {
  const CodecChoice& choice = spec_.fixed;
  DeltaCache* cache = shared_->cache.get();
  uint8_t* const base = out.payload.data();
  size_t pos = 0;
  for (size_t i = 0; i < pages.size(); i++) {
    uint64_t t0 = cycles();
    const uint8_t* page = pages[i];
    uint8_t* dst = base + pos;
    Codec codec = choice.codec;
    size_t len;
    if (codec == Codec::raw) {
      len = raw::encode(page, dst, kPageSize);
    } else if (codec == Codec::delta) {
      len = kDoesNotFit;
      bool hit = cache->exchange(addrs[i], page, [&](const uint8_t* previous) {
        len = delta::encode(page, previous, dst, std::min<size_t>(options_.delta_max_bytes, kCompressCap));
      });
      (hit ? stats_.delta_hits : stats_.delta_misses)++;
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
    CodecCounters& c = stats_.by_codec_class[unsigned(codec)][kUnclassified];
    c.pages++;
    c.bytes_in += kPageSize;
    c.bytes_out += len;
    c.ns += cycles_to_ns(cycles() - t0);
  }
  return pos;
}

size_t Compressor::compress_classified(std::span<const uint64_t> addrs, std::span<const uint8_t* const> pages,
                                       CompressedBatch& out) {
  AdaptiveModel* model = shared_->model.get();
  const Plan plan = model ? model->plan() : cbc_plan_;
  DeltaCache* cache = plan.delta ? shared_->cache.get() : nullptr;
  // Pages sent while deltas are off do not update the cache: drop it so it
  // never holds a version the destination no longer has.
  if (!plan.delta && shared_->cache) shared_->cache->clear();
  const size_t delta_cap = std::min<size_t>(options_.delta_max_bytes, kCompressCap);
  Feedback fb;
  uint8_t* const base = out.payload.data();
  size_t pos = 0;
  const uint64_t batch_start = cycles();
  for (size_t i = 0; i < pages.size(); i++) {
    uint64_t t0 = cycles();
    const uint8_t* page = pages[i];
    uint8_t* dst = base + pos;
    PageFeatures f = classify_uniform(page);
    PageClass cls = f.cls;
    Codec codec;
    int candidate = 0;  // model slot the page's cost is charged to; -1: none
    size_t len = kDoesNotFit;
    bool sampled = true;
    if (cls == PageClass::zero) {
      codec = Codec::zero;
      len = 0;
      if (cache) cache->erase(addrs[i]);
    } else if (cls == PageClass::uniform) {
      codec = Codec::uniform;
      len = uniform::encode_word(f.word, dst, kPageSize);
      if (cache) cache->erase(addrs[i]);
    } else {
      if (cache) {
        bool hit = cache->exchange(addrs[i], page, [&](const uint8_t* previous) {
          len = delta::encode(page, previous, dst, delta_cap);
        });
        (hit ? stats_.delta_hits : stats_.delta_misses)++;
      }
      if (len != kDoesNotFit) {
        cls = PageClass::resent;
        codec = Codec::delta;
      } else {
        // When every class gets the same codec, sample one page in 16 only
        // (to follow the class mix).
        sampled = plan.sample || (page_counter_++ & 15) == 0;
        cls = sampled ? classify_sample(page).cls : PageClass::text;
        const CodecChoice& choice = plan.by_class[unsigned(cls)];
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
    uint64_t ns = cycles_to_ns(cycles() - t0);
    CodecCounters& c = stats_.by_codec_class[unsigned(codec)][sampled ? unsigned(cls) : kUnclassified];
    c.pages++;
    c.bytes_in += kPageSize;
    c.bytes_out += len;
    c.ns += ns;
    if (!sampled) {
      fb.unsampled_pages++;
    } else {
      fb.class_pages[unsigned(cls)]++;
      if (candidate >= 0) {
        Sample& s = fb.by_class[unsigned(cls)][unsigned(candidate)];
        s.pages++;
        s.wire_bytes += len + kEntryBytes;
        s.ns += ns;
      }
    }
  }
  if (model) {
    fb.ns = cycles_to_ns(cycles() - batch_start);
    if (!pages.empty() && model->may_explore()) explore(pages, fb);
    model->feed(fb);
  }
  return pos;
}

// One trial compression per batch with a codec the plan does not use, so the
// model keeps measuring the alternatives (bounded by the model's budget).
void Compressor::explore(std::span<const uint8_t* const> pages, Feedback& fb) {
  const uint8_t* page = pages[explore_cursor_++ % pages.size()];
  uint64_t t0 = cycles();
  PageFeatures f = classify(page);
  if (!is_sampled_class(f.cls)) return;
  unsigned k = shared_->model->explore_candidate(f.cls);
  const CodecChoice& choice = adaptive_candidates()[k];
  size_t len = encode_page(choice.codec, choice.params, ctx_, page, nullptr, scratch_.get(),
                           choice.codec == Codec::raw ? kPageSize : kCompressCap);
  if (len == kDoesNotFit) len = kPageSize;  // it would go raw
  uint64_t ns = cycles_to_ns(cycles() - t0);
  Sample& s = fb.by_class[unsigned(f.cls)][k];
  s.pages++;
  s.wire_bytes += len + kEntryBytes;
  s.ns += ns;
  fb.explore_ns += ns;
  stats_.explore_pages++;
  stats_.explore_ns += ns;
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
                                            std::span<uint8_t* const> dst) {
  if (dst.size() != entries.size())
    return Error::msg(strf("decompress batch: %zu destinations for %zu entries", dst.size(), entries.size()));
  LM_TRY(validate_batch(entries, payload.size()));
  size_t pos = 0;
  for (size_t i = 0; i < entries.size(); i++) {
    const PageEntry& e = entries[i];
    uint64_t t0 = cycles();
    auto r = decode_page(e.codec, ctx_, payload.subspan(pos, e.length), dst[i]);
    if (!r)
      return std::move(r).error().context(strf("page 0x%llx (entry %zu)", (unsigned long long)e.addr, i));
    pos += e.length;
    CodecCounters& c = stats_.by_codec[unsigned(e.codec)];
    c.pages++;
    c.bytes_in += e.length;
    c.bytes_out += kPageSize;
    c.ns += cycles_to_ns(cycles() - t0);
  }
  return ok();
}

Result<void> Decompressor::decompress_batch(std::span<const PageEntry> entries, std::span<const uint8_t> payload,
                                            const DestinationMap& map) {
  std::vector<uint8_t*> dst(entries.size());
  for (size_t i = 0; i < entries.size(); i++) {
    dst[i] = map.find(entries[i].addr);
    if (!dst[i])
      return Error::msg(strf("decompress batch: page 0x%llx (entry %zu) is outside the destination",
                             (unsigned long long)entries[i].addr, i));
  }
  return decompress_batch(entries, payload, dst);
}

}  // namespace lm::compress
