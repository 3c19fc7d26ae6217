// Scenario sweeps as data: a TOML file naming a base scenario and, under
// [sweep], keys with lists of values. Every combination is one run:
//
//   base = "../default.toml"
//   name = "dirty-rate"
//   [sweep]
//   "workload.rate" = [5000, 20000, 40000]
//   "migration.transport" = ["tcp", "uring"]
#pragma once

#include <string>
#include <vector>

#include "common/error.hpp"

namespace lm::engine {

struct SweepPoint {
  std::string label;                   // "workload.rate=5000,migration.transport=tcp"
  std::vector<std::string> overrides;  // --set assignments, in key order
};

struct Sweep {
  std::string name;
  std::string base_path;  // resolved against the sweep file's folder
  std::vector<SweepPoint> points;
};

// nullopt-like: returns an empty Sweep name when the file has no [sweep].
Result<Sweep> load_sweep(const std::string& path);
bool is_sweep_file(const std::string& path);

}  // namespace lm::engine
