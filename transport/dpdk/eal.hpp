// DPDK's Environment Abstraction Layer. The EAL is process-global in DPDK
// (rte_eal_init may run once per process; memory, lcores and devices are
// per-process state), so it is confined to this one object: Eal::init() brings
// it up on the first call from a configuration and returns the same object on
// later calls with a compatible configuration. Everything else in the backend
// takes an Eal& to show that it needs it; nothing else touches rte_eal_*.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace lm::dpdk {

struct EalConfig {
  std::string cores = "0";           // -l: the main lcore; pollers register their own
  unsigned memory_mb = 512;          // -m
  bool huge_pages = false;           // false: --no-huge (no hugepages on the dev machines)
  bool pci = false;                  // false: --no-pci (virtual devices only)
  bool single_file_segments = false; // needed by memif zero-copy clients
  std::string file_prefix;           // empty: "livemig-<pid>" (unique per process)
  std::string log_level = "error";   // --log-level
  std::vector<std::string> extra;    // further EAL arguments, e.g. "--vdev=..."
};

class Eal {
 public:
  // First call initialises the EAL; later calls check compatibility.
  static Result<Eal*> init(const EalConfig& cfg);
  const EalConfig& config() const { return cfg_; }
  // DPDK cannot run in a child forked after rte_eal_init (its threads,
  // interrupt handlers and device sockets stay with the parent): an error
  // naming the cause when called in such a child, ok otherwise.
  static Result<void> check_not_forked();
  // The argv that was passed to rte_eal_init (for reports).
  const std::vector<std::string>& argv() const { return argv_; }

 private:
  explicit Eal(EalConfig cfg, std::vector<std::string> argv) : cfg_(std::move(cfg)), argv_(std::move(argv)) {}
  EalConfig cfg_;
  std::vector<std::string> argv_;
};

}  // namespace lm::dpdk
