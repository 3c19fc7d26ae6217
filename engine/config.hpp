// The typed configuration of a migration and of the scenario around it:
// every default lives here, shared by scenarios (harness/scenario.cpp) and by
// the `livemig source` / `livemig dest` flags.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "compress/policy.hpp"
#include "engine/convergence.hpp"
#include "engine/prepaging.hpp"
#include "transport/tls_channel.hpp"

namespace lm::engine {

enum class WorkloadKind { guest, redis };
enum class MigrationMode { precopy, postcopy, hybrid };

struct WorkloadConfig {
  WorkloadKind kind = WorkloadKind::guest;
  // guest
  uint64_t ram_bytes = 1ull << 30;
  std::string rate = "20000";  // pages/s written, or "max"
  std::string pattern = "hotspot:0.1";
  std::string content = "mixed";
  std::string write = "page";
  unsigned threads = 1;
  uint64_t seed = 1;
  bool prefill = false;  // every page written once before the migration (a fully populated VM)
  std::string ram_pages = "small";  // small (4 KiB pages) or huge (THP, as QEMU's guest RAM; docs/guest.md)
  std::string cpus;                // CPUs the guest runs on ("1", "0,2-3"); empty: the engine's
  // redis
  uint64_t redis_keys = 100000;
  uint64_t redis_value_bytes = 512;
  unsigned redis_clients = 4;
  // common
  std::chrono::milliseconds warmup{300};  // let the workload run before migrating
};

struct MigrationConfig {
  MigrationMode mode = MigrationMode::precopy;
  std::string transport = "uring";     // a transport registry name (checked when parsed)
  std::string address = "127.0.0.1:0";  // destination listen address; port 0 picks one
  unsigned channels = 2;                // bulk channels
  compress::PolicySpec policy{.kind = compress::PolicyKind::adaptive, .name = "adaptive"};
  unsigned workers = 2;                 // compression workers
  std::string tracker = "auto";         // "auto" or a tracker registry name (checked when parsed)
  unsigned batch_pages = 256;           // pages per page-batch message
  bool hold_hot_pages = true;           // hot pages left writable, sent after the freeze
};

// What becomes of the source process once the destination holds a verified
// copy. A destination that resumes the VM needs `kill` (or `stop`): two
// running copies of one VM are never allowed. An image leaves the source
// running by default (a live snapshot).
enum class AfterMigration { kill, stop, keep };

struct AutoConvergeConfig {
  bool enabled = false;
  unsigned initial_percent = 20;    // QEMU: cpu-throttle-initial
  unsigned increment_percent = 10;  // QEMU: cpu-throttle-increment
  unsigned max_percent = 99;
};

// The longest single wait for the peer (a silent source or destination).
inline constexpr std::chrono::milliseconds kDefaultPeerTimeout{30000};

// Post-copy: how long faults wait, and the source dials again, after the
// link broke (QEMU's postcopy recovery, automatic). 0: never.
inline constexpr unsigned kDefaultReconnectTimeoutMs = 10000;

struct PostcopyConfig {
  PrepagingKind prepaging = PrepagingKind::bubble;
  unsigned pivots = 1;
  unsigned precopy_rounds = 2;       // hybrid: pre-copy rounds before switching
  std::chrono::milliseconds reconnect_timeout{kDefaultReconnectTimeoutMs};
};

// Encryption of every channel of the migration (docs/transport.md, "TLS").
struct TlsSettings {
  bool enabled = false;   // security.tls
  std::string creds_dir;  // security.tls-creds: ca.pem, cert.pem, key.pem (mutual X.509)
};

struct ScenarioConfig {
  std::string name = "unnamed";
  std::string source_path;  // the file it came from, for messages
  WorkloadConfig workload;
  MigrationConfig migration;
  ConvergenceConfig convergence;
  AutoConvergeConfig auto_converge;
  PostcopyConfig postcopy;
  TlsSettings tls;
  bool verify = true;
  std::chrono::seconds timeout{600};  // the whole run
};

std::string_view mode_name(MigrationMode m);
std::string_view after_name(AfterMigration a);
Result<AfterMigration> parse_after(std::string_view text);
std::string_view workload_name(WorkloadKind k);
// The credentials `tls` names, loaded once for every channel; null when TLS is off.
Result<std::shared_ptr<const transport::TlsConfig>> load_tls(const TlsSettings& tls);

}  // namespace lm::engine
