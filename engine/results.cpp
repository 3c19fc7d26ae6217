#include "engine/results.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <vector>

#include "common/clock.hpp"


namespace lm::engine {

HostFacts read_host_facts() {
  HostFacts h;
  utsname u;
  if (uname(&u) == 0) h.kernel = std::string(u.sysname) + " " + u.release;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      auto colon = line.find(':');
      if (colon != std::string::npos) h.cpu = line.substr(colon + 2);
      break;
    }
  }
  h.cores = unsigned(sysconf(_SC_NPROCESSORS_ONLN));
  h.memory_bytes = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGESIZE));
  return h;
}

double host_calibration_us() {
  static constexpr size_t kWords = 32768;  // 256 KiB: the L2 of the CPUs this ran on
  std::vector<uint64_t> buf(kWords, 1);
  std::array<double, 5> us{};
  uint64_t x = 1;
  for (double& t : us) {
    const double start = thread_cpu_seconds();
    // A dependent chain through the buffer: neither vectorised nor skipped.
    for (int pass = 0; pass < 40; pass++)
      for (uint64_t& w : buf) {
        x = x * 6364136223846793005ull + w;
        w = x >> 7;
      }
    t = (thread_cpu_seconds() - start) * 1e6;
  }
  volatile uint64_t sink = x;  // the work has a result
  (void)sink;
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

LatencyStats latency_stats(std::vector<double>& s) {
  LatencyStats out;
  out.count = s.size();
  if (s.empty()) return out;
  std::sort(s.begin(), s.end());
  // Nearest-rank percentile: the smallest sample with at least q of all at or below it.
  auto at = [&](double q) {
    size_t rank = size_t(std::ceil(q * double(s.size())));
    return s[std::clamp<size_t>(rank, 1, s.size()) - 1];
  };
  out.p50 = at(0.50);
  out.p90 = at(0.90);
  out.p99 = at(0.99);
  out.max = s.back();
  return out;
}

}  // namespace lm::engine
