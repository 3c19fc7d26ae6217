// A migration scenario: what to migrate, how, and when to stop. Loaded from
// TOML (configs/*.toml) with `--set section.key=value` overrides; an unknown
// key or an impossible value is an error naming the key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "engine/config.hpp"

namespace lm::engine {

// Loads a TOML file, applies "section.key=value" overrides in order, validates.
Result<ScenarioConfig> load_scenario(const std::string& path, const std::vector<std::string>& overrides);
// The same from TOML text (tests; `origin` names it in messages).
Result<ScenarioConfig> parse_scenario(const std::string& toml_text, const std::string& origin,
                                      const std::vector<std::string>& overrides);

}  // namespace lm::engine
