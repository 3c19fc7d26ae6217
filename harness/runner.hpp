// One whole scenario on one host: start the workload, the destination and the
// source, migrate, verify, measure, and clean up every process it started.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "engine/cancel.hpp"
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

}  // namespace lm::engine
