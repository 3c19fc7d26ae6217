// livemig run CONFIG.toml [--set section.key=value ...] [--out FILE.json] [--quiet]
#include <unistd.h>

#include <cstdio>

#include "harness/commands.hpp"
#include "common/json.hpp"
#include "harness/result_json.hpp"
#include "harness/runner.hpp"
#include "harness/signals.hpp"
#include "harness/sweep.hpp"

#include <filesystem>
#include <fstream>

namespace lm::cmd {

namespace {

// One group point of a sweep: its document, its line, its summary entry; 1 if it failed.
int run_group_point(const engine::ScenarioConfig& config, const std::string& label, const std::string& file,
                    const engine::RunOptions& options, JsonWriter& summary) {
  auto run = engine::run_group_scenario(config, options);
  if (!run) {
    std::printf("%-52s %-9s %s\n", label.c_str(), "error", run.error().message.c_str());
    summary.field("status", "error").field("error", run.error().message).end_object();
    return 1;
  }
  (void)engine::write_group_result(*run, file);
  const auto& g = run->group;
  const double model_total = g.model ? g.model->total_s * 1e3 : 0;
  const double model_down = g.model ? g.model->downtime_s * 1e3 : 0;
  std::printf("%-52s %-9s %10.1f %10.1f %10s %6s %12.1f %12.1f  %.0f Mbit/s\n", label.c_str(),
              g.completed() ? "completed" : "failed", g.migration_time_ms, g.downtime_ms, "-", "-", model_total,
              model_down, g.link_bytes_per_s * 8 / 1e6);
  std::fflush(stdout);
  summary.field("status", g.completed() ? "completed" : "failed")
      .field("strategy", std::string(engine::strategy_name(g.strategy)))
      .field("vms", uint64_t(g.vms.size()))
      .field("total-time", g.total_time_ms)
      .field("migration-time", g.migration_time_ms)
      .field("downtime", g.downtime_ms)
      .field("link-bytes-per-second", g.link_bytes_per_s)
      .field("model-total-time", model_total)
      .field("model-downtime", model_down)
      .end_object();
  return g.completed() ? 0 : 1;
}

// Runs every point of a sweep, `repeat` times (the whole sweep once per
// pass, so that a slow spell of a shared machine falls on every point rather
// than on one point's repetitions); one result file each, and a summary.
// Each point's runs share its scenario name, which `livemig compare` groups
// by.
int run_sweep(const std::string& path, const std::vector<std::string>& overrides, const std::string& out_dir,
              unsigned repeat, engine::RunOptions options) {
  auto sweep = engine::load_sweep(path);
  if (!sweep) {
    std::fprintf(stderr, "livemig run: %s\n", sweep.error().message.c_str());
    return 2;
  }
  const std::string dir = out_dir.empty() ? "results/" + sweep->name : out_dir;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "livemig run: cannot create %s: %s\n", dir.c_str(), ec.message().c_str());
    return 1;
  }
  JsonWriter summary;
  summary.begin_object()
      .field("schema", "livemig-sweep/1")
      .field("name", sweep->name)
      .field("repeats", uint64_t(repeat))
      .begin_array("runs");
  std::printf("%-52s %-9s %10s %10s %10s %6s %12s %12s\n", "point", "status", "total ms", "down ms", "e2e ms",
              "rounds", "model total", "model down");
  int failures = 0;
  for (unsigned pass = 1; pass <= repeat && !options.cancel->requested(); pass++) {
    for (size_t i : engine::sweep_run_order(*sweep, pass)) {
      if (options.cancel->requested()) {
        std::fprintf(stderr, "livemig run: %s: the sweep stops before point %zu of pass %u\n",
                     options.cancel->reason().c_str(), i, pass);
        failures++;
        break;
      }
      const auto& point = sweep->points[i];
      auto sets = point.overrides;
      sets.insert(sets.end(), overrides.begin(), overrides.end());
      auto config = engine::load_scenario(sweep->base_path, sets);
      if (!config) {
        std::fprintf(stderr, "livemig run: %s: %s\n", point.label.c_str(), config.error().message.c_str());
        return 2;
      }
      config->name = strf("%s-%zu", sweep->name.c_str(), i);
      const std::string file = repeat == 1 ? strf("%s/%zu.json", dir.c_str(), i)
                                           : strf("%s/%zu-%u.json", dir.c_str(), i, pass);
      summary.begin_object().field("point", point.label).field("repeat", uint64_t(pass)).field("result", file);
      if (config->group.enabled) {
        failures += run_group_point(*config, point.label, file, options, summary);
        continue;
      }
      auto result = engine::run_scenario(*config, options);
      if (!result) {
        failures++;
        std::printf("%-52s %-9s %s\n", point.label.c_str(), "error", result.error().message.c_str());
        summary.field("status", "error").field("error", result.error().message).end_object();
        continue;
      }
      (void)engine::write_result(*result, file);
      failures += !result->completed;
      double model_total = result->model ? result->model->total_s * 1e3 : 0;
      double model_down = result->model ? result->model->downtime_s * 1e3 : 0;
      std::printf("%-52s %-9s %10.1f %10.1f %10.1f %6u %12.1f %12.1f\n", point.label.c_str(),
                  result->completed ? "completed" : "failed", result->total_time_ms, result->downtime_ms,
                  result->end_to_end_time_ms, result->dirty_sync_count, model_total, model_down);
      std::fflush(stdout);
      summary.field("status", result->completed ? "completed" : "failed")
          .field("total-time", result->total_time_ms)
          .field("downtime", result->downtime_ms)
          .field("setup-time", result->setup_time_ms)
          .field("destination-prepare-time", result->destination_prepare_time_ms)
          .field("end-to-end-time", result->end_to_end_time_ms)
          .field("dirty-sync-count", result->dirty_sync_count)
          .field("transferred", result->transferred)
          .field("model-total-time", model_total)
          .field("model-downtime", model_down)
          .end_object();
    }
  }
  summary.end_array().end_object();
  std::ofstream(dir + "/summary.json") << summary.str();
  std::printf("results       %s/\n", dir.c_str());
  return failures ? 1 : 0;
}

struct RunArgs {
  std::string config;
  std::vector<std::string> overrides;  // --set, in order
  std::string out;
  unsigned repeat = 1;
  bool quiet = false;
};

// A group scenario: one document with every VM's, and the exit status.
int run_group_one(const engine::ScenarioConfig& config, const std::string& out, engine::RunOptions& options) {
  auto run = engine::run_group_scenario(config, options);
  if (!run) {
    std::fprintf(stderr, "livemig run: %s\n", run.error().message.c_str());
    return 1;
  }
  auto written = engine::write_group_result(*run, out);
  if (!written) std::fprintf(stderr, "livemig run: %s\n", written.error().message.c_str());
  std::printf("%s", engine::summarize_group(*run).c_str());
  std::printf("result        %s\n", out.c_str());
  if (!run->group.completed()) {
    std::fprintf(stderr, "livemig run: %s\n", run->group.failure.c_str());
    return 1;
  }
  return written ? 0 : 1;  // a run whose document is not written did not give its result
}

// One scenario: its result document, and the exit status.
int run_one(const RunArgs& a, engine::RunOptions& options) {
  auto config = engine::load_scenario(a.config, a.overrides);
  if (!config) {
    std::fprintf(stderr, "livemig run: %s\n", config.error().message.c_str());
    return 2;
  }
  const std::string out = a.out.empty() ? "results/" + config->name + ".json" : a.out;
  if (config->group.enabled) return run_group_one(*config, out, options);
  auto result = engine::run_scenario(*config, options);
  if (!result && !options.cancel->requested()) {
    std::fprintf(stderr, "livemig run: %s\n", result.error().message.c_str());
    return 1;
  }
  if (!result) {  // interrupted while the scenario was set up: still one document
    engine::MigrationResult interrupted;
    interrupted.config = *config;
    interrupted.error = options.cancel->reason();
    result = std::move(interrupted);
  }
  auto written = engine::write_result(*result, out);
  if (!written) std::fprintf(stderr, "livemig run: %s\n", written.error().message.c_str());
  std::printf("%s", engine::summarize(*result).c_str());
  std::printf("result        %s\n", out.c_str());
  if (!result->completed) {
    std::fprintf(stderr, "livemig run: %s\n", result->error.c_str());
    return 1;
  }
  if (options.cancel->requested()) {
    // After a post-copy commit the VM runs at the destination: the run was
    // finished rather than abandoned, but the caller asked it to stop.
    std::fprintf(stderr, "livemig run: %s after the commit; the migration was finished\n",
                 options.cancel->reason().c_str());
    return 1;
  }
  return written ? 0 : 1;  // a run whose document is not written did not give its result
}

int run_command(const RunArgs& a) {
  engine::RunOptions options;
  options.progress = !a.quiet && isatty(STDERR_FILENO) ? engine::ProgressLine::on : engine::ProgressLine::off;
  auto guest = engine::find_guest_binary();
  if (!guest) {
    std::fprintf(stderr, "livemig run: %s\n", guest.error().message.c_str());
    return 1;
  }
  options.guest_binary = *guest;
  options.cancel = std::make_shared<engine::Cancel>();
  auto watcher = SignalWatcher::start(options.cancel);
  auto signal_at = signal_at_phase_from_env(options.cancel);
  if (!watcher || !signal_at) {
    std::fprintf(stderr, "livemig run: %s\n", (!watcher ? watcher.error() : signal_at.error()).message.c_str());
    return 1;
  }
  options.on_source_phase = *signal_at;
  if (engine::is_sweep_file(a.config)) return run_sweep(a.config, a.overrides, a.out, a.repeat, options);
  if (a.repeat != 1) {
    std::fprintf(stderr, "livemig run: --repeat is for sweeps; %s is one scenario\n", a.config.c_str());
    return 2;
  }
  return run_one(a, options);
}

}  // namespace

Run run(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  app.add_option("CONFIG", a->config, "a scenario or a sweep (configs/*.toml)")->required();
  app.add_option("--set", a->overrides, "section.key=value: set one key of the scenario (repeatable)")
      ->type_name("KEY=VALUE")
      ->allow_extra_args(false);
  app.add_option("--out", a->out,
                 "write the result JSON here (default results/<name>.json); for a sweep, the directory of its "
                 "results (default results/<sweep name>/)");
  app.add_option("--repeat", a->repeat,
                 "sweeps: run the whole sweep N times, one pass after another; each point's results are "
                 "<point>-<pass>.json (default 1: <point>.json)")
      ->check(CLI::Range(1u, 1000u));
  app.add_flag("--quiet", a->quiet, "no progress line");
  return [a] { return run_command(*a); };
}

}  // namespace lm::cmd
