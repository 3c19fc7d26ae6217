// The destination's admission control: what a source may ask of it. Checked
// on every channel's handshake (transport::SessionConfig::admit; the control
// channel's carries the mapping table) and on each mapping table announced
// later, always before any memory, memfd or mapping is made for it: a peer's
// numbers are not trusted to fit this host (docs/protocol.md, "Limits").
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "common/error.hpp"
#include "engine/config.hpp"

namespace lm::engine {

struct AdmissionRequest {
  uint64_t ram_bytes = 0;  // the mappings' total size
  uint64_t mappings = 0;
  unsigned bulk_channels = 0;
};

// MemAvailable from /proc/meminfo in bytes; nullopt when it cannot be read.
std::optional<uint64_t> mem_available_bytes();

// The RAM a source may announce: --max-ram (limits.max-ram), else 75% of
// MemAvailable; `why` says which, for the refusal.
struct RamLimit {
  uint64_t bytes = 0;
  std::string why;  // "--max-ram" or "--max-ram; 75% of MemAvailable 22.9 GiB"
};
Result<RamLimit> ram_limit(const LimitsConfig& limits, std::optional<uint64_t> mem_available);

// Ok, or the refusal that names the limit and the value ("destination
// refuses 32.0 TiB of RAM: limit 17.2 GiB (--max-ram; 75% of MemAvailable
// 22.9 GiB)"). An explicit --max-ram is also checked against MemAvailable.
Result<void> check_admission(const LimitsConfig& limits, const AdmissionRequest& request,
                             std::optional<uint64_t> mem_available);

// The RAM of all sessions of one listener (livemig dest --sessions N) within
// one limit, so that N peers cannot commit N times it. Each session says what
// it holds now; a refused session's share is dropped at once (it is failing
// and its memory goes), so of two sessions that cross the limit together
// only one is refused. A session that completed keeps its share: its memory
// lives on in the resumed process or the image.
class RamPool {
 public:
  explicit RamPool(RamLimit limit) : limit_(std::move(limit)) {}
  // Session `id` now holds `bytes` in all, or the refusal naming what the
  // other sessions hold.
  Result<void> hold(uint64_t id, uint64_t bytes);
  void release(uint64_t id);

 private:
  const RamLimit limit_;
  std::mutex lock_;
  std::map<uint64_t, uint64_t> held_;  // by session id
};

// "32.0 TiB", "512 B".
std::string binary_size_text(uint64_t bytes);

}  // namespace lm::engine
