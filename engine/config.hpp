// The typed configuration of a migration and of the scenario around it:
// every default lives here, shared by scenarios (harness/scenario.cpp) and by
// the `livemig source` / `livemig dest` flags.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.hpp"
#include "compress/policy.hpp"
#include "engine/convergence.hpp"
#include "engine/prepaging.hpp"

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
  uint64_t protect_chunk_bytes = 0;  // the tracker's write protection inside round 0, per chunk (0: in setup)
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

// Authentication of the session (docs/protocol.md, "Authentication").
// kGeneratePsk: `livemig run` writes a fresh random key for the run into its
// private work directory and gives it to both sides.
inline constexpr std::string_view kGeneratePsk = "generate";
struct SecurityConfig {
  std::string psk_file;  // the pre-shared key's file; empty: none (loopback only, unless insecure)
  bool insecure = false;  // allow no key off loopback
  // Encryption of every channel (docs/transport.md, "TLS"): X.509 from
  // tls_creds (ca.pem, cert.pem, key.pem), else TLS-PSK from the key file.
  bool tls = false;
  std::string tls_creds;
};

// What a destination accepts from a source (engine/admission.hpp), checked
// when the session's mapping table arrives, before any memory is made for it.
struct LimitsConfig {
  uint64_t max_ram_bytes = 0;  // 0: 75% of MemAvailable at admission (always also <= MemAvailable)
  unsigned max_mappings = 4096;
  unsigned max_bulk_channels = 64;
};

// Several VMs migrated over one link (engine/group.hpp, docs/architecture.md
// "Groups"). serial: one complete live migration after another;
// serial-correlated: VM 1 pre-copies, then every VM is frozen and the others
// are copied after it; parallel: all at once, sharing the link by weight.
enum class GroupStrategy { serial, serial_correlated, parallel };
std::string_view strategy_name(GroupStrategy s);
Result<GroupStrategy> parse_strategy(std::string_view text);

// One VM of a group: its weight on the link and the keys it sets over the
// scenario's ("workload.ram" = "96M"), as TOML text.
struct GroupVmConfig {
  double weight = 0;  // 0: not given (group.weights, else 1)
  std::vector<std::pair<std::string, std::string>> settings;
};

struct GroupConfig {
  bool enabled = false;  // any group key given: `livemig run` migrates a group
  unsigned vms = 1;      // m; [[vm]] tables set it to their count
  GroupStrategy strategy = GroupStrategy::parallel;
  uint64_t link_rate = 0;       // bytes/s the group's senders keep to; 0: no limit of ours
  std::vector<double> weights;  // per VM (parallel); empty or shorter: 1
  std::vector<GroupVmConfig> vm;
};

// The link between the two sides (harness/rig.hpp, docs/benchmarks-rig.md):
// with `namespaces` (or any rate) `livemig run` makes a two-namespace rig for
// the run, the source engine in its src namespace and the destination (and
// the resumed guest) in its dst namespace, joined by a veth pair limited to
// `rate_bps` on each end's egress (0: unlimited).
struct LinkConfig {
  uint64_t rate_bps = 0;
  bool namespaces = false;
  bool uses_rig() const { return namespaces || rate_bps != 0; }
};

struct ScenarioConfig {
  std::string name = "unnamed";
  std::string source_path;  // the file it came from, for messages
  WorkloadConfig workload;
  MigrationConfig migration;
  ConvergenceConfig convergence;
  AutoConvergeConfig auto_converge;
  PostcopyConfig postcopy;
  SecurityConfig security;
  LimitsConfig limits;
  GroupConfig group;
  LinkConfig link;
  bool verify = true;
  std::chrono::seconds timeout{600};  // the whole run
};

std::string_view mode_name(MigrationMode m);
std::string_view after_name(AfterMigration a);
Result<AfterMigration> parse_after(std::string_view text);
std::string_view workload_name(WorkloadKind k);

}  // namespace lm::engine
