#include "engine/admission.hpp"

#include <cstdio>

namespace lm::engine {

std::optional<uint64_t> mem_available_bytes() {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return std::nullopt;
  char line[256];
  std::optional<uint64_t> bytes;
  unsigned long long kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
      bytes = uint64_t(kb) * 1024;
      break;
    }
  std::fclose(f);
  return bytes;
}

std::string binary_size_text(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return strf("%llu B", (unsigned long long)bytes);
  double v = double(bytes) / 1024;
  size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    unit++;
  }
  return strf("%.1f %s", v, kUnits[unit]);
}

Result<RamLimit> ram_limit(const LimitsConfig& limits, std::optional<uint64_t> mem_available) {
  if (limits.max_ram_bytes) return RamLimit{limits.max_ram_bytes, "--max-ram"};
  if (!mem_available)
    return Error::msg("destination: MemAvailable unreadable in /proc/meminfo; give --max-ram");
  return RamLimit{*mem_available / 4 * 3,
                  strf("--max-ram; 75%% of MemAvailable %s", binary_size_text(*mem_available).c_str())};
}

Result<void> check_admission(const LimitsConfig& limits, const AdmissionRequest& request,
                             std::optional<uint64_t> mem_available) {
  if (request.bulk_channels > limits.max_bulk_channels)
    return Error{E2BIG, strf("destination refuses %u bulk channels: limit %u (--max-channels)", request.bulk_channels,
                             limits.max_bulk_channels)};
  if (request.mappings > limits.max_mappings)
    return Error{E2BIG, strf("destination refuses %llu mappings: limit %u (--max-mappings)",
                             (unsigned long long)request.mappings, limits.max_mappings)};
  const RamLimit limit = LM_TRY(ram_limit(limits, mem_available));
  const std::string asked = binary_size_text(request.ram_bytes);
  if (request.ram_bytes > limit.bytes)
    return Error{ENOMEM, strf("destination refuses %s of RAM: limit %s (%s)", asked.c_str(),
                              binary_size_text(limit.bytes).c_str(), limit.why.c_str())};
  if (mem_available && request.ram_bytes > *mem_available)
    return Error{ENOMEM, strf("destination refuses %s of RAM: MemAvailable is %s", asked.c_str(),
                              binary_size_text(*mem_available).c_str())};
  return ok();
}

Result<void> RamPool::hold(uint64_t id, uint64_t bytes) {
  std::lock_guard g(lock_);
  uint64_t others = 0;
  for (const auto& [session, held] : held_)
    if (session != id) others += held;
  if (others + bytes > limit_.bytes) {
    held_.erase(id);
    // Short: the peer's error text has room for 96 bytes (docs/protocol.md).
    return Error{ENOMEM, strf("destination refuses %s of RAM: other sessions hold %s of its %s (%s)",
                              binary_size_text(bytes).c_str(), binary_size_text(others).c_str(),
                              binary_size_text(limit_.bytes).c_str(), limit_.why.c_str())};
  }
  held_[id] = bytes;
  return ok();
}

void RamPool::release(uint64_t id) {
  std::lock_guard g(lock_);
  held_.erase(id);
}

}  // namespace lm::engine
