// A migration scenario: what to migrate, how, and when to stop. Loaded from
// TOML (configs/*.toml) with `--set section.key=value` overrides; an unknown
// key or an impossible value is an error naming the key.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "engine/config.hpp"

namespace lm::engine {

// Every setting is a key of one table (harness/scenario.cpp): its name, how a
// value is parsed and checked (names against the registries of this build,
// policies, durations), and how it is shown; the defaults are those of
// engine/config.hpp. TOML scenarios, `--set` and the `livemig source` /
// `livemig dest` flags all go through it.

// Sets one key from text, read as TOML when it is one ("4", "true",
// "\"x\""), else as a bare string; the error names the key and the value.
Result<void> apply_setting(ScenarioConfig& c, std::string_view key, std::string_view value);
// The value of `key` in `c` as text, as a scenario would write it (empty for
// an unknown key): the flags' help shows the defaults with it.
std::string setting_text(const ScenarioConfig& c, std::string_view key);
// The checks that span keys (run after all of them were set).
Result<void> validate_scenario(const ScenarioConfig& c);

// The scenario of the i-th VM of a group: the scenario's keys, then its own
// [[vm]] keys; its guest's seed is the scenario's plus i.
Result<ScenarioConfig> vm_scenario(const ScenarioConfig& group, size_t i);
// The i-th VM's weight on the link: its [[vm]] weight, else group.weights[i], else 1.
double vm_weight(const GroupConfig& g, size_t i);

// Loads a TOML file, applies "section.key=value" overrides in order, validates.
Result<ScenarioConfig> load_scenario(const std::string& path, const std::vector<std::string>& overrides);
// The same from TOML text (tests; `origin` names it in messages).
Result<ScenarioConfig> parse_scenario(const std::string& toml_text, const std::string& origin,
                                      const std::vector<std::string>& overrides);

}  // namespace lm::engine
