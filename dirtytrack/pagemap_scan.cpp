#include "dirtytrack/pagemap_scan.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>

namespace lm::dt {

Result<PagemapScanner> PagemapScanner::open(pid_t pid) {
  std::string path = strf("/proc/%d/pagemap", pid);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Error::sys(ESRCH, strf("pid %d: open %s", pid, path.c_str()));
    return Error::from_errno(strf("pid %d: open %s", pid, path.c_str()));
  }
  return PagemapScanner(pid, UniqueFd(fd));
}

Result<void> PagemapScanner::scan(PageRange range, const ScanQuery& query, RangeList& out) {
  RangeList found;
  uint64_t cur = range.start;
  while (cur < range.end) {
    pm_scan_arg arg{};
    arg.size = sizeof arg;
    arg.flags = query.flags;
    arg.start = cur;
    arg.end = range.end;
    arg.vec = reinterpret_cast<uint64_t>(vec_.data());
    arg.vec_len = vec_.size();
    arg.category_inverted = query.category_inverted;
    arg.category_mask = query.category_mask;
    arg.category_anyof_mask = query.category_anyof_mask;
    arg.return_mask = query.return_mask;
    long n = ::ioctl(fd_.get(), PAGEMAP_SCAN, &arg);
    ioctls_++;
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      return Error::sys(err, strf("pid %d: PAGEMAP_SCAN [0x%llx, 0x%llx)", pid_, (unsigned long long)cur,
                                  (unsigned long long)range.end));
    }
    for (long i = 0; i < n; i++) found.push_back({vec_[size_t(i)].start, vec_[size_t(i)].end});
    if (arg.walk_end <= cur)
      return Error::msg(strf("pid %d: PAGEMAP_SCAN made no progress at 0x%llx", pid_, (unsigned long long)cur));
    // walk_end may stop short of end although the walk went further (the
    // kernel keeps the walk_end of an earlier internal restart): the next
    // call rescans from there and returns regions at or before ones already
    // returned, new writes among them. Keep them all; coalesce sorts it out.
    cur = std::max(cur, arg.walk_end);
  }
  coalesce(found);
  if (found.empty()) return ok();
  if (out.empty() || found.front().start >= out.back().start) {
    for (const auto& r : found) append_merge(out, r);
  } else {
    out.insert(out.end(), found.begin(), found.end());
    coalesce(out);
  }
  return ok();
}

}  // namespace lm::dt
