// Scenario sweeps as data: a TOML file naming a base scenario and, under
// [sweep], keys with lists of values. Every combination is one run:
//
//   base = "../default.toml"
//   name = "dirty-rate"
//   [sweep]
//   "workload.rate" = [5000, 20000, 40000]
//   "migration.transport" = ["tcp", "uring"]
//
// Points are numbered with the keys nested in sorted order, the last
// fastest. `interleave = "<key>"` changes only the order they run in: that
// key's values back to back for each combination of the others, forwards in
// odd passes and backwards in even ones, so that a machine drifting over a
// long sweep falls alike on the values compared (docs/benchmarks.md).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"

namespace lm::engine {

struct SweepPoint {
  std::string label;                   // "workload.rate=5000,migration.transport=tcp"
  std::vector<std::string> overrides;  // --set assignments, in key order
  std::vector<size_t> value_index;     // per key, in key order: which of its values
};

struct Sweep {
  std::string name;
  std::string base_path;  // resolved against the sweep file's folder
  std::vector<SweepPoint> points;
  std::vector<std::string> keys;             // sorted: the points' nesting, outermost first
  std::optional<size_t> interleave;          // index into `keys` of the key run back to back
};

// nullopt-like: returns an empty Sweep name when the file has no [sweep].
Result<Sweep> load_sweep(const std::string& path);
bool is_sweep_file(const std::string& path);
// The indices of the points in the order pass `pass` (1, 2, ...) runs them.
std::vector<size_t> sweep_run_order(const Sweep& sweep, unsigned pass);

}  // namespace lm::engine
