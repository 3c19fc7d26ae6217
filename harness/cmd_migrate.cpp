// livemig dest / livemig source: the two halves of a migration as separate
// processes (two hosts, or fault-injection tests that kill one side).
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/parse.hpp"
#include "harness/cli.hpp"
#include "harness/commands.hpp"
#include "engine/destination.hpp"
#include "engine/group.hpp"
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
  unsigned sessions = 1;
};

// Stays with the resumed guests (our children) until each exited or we are
// told to stop (SIGINT, SIGTERM, SIGHUP), unless --exit-after. 1 if a guest
// exited with an error.
int serve_guests(const std::vector<guest::GuestProcess*>& guests, const engine::Cancel& cancel, bool exit_after) {
  for (auto* g : guests) std::printf("RESUMED pid=%d control=%s\n", g->pid(), g->control_path().c_str());
  std::fflush(stdout);
  std::vector<guest::GuestProcess*> running = guests;
  int status = 0;
  while (!exit_after && !cancel.requested() && !running.empty()) {
    for (auto it = running.begin(); it != running.end();) {
      const pid_t pid = (*it)->pid();
      auto exited = (*it)->wait_exit(200 / int(running.size()));
      if (!exited) {
        ++it;
        continue;
      }
      if (*exited != 0) {
        std::fprintf(stderr, "livemig dest: %s\n", guest::guest_exit_text(pid, *exited).c_str());
        status = 1;
      }
      it = running.erase(it);
    }
  }
  for (auto* g : running) (void)g->stop(5000);
  return status;
}

// Where one session's pages go: an image (--image), or a resumed livemig-guest.
struct DestSinks {
  std::shared_ptr<engine::ImageSink> image;
  std::shared_ptr<engine::GuestRamSink> guest;
};

Result<std::shared_ptr<engine::PageSink>> make_sink(const DestArgs& a, DestSinks& sinks) {
  if (a.image) return std::shared_ptr<engine::PageSink>(
      sinks.image = std::make_shared<engine::ImageSink>(a.config.limits.max_ram_bytes));
  return std::shared_ptr<engine::PageSink>(sinks.guest = std::make_shared<engine::GuestRamSink>(
                                               engine::GuestRamSinkOptions{LM_TRY(engine::find_guest_binary()), "/tmp"}));
}

// Everything but the sink.
Result<engine::DestinationOptions> dest_options(const DestArgs& a) {
  engine::DestinationOptions o;
  o.listen = engine::transport_address(a.config.migration);
  o.timeout = transport::Timeout(a.timeout_ms);
  o.reconnect_timeout = a.config.postcopy.reconnect_timeout;
  LM_TRY(engine::apply_security(a.config.security, o.session));
  o.limits = a.config.limits;
  o.session.on_refused = [](const Error& e) { std::fprintf(stderr, "livemig dest: refused: %s\n", e.message.c_str()); };
  return o;
}

// One session's kept copy: its line, and its image written to `image_dir`.
Result<void> report_kept(const engine::DestinationOutcome& outcome, const DestSinks& sinks,
                         const std::string& image_dir, engine::ImageOverwrite overwrite, const std::string& label) {
  std::printf("%sCOMPLETED pages=%llu batches=%llu cpu=%.3f\n", label.c_str(),
              (unsigned long long)outcome.pages_received, (unsigned long long)outcome.batches, outcome.cpu_seconds);
  std::fflush(stdout);
  if (image_dir.empty()) return ok();
  // The source ran its own course already (kept, by default): a failure
  // here loses only this copy.
  auto written = LM_TRY(engine::write_image_dir(image_dir, sinks.image->image(), {sinks.image->source_pid(), overwrite}));
  std::printf("IMAGE %s mappings=%llu pages=%llu stored=%llu\n", image_dir.c_str(), (unsigned long long)written.mappings,
              (unsigned long long)written.pages, (unsigned long long)written.data_pages);
  std::fflush(stdout);
  return ok();
}

int run_dest(const DestArgs& a) {
  const auto overwrite = a.force ? engine::ImageOverwrite::replace : engine::ImageOverwrite::refuse;
  if (!a.image_dir.empty())
    if (auto usable = engine::check_image_dir_target(a.image_dir, overwrite); !usable) return fail("dest", usable.error());
  DestSinks sinks;
  auto o = dest_options(a);
  if (!o) return fail("dest", o.error());
  auto sink = make_sink(a, sinks);
  if (!sink) return fail("dest", sink.error());
  o->sink = *sink;
  auto stop = stop_on_signals();
  if (!stop) return fail("dest", stop.error());
  o->cancel = stop->cancel;
  auto d = engine::Destination::listen(*o);
  if (!d) return fail("dest", d.error());
  std::printf("LISTENING %s\n", (*d)->address().c_str());
  std::fflush(stdout);
  auto outcome = (*d)->run();
  if (!outcome) return fail("dest", outcome.error());
  if (auto kept = report_kept(*outcome, sinks, a.image_dir, overwrite, ""); !kept) return fail("dest", kept.error());
  auto resumed = sinks.guest ? sinks.guest->take_guest() : nullptr;
  return resumed ? serve_guests({resumed.get()}, *stop->cancel, a.exit_after) : 0;
}

// --sessions N: N migrations at once on one listener, each its own sink (an
// image written to DIR/pid-<source pid>, or a resumed guest). 1 if any failed.
int run_dest_sessions(const DestArgs& a) {
  const auto overwrite = a.force ? engine::ImageOverwrite::replace : engine::ImageOverwrite::refuse;
  if (!a.image_dir.empty()) {
    if (auto usable = engine::check_image_dir_target(a.image_dir, overwrite); !usable) return fail("dest", usable.error());
    if (::mkdir(a.image_dir.c_str(), 0755) != 0 && errno != EEXIST)
      return fail("dest", Error::from_errno(strf("create the image directory %s", a.image_dir.c_str())));
  }
  auto o = dest_options(a);
  if (!o) return fail("dest", o.error());
  std::vector<DestSinks> sinks(a.sessions);
  std::vector<std::shared_ptr<engine::PageSink>> page_sinks;
  for (auto& s : sinks) {
    auto sink = make_sink(a, s);
    if (!sink) return fail("dest", sink.error());
    page_sinks.push_back(*sink);
  }
  auto stop = stop_on_signals();
  if (!stop) return fail("dest", stop.error());
  o->cancel = stop->cancel;
  auto dests = engine::Destination::listen_shared(*o, page_sinks);
  if (!dests) return fail("dest", dests.error());
  std::printf("LISTENING %s sessions=%u\n", dests->front()->address().c_str(), a.sessions);
  std::fflush(stdout);
  // Each session's line as it ends (its image written first).
  std::mutex lock;  // guards status, resumed and stdout
  int status = 0;
  std::vector<std::unique_ptr<guest::GuestProcess>> resumed;
  auto serve = [&](unsigned i) {
    const std::string label = strf("SESSION %u ", i + 1);
    auto outcome = (*dests)[i]->run();
    Result<void> kept = outcome ? ok() : Result<void>(outcome.error());
    std::string image_dir;
    if (kept && sinks[i].image && !a.image_dir.empty())
      image_dir = strf("%s/pid-%d", a.image_dir.c_str(), int(sinks[i].image->source_pid().value_or(0)));
    std::lock_guard g(lock);
    if (kept) kept = report_kept(*outcome, sinks[i], image_dir, overwrite, label);
    if (!kept) {
      std::printf("%sFAILED %s\n", label.c_str(), kept.error().message.c_str());
      std::fflush(stdout);
      std::fprintf(stderr, "livemig dest: session %u of %u: %s\n", i + 1, a.sessions, kept.error().message.c_str());
      status = 1;
      return;
    }
    if (sinks[i].guest)
      if (auto guest = sinks[i].guest->take_guest()) resumed.push_back(std::move(guest));
  };
  {
    std::vector<std::jthread> threads;
    for (unsigned i = 0; i < a.sessions; i++) threads.emplace_back(serve, i);
  }
  std::fflush(stdout);
  std::vector<guest::GuestProcess*> guests;
  for (auto& g : resumed) guests.push_back(g.get());
  if (!guests.empty()) status |= serve_guests(guests, *stop->cancel, a.exit_after);
  return status;
}

// --- source ----------------------------------------------------------------------------

struct SourceArgs {
  engine::ScenarioConfig config;  // the migration, convergence, postcopy and group keys
  std::vector<uint64_t> pids;     // one VM each
  std::vector<std::string> to;    // one address for every VM, or one per --pid
  std::vector<std::string> ram_text;  // --ram as given
  std::vector<PageRange> ram;     // none, or one per --pid
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

// One dpdk address is one link of the transport, with this many flows
// (transport/dpdk/backend_dpdk.cpp); every session to it takes a control, a
// priority and its bulk channels' flows, and the command line cannot raise it.
constexpr unsigned kDpdkFlowsPerLink = 8;

// What the options say together (a bad command line: CLI11 reports it).
std::string check_source_args(const SourceArgs& a) {
  for (size_t i = 0; i < a.pids.size(); i++)
    for (size_t j = 0; j < i; j++)
      if (a.pids[i] == a.pids[j])
        return strf("--pid %llu is given twice: each VM of a group is its own process",
                    (unsigned long long)a.pids[i]);
  if (a.to.size() != 1 && a.to.size() != a.pids.size())
    return strf("%zu --to for %zu --pid: give one address for every VM, or one per --pid in their order",
                a.to.size(), a.pids.size());
  if (!a.ram.empty() && a.ram.size() != a.pids.size())
    return strf("%zu --ram for %zu --pid: give one per --pid in their order, or none (image mode)", a.ram.size(),
                a.pids.size());
  std::map<std::string, unsigned> flows;  // per dpdk address, taken by the VMs before
  for (size_t i = 0; i < a.pids.size() && (a.to.size() == 1 || a.to.size() == a.pids.size()); i++) {
    const std::string& to = a.to.size() == 1 ? a.to[0] : a.to[i];
    if (to.rfind("dpdk:", 0) != 0) continue;
    unsigned& used = flows[to];
    used += 2 + a.config.migration.channels;
    if (used > kDpdkFlowsPerLink)
      return strf("VM %zu (--pid %llu): its session to %s needs flows up to %u of that dpdk link, which carries %u "
                  "(a control, a priority and %u bulk channels per VM): give it a --to of its own, or fewer --channels",
                  i + 1, (unsigned long long)a.pids[i], to.c_str(), used, kDpdkFlowsPerLink,
                  a.config.migration.channels);
  }
  if (a.config.migration.mode != engine::MigrationMode::precopy && a.ram.empty())
    return strf("--mode %s resumes the VM at its destination: give --ram ADDR:SIZE (a livemig-guest's RAM) for "
                "every --pid; without it the process is migrated as an image, which no destination resumes",
                std::string(engine::mode_name(a.config.migration.mode)).c_str());
  return {};
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

// VM i's source: its process, its RAM (or image mode), the settings they share.
Result<engine::SourceOptions> source_options(const SourceArgs& a, size_t i,
                                             const std::shared_ptr<engine::Cancel>& cancel) {
  engine::SourceOptions o = engine::source_options(a.config);
  o.pid = pid_t(a.pids[i]);
  if (!a.ram.empty()) {
    o.scope.kind = dt::ScopeKind::ranges;
    o.scope.ranges = {a.ram[i]};
    o.exec_state = engine::ExecStateKind::guest_ram;
  } else {
    o.scope.kind = dt::ScopeKind::migratable;
    o.exec_state = engine::ExecStateKind::image;
  }
  o.verify = !a.no_verify;
  o.allow_other_user = a.allow_other_user;
  o.after = o.exec_state == engine::ExecStateKind::image ? engine::AfterMigration::keep : engine::AfterMigration::kill;
  if (a.after) o.after = *a.after;
  LM_TRY(engine::apply_security(a.config.security, o.session));
  o.cancel = cancel;
  LM_TRY(add_phase_hooks(o, cancel));
  return o;
}

// VM i's address and the result's own record of its settings.
Result<engine::ScenarioConfig> vm_config(const SourceArgs& a, size_t i) {
  engine::ScenarioConfig c = a.config;
  LM_TRY(apply_address(c, a.to.size() == 1 ? a.to[0] : a.to[i]));
  return c;
}

// The result's host and settings, which the engine does not fill.
void describe(engine::MigrationResult& r, const engine::ScenarioConfig& c, const engine::SourceOptions& o,
              const engine::HostFacts& host) {
  r.host = host;
  r.config = c;
  r.config.migration.mode = o.mode;
  if (o.mode != engine::MigrationMode::precopy) r.prepaging = engine::prepaging_name(o.postcopy.prepaging);
}

int run_source(const SourceArgs& a) {
  auto stop = stop_on_signals();
  if (!stop) return fail("source", stop.error());
  auto o = source_options(a, 0, stop->cancel);
  if (!o) return fail("source", o.error());
  auto c = vm_config(a, 0);
  if (!c) return fail("source", c.error());
  engine::MigrationResult result;
  describe(result, *c, *o, engine::read_host_facts());
  result.host.calibration_before_us = engine::host_calibration_us();
  engine::SourceMigration migration(*o);
  auto r = migration.run(engine::transport_address(c->migration), result);
  result.host.calibration_after_us = engine::host_calibration_us();
  if (!a.out.empty()) (void)engine::write_result(result, a.out);
  std::printf("%s", engine::summarize(result).c_str());
  if (!r) return fail("source", r.error());
  return 0;
}

// Several --pid: a group (engine/group.hpp) by --strategy, each VM its own
// session to its --to; the group's document (livemig-group/1) to --out.
int run_source_group(const SourceArgs& a) {
  auto stop = stop_on_signals();
  if (!stop) return fail("source", stop.error());
  engine::GroupRunResult run;
  run.config = a.config;
  run.config.group.enabled = true;
  run.config.group.vms = unsigned(a.pids.size());
  std::vector<engine::GroupVm> vms;
  std::vector<engine::ScenarioConfig> configs;
  for (size_t i = 0; i < a.pids.size(); i++) {
    auto o = source_options(a, i, stop->cancel);
    if (!o) return fail("source", o.error());
    auto c = vm_config(a, i);
    if (!c) return fail("source", c.error());
    engine::GroupVm vm;
    vm.source = std::move(*o);
    vm.address = engine::transport_address(c->migration);
    vm.weight = engine::vm_weight(a.config.group, i);
    vms.push_back(std::move(vm));
    configs.push_back(std::move(*c));
  }
  std::vector<engine::SourceOptions> options;
  for (const auto& vm : vms) options.push_back(vm.source);
  engine::GroupOptions g;
  g.strategy = a.config.group.strategy;
  g.link.rate_bytes_per_s = double(a.config.group.link_rate);
  g.cancel = stop->cancel;
  run.group = engine::run_group(std::move(vms), g);
  const engine::HostFacts host = engine::read_host_facts();
  for (size_t i = 0; i < run.group.vms.size(); i++) describe(run.group.vms[i], configs[i], options[i], host);
  // The VM that failed, by its process too.
  if (const auto i = run.group.failed_vm)
    run.group.failure = engine::group_failure(
        strf("VM %zu (pid %llu, to %s)", *i + 1, (unsigned long long)a.pids[*i],
             engine::transport_address(configs[*i].migration).c_str()),
        run.group.figures[*i], run.group.vms[*i].error);
  run.source_rate_after.assign(a.pids.size(), 0);  // the processes are not ours to sample
  if (!a.out.empty())
    if (auto written = engine::write_group_result(run, a.out); !written) return fail("source", written.error());
  std::printf("%s", engine::summarize_group(run).c_str());
  std::fflush(stdout);
  if (!run.group.completed()) return fail("source", Error::msg(run.group.failure));
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
              "refuse a source announcing more RAM than this, with --sessions all sessions together (0: 75% of "
              "MemAvailable; never above MemAvailable)");
  add_setting(app, "--max-mappings", a->config, "limits.max-mappings", "refuse a source announcing more mappings");
  add_setting(app, "--max-channels", a->config, "limits.max-channels", "refuse a source opening more bulk channels");
  app.add_flag("--exit-after", a->exit_after, "stop the resumed guests and exit once the migrations completed");
  app.add_option("--sessions", a->sessions,
                 "serve this many migrations at once on the one listener (a 'livemig source' with several --pid, "
                 "or several sources), each its own guest or image (--image-dir DIR: DIR/pid-<source pid>)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& t) -> std::string {
            auto n = parse_u64(t);
            if (!n || *n < 1 || *n > 64) return "'" + t + "': a destination serves 1 to 64 sessions";
            return {};
          },
          "1..64"));
  add_security(app, a->config);
  return [a] { return a->sessions > 1 ? run_dest_sessions(*a) : run_dest(*a); };
}

Run source(CLI::App& app) {
  auto a = std::make_shared<SourceArgs>();
  auto& c = a->config;
  add_pids(app, a->pids,
           "the process to migrate; several --pid migrate a group (--strategy), each VM its own session");
  add_addresses(app, "--to", a->to,
                "destination address, e.g. uring:127.0.0.1:7000; once for every VM (a 'livemig dest --sessions "
                "N' serves them all), or once per --pid in their order")
      ->required();
  app.add_option("--ram", a->ram_text, "ADDR:SIZE of a livemig-guest's RAM, once per --pid (default: every migratable "
                                  "mapping, image mode)")
      ->type_name("ADDR:SIZE")
      ->check(CLI::Validator([](std::string& t) -> std::string {
        auto r = parse_ram(t);
        return r ? std::string() : "'" + t + "': " + r.error().message;
      }, ""));
  add_setting(app, "--tracker", c, "migration.tracker", "auto | uffd-wp | soft-dirty | hash");
  add_setting(app, "--policy", c, "migration.policy", "fixed:<codec> | cbc | adaptive");
  add_setting(app, "--channels", c, "migration.channels", "bulk channels");
  add_setting(app, "--workers", c, "migration.workers", "sender/compression threads");
  add_setting(app, "--max-rounds", c, "convergence.max-rounds", "pre-copy rounds at most");
  add_setting(app, "--downtime-ms", c, "convergence.downtime-target-ms", "expected-downtime target");
  add_setting(app, "--downtime-floor-ms", c, "convergence.downtime-floor-ms",
              "within the target, more rounds while each halves what is left, down to this");
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
  add_setting(app, "--strategy", c, "group.strategy",
              "several --pid: serial | serial-correlated | parallel (docs/architecture.md, \"Groups\")");
  add_setting(app, "--link-rate", c, "group.link-rate",
              "several --pid: bytes/s the group's senders keep to together (0: no limit of ours)");
  add_setting(app, "--weights", c, "group.weights",
              "several --pid, parallel: each VM's share of the link, in --pid order, e.g. '[1, 3]'");
  app.add_flag("--allow-other-user", a->allow_other_user, "migrate a process that belongs to another user");
  app.add_option("--out", a->out,
                 "write the result JSON here (several --pid: the group's document, livemig-group/1)");
  add_security(app, c);
  app.callback([a] {
    for (const auto& t : a->ram_text) a->ram.push_back(*parse_ram(t));  // each checked as it was parsed
    if (auto why = check_source_args(*a); !why.empty()) throw CLI::ValidationError(why);
  });
  return [a] { return a->pids.size() > 1 ? run_source_group(*a) : run_source(*a); };
}

}  // namespace lm::cmd
