#include "common/populate.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "common/clock.hpp"

namespace lm {

namespace {

constexpr uint64_t kHugePage = 2ull << 20;
constexpr uint64_t kParallelFrom = 256ull << 20;

int populate_part(uint8_t* p, uint64_t bytes) {
  while (bytes > 0) {
    if (::madvise(p, bytes, kMadvPopulateWrite) == 0) return 0;
    if (errno != EINTR) return errno;  // EINTR: a signal; the part done stays done
  }
  return 0;
}

}  // namespace

Result<uint64_t> populate_for_write(void* base, uint64_t bytes, unsigned threads) {
  const uint64_t t0 = now_ns();
  auto* p = static_cast<uint8_t*>(base);
  const unsigned n = bytes < kParallelFrom ? 1 : std::max(1u, threads);
  const uint64_t part = (bytes / n + kHugePage - 1) / kHugePage * kHugePage;
  std::vector<int> errs(n, 0);
  std::vector<std::thread> workers;
  for (unsigned i = 1; i < n && i * part < bytes; i++)
    workers.emplace_back([&, i] { errs[i] = populate_part(p + i * part, std::min(part, bytes - i * part)); });
  errs[0] = populate_part(p, std::min(part, bytes));
  for (auto& t : workers) t.join();
  // A kernel before 5.14 refuses the advice: the memory fills on first touch.
  if (errs[0] == EINVAL) return uint64_t(0);
  for (int e : errs)
    if (e != 0)
      return Error::sys(e, strf("populate %llu bytes at %p for writing (MADV_POPULATE_WRITE)",
                                (unsigned long long)bytes, base));
  return now_ns() - t0;
}

}  // namespace lm
