// One whole scenario on one host: start the workload, the destination and the
// source, migrate, verify, measure, and clean up every process it started.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "engine/cancel.hpp"
#include "engine/group.hpp"
#include "engine/results.hpp"
#include "engine/source.hpp"
#include "harness/scenario.hpp"

namespace lm::engine {

enum class ProgressLine { off, on };

struct RunOptions {
  std::string guest_binary;  // livemig-guest
  ProgressLine progress = ProgressLine::off;
  // Stops the run (a signal): the source rolls back before its commit and
  // finishes after a post-copy commit; the result's error is then the
  // cancel's reason.
  std::shared_ptr<Cancel> cancel;
  // Called on entering every source phase (fault injection).
  std::function<void(SourcePhase)> on_source_phase;
  // Groups: called on entering every phase of VM `vm`'s source (0-based),
  // with its destination's cancel (fault injection: a destination dies).
  std::function<void(size_t vm, SourcePhase, Cancel& destination)> on_vm_phase;
  // Groups: called as VM `vm` runs at its destination (fault injection after
  // the resume).
  std::function<void(size_t vm)> on_vm_resumed;
  // Groups: VM `vm`'s source dials what this returns instead of its
  // destination's address (a test puts a proxy between them to cut the link).
  std::function<std::string(size_t vm, const std::string& address)> vm_route;
};

// The guest binary: $LM_GUEST_BIN, else next to the running livemig.
Result<std::string> find_guest_binary();

// The address a configuration listens on or connects to: "uring:127.0.0.1:0".
std::string transport_address(const MigrationConfig& m);

// The source's options from a scenario's migration settings (the runner and
// `livemig source`); the caller adds the target and the callbacks.
SourceOptions source_options(const ScenarioConfig& config);

// The session's pre-shared key and off-loopback rule from the security keys:
// reads security.psk-file (common/secret.hpp: private file, >= 16 bytes).
// "generate" is run_scenario's own (it holds both sides), an error here.
Result<void> apply_security(const SecurityConfig& security, transport::SessionConfig& session);

// Runs the scenario. The Result is an error only when the scenario could not
// be set up (the workload did not start); a migration that failed is a
// result with completed == false and the reason in `error`.
Result<MigrationResult> run_scenario(const ScenarioConfig& config, const RunOptions& options);

// A short human-readable summary of a result.
std::string summarize(const MigrationResult& r);

// A group scenario (group.* keys or [[vm]] tables): m guests, one destination
// each in this process, migrated by the group's strategy over one shared
// link, each verified.
struct GroupRunResult {
  ScenarioConfig config;
  GroupResult group;                    // vms[i]: each VM's full result
  std::vector<double> source_rate_after;  // a VM that did not complete: its source's progress/s after the group
};
// An error only when the group could not be set up; a VM that failed (or did
// not start) is named in group.failed_vm / failure, the others carry on as
// the strategy says.
Result<GroupRunResult> run_group_scenario(const ScenarioConfig& config, const RunOptions& options);
std::string summarize_group(const GroupRunResult& r);

}  // namespace lm::engine
