#include "dirtytrack/page_reader.hpp"

#include <sys/uio.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace lm::dt {

namespace {
// IOV_MAX: process_vm_readv takes at most 1024 iovecs per side.
constexpr size_t kMaxIov = 1024;
}

Result<ReadReport> PageReader::read(std::span<const PageRange> ranges, std::span<std::byte> out) {
  ReadReport report;
  uint64_t need = 0;
  for (const auto& r : ranges) need += r.bytes();
  if (out.size() < need)
    return Error::msg(strf("pid %d: read of %llu bytes into a %zu-byte buffer", pid_, (unsigned long long)need,
                           out.size()));
  std::vector<iovec> remote;
  remote.reserve(kMaxIov);
  size_t ri = 0;        // next range
  uint64_t roff = 0;    // offset inside ranges[ri]
  uint64_t pos = 0;     // bytes of out consumed
  while (ri < ranges.size()) {
    // One call: up to kMaxIov remote pieces (whole ranges or their rest),
    // one local iovec: the contiguous stretch of out they fill.
    remote.clear();
    uint64_t batch = 0;
    size_t scan_i = ri;
    uint64_t scan_off = roff;
    while (scan_i < ranges.size() && remote.size() < kMaxIov) {
      uint64_t len = ranges[scan_i].bytes() - scan_off;
      if (len) remote.push_back({reinterpret_cast<void*>(ranges[scan_i].start + scan_off), len});
      batch += len;
      scan_i++;
      scan_off = 0;
    }
    if (batch == 0) break;
    iovec local{out.data() + pos, batch};
    ssize_t n = ::process_vm_readv(pid_, &local, 1, remote.data(), remote.size(), 0);
    report.syscalls++;
    if (n < 0) {
      int err = errno;
      if (err == ESRCH) return Error::sys(err, strf("pid %d: process_vm_readv (process exited)", pid_));
      if (err != EFAULT && err != ENOMEM)
        return Error::sys(err, strf("pid %d: process_vm_readv", pid_));
      n = 0;
    }
    uint64_t got = uint64_t(n) & ~uint64_t(4095);  // whole pages only
    report.pages_read += got / 4096;
    pos += got;
    // Advance (ri, roff) by `got` bytes.
    uint64_t left = got;
    while (left) {
      uint64_t avail = ranges[ri].bytes() - roff;
      uint64_t step = std::min(avail, left);
      roff += step;
      left -= step;
      if (roff == ranges[ri].bytes()) {
        ri++;
        roff = 0;
      }
    }
    if (got == batch) {
      ri = scan_i;
      roff = 0;
      continue;
    }
    // The next page did not read: the read stops at the first page it cannot
    // fault in. Mark that page failed, zero it and go on after it.
    uint64_t bad = ranges[ri].start + roff;
    std::memset(out.data() + pos, 0, 4096);
    append_merge(report.failed, {bad, bad + 4096});
    pos += 4096;
    roff += 4096;
    if (roff == ranges[ri].bytes()) {
      ri++;
      roff = 0;
    }
  }
  return report;
}

}  // namespace lm::dt
