// The command line of livemig: CLI11 subcommands (harness/main.cpp) and the
// option kinds the commands share. CLI11 reports a bad command line by
// throwing; main() catches it, and nothing else here throws: the checks below
// are CLI11 validators that return the error text.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "harness/runner.hpp"
#include "harness/scenario.hpp"

namespace lm::cmd {

// Sizes with binary units ("64K", "1G") and unsigned integers (decimal or
// 0x), as common/parse.hpp reads them; the text becomes the decimal number
// CLI11 then converts.
CLI::Validator size_value();
CLI::Validator u64_value();

// --pid: a required process id; add_pids: one or more (--pid A --pid B).
CLI::Option* add_pid(CLI::App& app, uint64_t& pid, const std::string& help);
CLI::Option* add_pids(CLI::App& app, std::vector<uint64_t>& pids, const std::string& help);

// A value read by `parse` into `target` while the command line is parsed;
// its error names the option and the value.
template <class T>
CLI::Option* add_parsed(CLI::App& app, const std::string& flag, T& target, Result<T> (*parse)(std::string_view),
                        const std::string& help) {
  return app.add_option(flag, help)->type_name("TEXT")->check(CLI::Validator(
      [&target, parse](std::string& text) -> std::string {
        auto v = parse(text);
        if (!v) return "'" + text + "': " + v.error().message;
        target = std::move(*v);
        return {};
      },
      ""));
}

// An option that sets one key of the scenario table (harness/scenario.hpp):
// parsed and checked as a scenario's key is, its default shown from
// engine/config.hpp.
CLI::Option* add_setting(CLI::App& app, const std::string& flag, engine::ScenarioConfig& config,
                         const std::string& key, const std::string& help);
// "TRANSPORT:ADDRESS" into the keys migration.transport and migration.address.
Result<void> apply_address(engine::ScenarioConfig& config, std::string_view text);
CLI::Option* add_address(CLI::App& app, const std::string& flag, engine::ScenarioConfig& config,
                         const std::string& help);
// The same, one or more times, each checked and kept as given (apply_address
// sets one of them into a config later).
CLI::Option* add_addresses(CLI::App& app, const std::string& flag, std::vector<std::string>& addresses,
                           const std::string& help);
// --psk-file FILE ($LIVEMIG_PSK_FILE) and --insecure: the keys security.psk-file
// and security.insecure of `livemig source` and `livemig dest`.
void add_security(CLI::App& app, engine::ScenarioConfig& config);
// "livemig source", for messages.
std::string command_path(const CLI::App& app);

}  // namespace lm::cmd
