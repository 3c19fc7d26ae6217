// livemig dest / livemig source: the two halves of a migration as separate
// processes (two hosts, or fault-injection tests that kill one side).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <thread>

#include "common/parse.hpp"
#include "harness/cli.hpp"
#include "harness/commands.hpp"
#include "engine/destination.hpp"
#include "engine/image_sink.hpp"
#include "harness/guest_ram_sink.hpp"
#include "harness/result_json.hpp"
#include "harness/runner.hpp"
#include "harness/signals.hpp"
#include "engine/source.hpp"

namespace lm::cmd {

namespace {

// The signal watcher of a command and the Cancel it requests.
struct StopOnSignals {
  std::shared_ptr<engine::Cancel> cancel = std::make_shared<engine::Cancel>();
  std::unique_ptr<SignalWatcher> watcher;
};

Result<StopOnSignals> stop_on_signals() {
  StopOnSignals s;
  s.watcher = LM_TRY(SignalWatcher::start(s.cancel));
  return s;
}

int fail(const char* cmd, const Error& e) {
  std::fprintf(stderr, "livemig %s: %s\n", cmd, e.message.c_str());
  return 1;
}

// --- dest ------------------------------------------------------------------------------

struct DestArgs {
  engine::ScenarioConfig config;  // migration.transport/address, postcopy.reconnect-timeout-ms
  bool image = false;
  std::string image_dir;
  bool force = false;
  uint64_t timeout_ms = uint64_t(engine::DestinationOptions{}.timeout.count());
  bool exit_after = false;
};

// Stays with the resumed guest (our child) until it exits or we are told to
// stop (SIGINT, SIGTERM, SIGHUP), unless --exit-after.
int serve_guest(guest::GuestProcess& g, const engine::Cancel& cancel, bool exit_after) {
  std::printf("RESUMED pid=%d control=%s\n", g.pid(), g.control_path().c_str());
  std::fflush(stdout);
  while (!exit_after && !cancel.requested()) {
    auto exited = g.wait_exit(200);
    if (!exited) continue;
    if (*exited == 0) return 0;
    std::fprintf(stderr, "livemig dest: %s\n", guest::guest_exit_text(g.pid(), *exited).c_str());
    return 1;
  }
  (void)g.stop(5000);
  return 0;
}

// Where the pages go: an image (--image), or a resumed livemig-guest.
struct DestSinks {
  std::shared_ptr<engine::ImageSink> image;
  std::shared_ptr<engine::GuestRamSink> guest;
};

Result<engine::DestinationOptions> dest_options(const DestArgs& a, DestSinks& sinks) {
  engine::DestinationOptions o;
  o.listen = engine::transport_address(a.config.migration);
  o.timeout = transport::Timeout(a.timeout_ms);
  o.reconnect_timeout = a.config.postcopy.reconnect_timeout;
  LM_TRY(engine::apply_security(a.config.security, o.session));
  o.limits = a.config.limits;
  o.session.on_refused = [](const Error& e) { std::fprintf(stderr, "livemig dest: refused: %s\n", e.message.c_str()); };
  if (a.image)
    o.sink = sinks.image = std::make_shared<engine::ImageSink>(a.config.limits.max_ram_bytes);
  else
    o.sink = sinks.guest =
        std::make_shared<engine::GuestRamSink>(engine::GuestRamSinkOptions{LM_TRY(engine::find_guest_binary()), "/tmp"});
  return o;
}

int run_dest(const DestArgs& a) {
  const auto overwrite = a.force ? engine::ImageOverwrite::replace : engine::ImageOverwrite::refuse;
  if (!a.image_dir.empty())
    if (auto usable = engine::check_image_dir_target(a.image_dir, overwrite); !usable) return fail("dest", usable.error());
  DestSinks sinks;
  auto o = dest_options(a, sinks);
  if (!o) return fail("dest", o.error());
  auto stop = stop_on_signals();
  if (!stop) return fail("dest", stop.error());
  o->cancel = stop->cancel;
  auto d = engine::Destination::listen(*o);
  if (!d) return fail("dest", d.error());
  std::printf("LISTENING %s\n", (*d)->address().c_str());
  std::fflush(stdout);
  auto outcome = (*d)->run();
  if (!outcome) return fail("dest", outcome.error());
  std::printf("COMPLETED pages=%llu batches=%llu cpu=%.3f\n", (unsigned long long)outcome->pages_received,
              (unsigned long long)outcome->batches, outcome->cpu_seconds);
  if (!a.image_dir.empty()) {
    // The source ran its own course already (kept, by default): a failure
    // here loses only this copy.
    auto written = engine::write_image_dir(a.image_dir, sinks.image->image(), {sinks.image->source_pid(), overwrite});
    if (!written) return fail("dest", written.error());
    std::printf("IMAGE %s mappings=%llu pages=%llu stored=%llu\n", a.image_dir.c_str(),
                (unsigned long long)written->mappings, (unsigned long long)written->pages,
                (unsigned long long)written->data_pages);
  }
  auto resumed = sinks.guest ? sinks.guest->take_guest() : nullptr;
  return resumed ? serve_guest(*resumed, *stop->cancel, a.exit_after) : 0;
}

// --- source ----------------------------------------------------------------------------

struct SourceArgs {
  engine::ScenarioConfig config;  // the migration, convergence and postcopy keys
  uint64_t pid = 0;
  std::optional<PageRange> ram;
  std::optional<engine::AfterMigration> after;
  bool no_verify = false;
  bool allow_other_user = false;
  std::string out;
};

// "ADDR:SIZE" of a livemig-guest's RAM.
Result<PageRange> parse_ram(std::string_view text) {
  auto colon = text.find(':');
  if (colon == std::string_view::npos) return Error::msg("expected ADDR:SIZE");
  auto addr = parse_u64(text.substr(0, colon));
  auto size = parse_size(text.substr(colon + 1));
  if (!addr || !size) return Error::msg("expected ADDR:SIZE");
  return PageRange{*addr, *addr + *size};
}

// The phase hooks of the environment (tests): LM_FI_SOURCE_DIE_AT kills the
// engine on entering a phase, LM_FI_SIGNAL_AT sends it a signal.
Result<void> add_phase_hooks(engine::SourceOptions& o, const std::shared_ptr<engine::Cancel>& cancel) {
  std::function<void(engine::SourcePhase)> die_at;
  if (const char* phase = std::getenv("LM_FI_SOURCE_DIE_AT"); phase && *phase)
    die_at = [phase = std::string(phase)](engine::SourcePhase p) {
      if (engine::source_phase_name(p) == phase) raise(SIGKILL);
    };
  auto signal_at = LM_TRY(signal_at_phase_from_env(cancel));
  o.on_phase = [die_at, signal_at](engine::SourcePhase p) {
    if (die_at) die_at(p);
    if (signal_at) signal_at(p);
  };
  return ok();
}

engine::SourceOptions source_options(const SourceArgs& a) {
  engine::SourceOptions o = engine::source_options(a.config);
  o.pid = pid_t(a.pid);
  if (a.ram) {
    o.scope.kind = dt::ScopeKind::ranges;
    o.scope.ranges = {*a.ram};
    o.exec_state = engine::ExecStateKind::guest_ram;
  } else {
    o.scope.kind = dt::ScopeKind::migratable;
    o.exec_state = engine::ExecStateKind::image;
  }
  o.verify = !a.no_verify;
  o.allow_other_user = a.allow_other_user;
  o.after = o.exec_state == engine::ExecStateKind::image ? engine::AfterMigration::keep : engine::AfterMigration::kill;
  if (a.after) o.after = *a.after;
  return o;
}

int run_source(const SourceArgs& a) {
  engine::SourceOptions o = source_options(a);
  if (auto keyed = engine::apply_security(a.config.security, o.session); !keyed) return fail("source", keyed.error());
  engine::MigrationResult result;
  result.host = engine::read_host_facts();
  result.config.migration.mode = o.mode;
  if (o.mode != engine::MigrationMode::precopy) result.prepaging = engine::prepaging_name(o.postcopy.prepaging);
  auto stop = stop_on_signals();
  if (!stop) return fail("source", stop.error());
  o.cancel = stop->cancel;
  if (auto hooks = add_phase_hooks(o, stop->cancel); !hooks) return fail("source", hooks.error());
  engine::SourceMigration migration(o);
  auto r = migration.run(engine::transport_address(a.config.migration), result);
  if (!a.out.empty()) (void)engine::write_result(result, a.out);
  std::printf("%s", engine::summarize(result).c_str());
  if (!r) return fail("source", r.error());
  return 0;
}

}  // namespace

Run dest(CLI::App& app) {
  auto a = std::make_shared<DestArgs>();
  add_address(app, "--listen", a->config,
              "address to listen on, e.g. uring:127.0.0.1:7000 (port 0 picks one; default " +
                  engine::transport_address(a->config.migration) + ")");
  auto image = app.add_flag("--image", a->image,
                            "keep a memory image (unmodified process) instead of resuming livemig-guest");
  auto dir = app.add_option("--image-dir", a->image_dir,
                            "with --image: write the verified image to this new directory (docs/image.md)")
                 ->needs(image);
  app.add_flag("--force", a->force, "with --image-dir: replace an existing non-empty directory")->needs(dir);
  app.add_option("--timeout-ms", a->timeout_ms, "longest silence from the source")
      ->transform(u64_value())
      ->capture_default_str();
  add_setting(app, "--reconnect-timeout-ms", a->config, "postcopy.reconnect-timeout-ms",
              "post-copy: how long faults wait for a broken link to come back, ms (0: never)");
  // Admission limits: what a source may ask of this host (docs/protocol.md, "Limits and refusals").
  add_setting(app, "--max-ram", a->config, "limits.max-ram",
              "refuse a source announcing more RAM than this (0: 75% of MemAvailable; never above MemAvailable)");
  add_setting(app, "--max-mappings", a->config, "limits.max-mappings", "refuse a source announcing more mappings");
  add_setting(app, "--max-channels", a->config, "limits.max-channels", "refuse a source opening more bulk channels");
  app.add_flag("--exit-after", a->exit_after, "stop the resumed guest and exit once the migration completed");
  add_security(app, a->config);
  return [a] { return run_dest(*a); };
}

Run source(CLI::App& app) {
  auto a = std::make_shared<SourceArgs>();
  auto& c = a->config;
  add_pid(app, a->pid, "the process to migrate");
  add_address(app, "--to", c, "destination address, e.g. uring:127.0.0.1:7000")->required();
  add_parsed(app, "--ram", a->ram, +[](std::string_view t) -> Result<std::optional<PageRange>> {
    return std::optional<PageRange>(LM_TRY(parse_ram(t)));
  }, "ADDR:SIZE of a livemig-guest's RAM (default: every migratable mapping, image mode)")->type_name("ADDR:SIZE");
  add_setting(app, "--tracker", c, "migration.tracker", "auto | uffd-wp | soft-dirty | hash");
  add_setting(app, "--policy", c, "migration.policy", "fixed:<codec> | cbc | adaptive");
  add_setting(app, "--channels", c, "migration.channels", "bulk channels");
  add_setting(app, "--workers", c, "migration.workers", "sender/compression threads");
  add_setting(app, "--max-rounds", c, "convergence.max-rounds", "pre-copy rounds at most");
  add_setting(app, "--downtime-ms", c, "convergence.downtime-target-ms", "expected-downtime target");
  app.add_flag("--no-verify", a->no_verify, "skip digest verification");
  add_setting(app, "--mode", c, "migration.mode",
              "precopy | postcopy | hybrid (pre-copy for --max-rounds, then post-copy)");
  add_setting(app, "--prepaging", c, "postcopy.prepaging",
              "post-copy push order: none | sequential | bubble | bubble-forward");
  add_setting(app, "--pivots", c, "postcopy.pivots", "post-copy: recent faults that grow a bubble");
  add_setting(app, "--reconnect-timeout-ms", c, "postcopy.reconnect-timeout-ms",
              "post-copy: how long to dial again after a broken link, ms (0: never)");
  add_parsed(app, "--after", a->after, +[](std::string_view t) -> Result<std::optional<engine::AfterMigration>> {
    return std::optional<engine::AfterMigration>(LM_TRY(engine::parse_after(t)));
  }, "what becomes of the source once the destination holds a verified copy: kill | stop | keep "
     "(default kill; keep, a live snapshot, for an image without --ram)");
  app.add_flag("--allow-other-user", a->allow_other_user, "migrate a process that belongs to another user");
  app.add_option("--out", a->out, "write the result JSON here");
  add_security(app, c);
  return [a] { return run_source(*a); };
}

}  // namespace lm::cmd
