#include "engine/image_verify.hpp"

#include <sys/mman.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "compress/uniform_scan.hpp"
#include "dirtytrack/maps.hpp"
#include "dirtytrack/page_reader.hpp"

namespace lm::engine {

namespace {

uint32_t mapping_prot(const dt::Mapping& m) {
  return (m.read ? PROT_READ : 0) | (m.write ? PROT_WRITE : 0) | (m.exec ? PROT_EXEC : 0);
}

// PageReader zero-fills a page it cannot read and goes on; reading that one
// page again gives the reason.
std::string read_error(pid_t pid, uint64_t addr) {
  std::array<std::byte, kPageSize> buf;
  iovec local{buf.data(), kPageSize};
  iovec remote{reinterpret_cast<void*>(addr), kPageSize};
  ssize_t n = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  if (n == ssize_t(kPageSize))
    return strf("pid %d: read page 0x%llx: failed once, read again later", pid, (unsigned long long)addr);
  return strf("pid %d: read page 0x%llx: process_vm_readv: %s", pid, (unsigned long long)addr,
              n < 0 ? std::strerror(errno) : "short read");
}

// Compares pages of the process with the image's, a chunk at a time.
class PageComparer {
 public:
  PageComparer(const ImageReader& image, pid_t pid, ImageComparison& out)
      : image_(image), reader_(pid), out_(out), live_(kChunkPages * kPageSize) {}

  // `range` lies inside image mapping `m` and is mapped in the process.
  Result<void> compare(const ImageMapping& m, PageRange range) {
    auto entries = image_.entries(m);
    auto next = std::lower_bound(entries.begin(), entries.end(), range.start,
                                 [](const ImageIndexEntry& e, uint64_t a) { return e.addr < a; });
    for (uint64_t chunk = range.start; chunk < range.end; chunk += kChunkPages * kPageSize) {
      PageRange piece{chunk, std::min(range.end, chunk + kChunkPages * kPageSize)};
      auto report = LM_TRY(reader_.read({&piece, 1}, live_));
      for (uint64_t addr = piece.start; addr < piece.end; addr += kPageSize) {
        if (dt::contains(report.failed, addr)) {
          if (out_.pages_unreadable++ == 0) out_.unreadable_error = read_error(reader_.pid(), addr);
          continue;
        }
        while (next != entries.end() && next->addr < addr) ++next;
        const bool stored = next != entries.end() && next->addr == addr;
        const std::byte* page = live_.data() + (addr - piece.start);
        bool equal;
        if (stored) {
          LM_TRY(image_.read_page(next->offset, stored_));
          equal = std::memcmp(page, stored_.data(), kPageSize) == 0;
        } else {
          equal = compress::is_zero_page(reinterpret_cast<const uint8_t*>(page));
        }
        out_.pages_compared++;
        if (equal) {
          out_.pages_equal++;
        } else if (out_.pages_changed++ < ImageComparison::kListed) {
          out_.changed.push_back(addr);
        }
      }
    }
    return ok();
  }

 private:
  static constexpr uint64_t kChunkPages = 256;
  const ImageReader& image_;
  dt::PageReader reader_;
  ImageComparison& out_;
  std::vector<std::byte> live_;
  std::array<std::byte, kPageSize> stored_;
};

std::string describe_change(const ImageMapping& m, const std::vector<const dt::Mapping*>& now) {
  if (now.size() == 1 && now[0]->start == m.addr && now[0]->end == m.addr + m.bytes)
    return strf("prot %s now %s", prot_text(m.prot).c_str(), prot_text(mapping_prot(*now[0])).c_str());
  if (now.size() == 1)
    return strf("now [0x%llx,0x%llx)", (unsigned long long)now[0]->start, (unsigned long long)now[0]->end);
  return strf("now split over %zu mappings", now.size());
}

bool overlaps(const dt::Mapping& p, const ImageMapping& m) { return p.start < m.addr + m.bytes && p.end > m.addr; }

}  // namespace

Result<ImageComparison> compare_image_with_process(const ImageReader& image, pid_t pid) {
  ImageComparison out;
  out.pid = pid;
  auto maps = LM_TRY_CTX(dt::read_maps(pid), strf("verify image %s", image.dir().c_str()));
  PageComparer comparer(image, pid, out);
  for (const auto& m : image.manifest().mappings) {
    const uint64_t pages = m.bytes / kPageSize;
    out.image_pages += pages;
    std::vector<const dt::Mapping*> now;
    for (const auto& p : maps)
      if (overlaps(p, m)) now.push_back(&p);
    if (now.empty()) {
      out.missing.push_back({m.addr, m.bytes, "missing"});
      out.pages_unmapped += pages;
      continue;
    }
    const bool same = now.size() == 1 && now[0]->start == m.addr && now[0]->end == m.addr + m.bytes &&
                      mapping_prot(*now[0]) == m.prot;
    if (!same) out.changed_mappings.push_back({m.addr, m.bytes, describe_change(m, now)});
    uint64_t mapped = 0;
    for (const auto* p : now) {
      PageRange piece{std::max(p->start, m.addr), std::min(p->end, m.addr + m.bytes)};
      LM_TRY_CTX(comparer.compare(m, piece), strf("verify image %s", image.dir().c_str()));
      mapped += piece.pages();
    }
    out.pages_unmapped += pages - mapped;
  }
  for (const auto& p : maps) {
    if (!dt::is_migratable(p)) continue;
    bool known = std::any_of(image.manifest().mappings.begin(), image.manifest().mappings.end(),
                             [&](const ImageMapping& m) { return overlaps(p, m); });
    if (!known) out.added.push_back({p.start, p.bytes(), "new in the process"});
  }
  return out;
}

}  // namespace lm::engine
