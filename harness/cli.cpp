#include "harness/cli.hpp"

#include "common/parse.hpp"

namespace lm::cmd {

namespace {

// A validator that rewrites its text to the number `parse` reads from it.
CLI::Validator number_value(Result<uint64_t> (*parse)(std::string_view), std::string name) {
  return CLI::Validator(
      [parse](std::string& text) -> std::string {
        auto v = parse(text);
        if (!v) return v.error().message;
        text = std::to_string(*v);
        return {};
      },
      "", std::move(name));
}

}  // namespace

CLI::Validator size_value() { return number_value(parse_size, "SIZE"); }
CLI::Validator u64_value() { return number_value(parse_u64, "UINT"); }

namespace {

template <class T>
CLI::Option* pid_option(CLI::App& app, T& target, const std::string& help) {
  return app.add_option("--pid", target, help)
      ->required()
      ->type_name("PID")
      ->transform(u64_value())
      ->check(CLI::Range(uint64_t(1), uint64_t(INT32_MAX)));
}

// CLI11's form of apply_address: the error text, empty when it applied.
std::string address_error(engine::ScenarioConfig& config, std::string_view text) {
  auto set = apply_address(config, text);
  return set ? std::string() : set.error().message;
}

}  // namespace

CLI::Option* add_pid(CLI::App& app, uint64_t& pid, const std::string& help) { return pid_option(app, pid, help); }
CLI::Option* add_pids(CLI::App& app, std::vector<uint64_t>& pids, const std::string& help) {
  return pid_option(app, pids, help);
}

CLI::Option* add_setting(CLI::App& app, const std::string& flag, engine::ScenarioConfig& config,
                         const std::string& key, const std::string& help) {
  const std::string described = help + " (default " + engine::setting_text(engine::ScenarioConfig{}, key) + ")";
  return app.add_option(flag, described)
      ->type_name("VALUE")
      ->check(CLI::Validator(
          [&config, key](std::string& text) -> std::string {
            auto set = engine::apply_setting(config, key, text);
            return set ? std::string() : set.error().message;
          },
          ""));
}

Result<void> apply_address(engine::ScenarioConfig& config, std::string_view text) {
  auto colon = text.find(':');
  if (colon == std::string_view::npos) return Error::msg("'" + std::string(text) + "': expected TRANSPORT:ADDRESS");
  LM_TRY(engine::apply_setting(config, "migration.transport", std::string(text.substr(0, colon))));
  return engine::apply_setting(config, "migration.address", "'" + std::string(text.substr(colon + 1)) + "'");
}

CLI::Option* add_address(CLI::App& app, const std::string& flag, engine::ScenarioConfig& config,
                         const std::string& help) {
  return app.add_option(flag, help)
      ->type_name("TRANSPORT:ADDRESS")
      ->check(CLI::Validator([&config](std::string& text) { return address_error(config, text); }, ""));
}

CLI::Option* add_addresses(CLI::App& app, const std::string& flag, std::vector<std::string>& addresses,
                           const std::string& help) {
  return app.add_option(flag, addresses, help)
      ->type_name("TRANSPORT:ADDRESS")
      ->check(CLI::Validator(
          [](std::string& text) {
            engine::ScenarioConfig scratch;
            return address_error(scratch, text);
          },
          ""));
}

void add_security(CLI::App& app, engine::ScenarioConfig& config) {
  app.add_option("--psk-file", config.security.psk_file,
                 "pre-shared key file, the same on both sides (mode 0600, at least 16 bytes): the handshake "
                 "authenticates both sides with it; needed off loopback")
      ->envname("LIVEMIG_PSK_FILE")
      ->type_name("FILE");
  app.add_flag("--insecure", config.security.insecure,
               "allow a non-loopback address without --psk-file (unauthenticated and unencrypted)");
  auto tls = app.add_flag("--tls", config.security.tls,
                          "encrypt every channel with TLS 1.3 (tcp and uring transports); X.509 with --tls-creds, "
                          "else TLS-PSK with the --psk-file key");
  app.add_option("--tls-creds", config.security.tls_creds,
                 "with --tls: directory with ca.pem, cert.pem, key.pem; both sides verify the peer against ca.pem")
      ->type_name("DIR")
      ->needs(tls);
}

std::string command_path(const CLI::App& app) {
  std::string path = app.get_name();
  for (const CLI::App* up = app.get_parent(); up; up = up->get_parent()) path = up->get_name() + " " + path;
  return path;
}

}  // namespace lm::cmd
