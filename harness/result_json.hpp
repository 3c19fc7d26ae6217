// The result document of a run as JSON (README lists the fields).
#pragma once

#include <string>

#include "common/error.hpp"
#include "engine/results.hpp"
#include "harness/runner.hpp"

namespace lm::engine {

std::string result_to_json(const MigrationResult& r);
Result<void> write_result(const MigrationResult& r, const std::string& path);

// A group's document: its figures, the model beside them, and vms[], each
// VM's document as above. README lists the fields.
inline constexpr const char* kGroupResultSchema = "livemig-group/1";
std::string group_to_json(const GroupRunResult& r);
Result<void> write_group_result(const GroupRunResult& r, const std::string& path);

}  // namespace lm::engine
