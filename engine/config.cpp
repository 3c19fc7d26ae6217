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

std::string_view after_name(AfterMigration a) {
  switch (a) {
    case AfterMigration::kill: return "kill";
    case AfterMigration::stop: return "stop";
    case AfterMigration::keep: return "keep";
  }
  return "unknown";
}

Result<AfterMigration> parse_after(std::string_view text) {
  for (auto a : {AfterMigration::kill, AfterMigration::stop, AfterMigration::keep})
    if (text == after_name(a)) return a;
  return Error::msg(strf("'%.*s': expected kill, stop or keep", int(text.size()), text.data()));
}


std::string_view strategy_name(GroupStrategy s) {
  switch (s) {
    case GroupStrategy::serial: return "serial";
    case GroupStrategy::serial_correlated: return "serial-correlated";
    case GroupStrategy::parallel: return "parallel";
  }
  return "unknown";
}

Result<GroupStrategy> parse_strategy(std::string_view text) {
  for (auto s : {GroupStrategy::serial, GroupStrategy::serial_correlated, GroupStrategy::parallel})
    if (text == strategy_name(s)) return s;
  return Error::msg("expected serial, serial-correlated or parallel");
}

}  // namespace lm::engine
