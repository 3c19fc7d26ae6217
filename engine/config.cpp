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

Result<std::shared_ptr<const transport::TlsConfig>> load_tls(const TlsSettings& tls) {
  if (!tls.enabled) return std::shared_ptr<const transport::TlsConfig>();
  // merge: with security.psk-file (auth), TLS-PSK takes that key here.
  if (tls.creds_dir.empty()) return Error::msg("TLS-PSK needs --psk-file (not yet wired): give --tls-creds DIR");
  return transport::TlsConfig::x509(tls.creds_dir);
}

}  // namespace lm::engine
