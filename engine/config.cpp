#include "engine/config.hpp"

namespace lm::engine {

std::string_view mode_name(MigrationMode m) {
  switch (m) {
    case MigrationMode::precopy: return "precopy";
    case MigrationMode::postcopy: return "postcopy";
    case MigrationMode::hybrid: return "hybrid";
  }
  return "unknown";
}

std::string_view workload_name(WorkloadKind k) { return k == WorkloadKind::guest ? "guest" : "redis"; }

}  // namespace lm::engine
