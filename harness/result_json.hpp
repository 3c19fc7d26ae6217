// The result document of a run as JSON (README lists the fields).
#pragma once

#include <string>

#include "common/error.hpp"
#include "engine/results.hpp"

namespace lm::engine {

std::string result_to_json(const MigrationResult& r);
Result<void> write_result(const MigrationResult& r, const std::string& path);

}  // namespace lm::engine
