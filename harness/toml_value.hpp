// A TOML scalar as it would be written after "key = " (sweeps' --set values,
// a [[vm]] table's keys); strings, numbers and booleans only.
#pragma once

#include <string>

#define TOML_EXCEPTIONS 1
#include <toml++/toml.h>

#include "common/error.hpp"

namespace lm::engine {

Result<std::string> toml_value_text(const toml::node& n, const std::string& key);

}  // namespace lm::engine
