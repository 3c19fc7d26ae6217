#include "harness/guest/layout.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common/parse.hpp"

namespace lm::guest {

namespace {

uint64_t mix_seed(uint64_t seed, uint64_t thread) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + thread * 0xbf58476d1ce4e5b9ull + 0x7f4a7c15;
  x ^= x >> 31;
  return x * 0x94d049bb133111ebull;
}

Result<std::vector<double>> pattern_params(std::string_view text, size_t max_params) {
  std::vector<double> out;
  while (!text.empty()) {
    size_t colon = text.find(':');
    std::string_view part = text.substr(0, colon);
    out.push_back(LM_TRY(parse_double(part)));
    if (colon == std::string_view::npos) break;
    text.remove_prefix(colon + 1);
  }
  if (out.size() > max_params) return Error::msg(strf("too many parameters (at most %zu)", max_params));
  return out;
}

}  // namespace

Result<void> parse_pattern(std::string_view text, WorkloadConfig& cfg) {
  std::string_view name = text.substr(0, text.find(':'));
  std::string_view rest = name.size() < text.size() ? text.substr(name.size() + 1) : std::string_view{};
  auto params = pattern_params(rest, 2);
  if (!params) return std::move(params).error().context(strf("pattern '%.*s'", int(text.size()), text.data()));
  const auto& p = *params;
  auto bad = [&](const char* why) {
    return Error::msg(strf("pattern '%.*s': %s", int(text.size()), text.data(), why));
  };
  if (name == "uniform" && p.empty()) {
    cfg.pattern = Pattern::uniform;
  } else if (name == "hotspot") {
    cfg.pattern = Pattern::hotspot;
    cfg.pattern_p1 = p.size() > 0 ? p[0] : 0.1;
    cfg.pattern_p2 = p.size() > 1 ? p[1] : 0.9;
    if (!(cfg.pattern_p1 > 0 && cfg.pattern_p1 <= 1)) return bad("hot fraction must be in (0, 1]");
    if (!(cfg.pattern_p2 >= 0 && cfg.pattern_p2 <= 1)) return bad("hot probability must be in [0, 1]");
  } else if (name == "zipf" && p.size() <= 1) {
    cfg.pattern = Pattern::zipf;
    cfg.pattern_p1 = p.empty() ? 1.0 : p[0];
    if (!(cfg.pattern_p1 > 0 && cfg.pattern_p1 < 10)) return bad("exponent must be in (0, 10)");
  } else if (name == "sequential" && p.empty()) {
    cfg.pattern = Pattern::sequential;
  } else if (name == "stride" && p.size() <= 1) {
    cfg.pattern = Pattern::stride;
    cfg.pattern_p1 = p.empty() ? 16 : p[0];
    if (!(cfg.pattern_p1 >= 1) || cfg.pattern_p1 != double(uint64_t(cfg.pattern_p1)))
      return bad("stride must be a whole number of pages >= 1");
  } else {
    return bad("expected uniform, hotspot[:HOT_FRACTION[:HOT_PROB]], zipf[:S], sequential or stride[:PAGES]");
  }
  return ok();
}

std::string pattern_text(const WorkloadConfig& cfg) {
  switch (cfg.pattern) {
    case Pattern::uniform: return "uniform";
    case Pattern::hotspot: return strf("hotspot:%g:%g", cfg.pattern_p1, cfg.pattern_p2);
    case Pattern::zipf: return strf("zipf:%g", cfg.pattern_p1);
    case Pattern::sequential: return "sequential";
    case Pattern::stride: return strf("stride:%g", cfg.pattern_p1);
  }
  return "unknown";
}

Result<RamLayout> plan_layout(uint64_t ram_size, uint32_t threads) {
  if (ram_size % kPageSize != 0)
    return Error::msg(strf("RAM size %lu is not a multiple of the page size", (unsigned long)ram_size));
  if (threads == 0 || threads > kMaxThreads)
    return Error::msg(strf("thread count %u out of range 1..%u", threads, kMaxThreads));
  RamLayout l;
  l.ram_size = ram_size;
  l.threads = threads;
  l.thread_state_offset = kPageSize;
  l.version_table_offset = page_ceil(l.thread_state_offset + threads * sizeof(ThreadState));
  uint64_t avail_pages = (ram_size - std::min(ram_size, l.version_table_offset)) / kPageSize;
  // Each data page costs one page plus 8 bytes of version table.
  uint64_t data = avail_pages * kPageSize / (kPageSize + sizeof(uint64_t));
  while (data > 0 && page_ceil(data * sizeof(uint64_t)) / kPageSize + data > avail_pages) data--;
  if (data < threads)
    return Error::msg(strf("RAM size %lu leaves %lu data pages for %u threads", (unsigned long)ram_size,
                           (unsigned long)data, threads));
  l.data_pages = data;
  l.data_offset = l.version_table_offset + page_ceil(data * sizeof(uint64_t));
  return l;
}

WorkloadConfig RamView::config() const {
  WorkloadConfig c;
  c.seed = header->seed;
  c.rate = header->rate;
  c.pattern = static_cast<Pattern>(header->pattern);
  c.pattern_p1 = header->pattern_p1;
  c.pattern_p2 = header->pattern_p2;
  c.content = static_cast<ContentProfile>(header->content);
  c.write = static_cast<WriteMode>(header->write_mode);
  c.threads = header->threads;
  return c;
}

uint64_t RamView::total_steps() const {
  uint64_t sum = 0;
  for (uint32_t t = 0; t < header->threads; t++) sum += __atomic_load_n(&threads[t].steps, __ATOMIC_RELAXED);
  return sum;
}

namespace {

RamView view_of(void* base, const RamLayout& l) {
  RamView v;
  v.base = static_cast<uint8_t*>(base);
  v.header = reinterpret_cast<GuestHeader*>(v.base);
  v.threads = reinterpret_cast<ThreadState*>(v.base + l.thread_state_offset);
  v.versions = reinterpret_cast<uint64_t*>(v.base + l.version_table_offset);
  v.data = v.base + l.data_offset;
  return v;
}

}  // namespace

Result<RamView> RamView::initialize(void* base, uint64_t ram_addr, uint64_t ram_size, const WorkloadConfig& cfg) {
  RamLayout l = LM_TRY(plan_layout(ram_size, cfg.threads));
  RamView v = view_of(base, l);
  GuestHeader h{};
  h.magic = kGuestMagic;
  h.layout_version = kLayoutVersion;
  h.header_bytes = sizeof(GuestHeader);
  h.ram_addr = ram_addr;
  h.ram_size = ram_size;
  h.seed = cfg.seed;
  h.rate = cfg.rate;
  h.pattern = uint32_t(cfg.pattern);
  h.content = uint32_t(cfg.content);
  h.pattern_p1 = cfg.pattern_p1;
  h.pattern_p2 = cfg.pattern_p2;
  h.write_mode = uint32_t(cfg.write);
  h.threads = cfg.threads;
  h.thread_state_offset = l.thread_state_offset;
  h.version_table_offset = l.version_table_offset;
  h.data_offset = l.data_offset;
  h.data_pages = l.data_pages;
  for (uint32_t t = 0; t < cfg.threads; t++) {
    ThreadState s{};
    s.rng = mix_seed(cfg.seed, t);
    s.pending_page = ~0ull;
    std::memcpy(&v.threads[t], &s, sizeof s);
  }
  std::memcpy(v.header, &h, sizeof h);
  return v;
}

Result<RamView> RamView::attach(void* base, uint64_t ram_addr, uint64_t ram_size) {
  GuestHeader h;
  std::memcpy(&h, base, sizeof h);
  auto bad = [&](const std::string& why) {
    return Error::msg(strf("guest RAM at 0x%lx (size %lu): %s", (unsigned long)ram_addr, (unsigned long)ram_size,
                           why.c_str()));
  };
  if (h.magic != kGuestMagic) return bad(strf("bad magic 0x%lx (not a livemig-guest image)", (unsigned long)h.magic));
  if (h.layout_version != kLayoutVersion || h.header_bytes != sizeof(GuestHeader))
    return bad(strf("layout version %u / header %u bytes, this guest reads version %u / %zu bytes",
                    h.layout_version, h.header_bytes, kLayoutVersion, sizeof(GuestHeader)));
  if (h.ram_addr != ram_addr || h.ram_size != ram_size)
    return bad(strf("image was made for 0x%lx size %lu", (unsigned long)h.ram_addr, (unsigned long)h.ram_size));
  auto planned = plan_layout(ram_size, h.threads);
  if (!planned) return bad(planned.error().message);
  const RamLayout& l = *planned;
  if (h.thread_state_offset != l.thread_state_offset || h.version_table_offset != l.version_table_offset ||
      h.data_offset != l.data_offset || h.data_pages != l.data_pages)
    return bad("offsets in the header do not match the layout");
  if (h.pattern > uint32_t(Pattern::stride) || h.content > uint32_t(ContentProfile::mixed) ||
      h.write_mode > uint32_t(WriteMode::word))
    return bad("unknown pattern, content profile or write mode in the header");
  return view_of(base, l);
}

Result<void*> map_guest_ram(uint64_t ram_addr, uint64_t ram_size, int memfd) {
  int flags = MAP_FIXED_NOREPLACE | (memfd < 0 ? MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE : MAP_SHARED);
  void* want = reinterpret_cast<void*>(ram_addr);
  void* p = ::mmap(want, ram_size, PROT_READ | PROT_WRITE, flags, memfd, 0);
  if (p == MAP_FAILED) {
    int err = errno;
    return Error::sys(err, strf("map guest RAM at 0x%lx size %lu in pid %d%s", (unsigned long)ram_addr,
                                (unsigned long)ram_size, int(::getpid()),
                                err == EEXIST ? " (the range is already mapped)" : ""));
  }
  if (p != want) {  // a kernel older than 4.17 ignores MAP_FIXED_NOREPLACE
    ::munmap(p, ram_size);
    return Error::msg(strf("kernel placed guest RAM at %p instead of 0x%lx", p, (unsigned long)ram_addr));
  }
  return p;
}

Result<RamPages> parse_ram_pages(std::string_view text) {
  if (text == "huge") return RamPages::huge;
  if (text == "small") return RamPages::small;
  return Error::msg(strf("RAM pages '%.*s': expected huge or small", int(text.size()), text.data()));
}

Result<void*> map_new_guest_ram(uint64_t ram_addr, uint64_t ram_size, RamPages pages) {
  void* p = LM_TRY(map_guest_ram(ram_addr, ram_size, -1));
  // Huge pages only where the host allows them (THP "madvise" or "always");
  // with THP "never" the advice is accepted and the RAM stays on 4 KiB pages.
  if (pages == RamPages::huge && ::madvise(p, ram_size, MADV_HUGEPAGE) != 0) {
    auto e = Error::from_errno(strf("madvise(MADV_HUGEPAGE) guest RAM at 0x%lx size %lu in pid %d",
                                    (unsigned long)ram_addr, (unsigned long)ram_size, int(::getpid())));
    ::munmap(p, ram_size);
    return e;
  }
  return p;
}

Result<uint64_t> verify_ram(const RamView& ram, PendingPages pending) {
  const WorkloadConfig cfg = ram.config();
  std::vector<uint64_t> skip;
  if (pending == PendingPages::tolerate)
    for (uint32_t t = 0; t < cfg.threads; t++) skip.push_back(ram.threads[t].pending_page);
  alignas(64) uint8_t expected[kPageSize];
  for (uint64_t i = 0; i < ram.data_pages(); i++) {
    uint64_t version = __atomic_load_n(&ram.versions[i], __ATOMIC_RELAXED);
    const uint8_t* page = ram.data_page(i);
    fill_page(expected, cfg.content, cfg.write, cfg.seed, i, version);
    if (std::memcmp(expected, page, kPageSize) == 0) continue;
    bool pending_page = false;
    for (uint64_t s : skip) pending_page |= s == i;
    if (pending_page) continue;
    size_t off = 0;
    while (off < kPageSize && expected[off] == page[off]) off++;
    uint64_t found_stamp, want_stamp;
    std::memcpy(&found_stamp, page, 8);
    std::memcpy(&want_stamp, expected, 8);
    uint64_t addr = ram.guest_addr(page);
    return Error::msg(strf("page=%lu addr=0x%lx version=%lu data-page=%lu offset=%zu class=%s stamp=0x%lx "
                           "expected-stamp=0x%lx",
                           (unsigned long)((addr - ram.header->ram_addr) / kPageSize), (unsigned long)addr,
                           (unsigned long)version, (unsigned long)i, off,
                           std::string(content_class_name(page_class(cfg.content, cfg.seed, i))).c_str(),
                           (unsigned long)found_stamp, (unsigned long)want_stamp));
  }
  return ram.data_pages();
}

}  // namespace lm::guest
