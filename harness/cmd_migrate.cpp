// livemig dest / livemig source: the two halves of a migration as separate
// processes (two hosts, or fault-injection tests that kill one side).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "common/args.hpp"
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

template <class T>
bool usage_error(const char* cmd, const Result<T>& r, const std::vector<OptionSpec>& specs) {
  if (r) return false;
  std::fprintf(stderr, "livemig %s: %s\nusage: livemig %s [options]\n%s", cmd, r.error().message.c_str(), cmd,
               Args::usage(specs).c_str());
  return true;
}

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

}  // namespace

int dest(const Argv& argv) {
  const std::vector<OptionSpec> specs = {
      {"listen", true, "address to listen on, e.g. uring:127.0.0.1:7000 (port 0 picks one)"},
      {"image", false, "keep a memory image (unmodified process) instead of resuming livemig-guest"},
      {"image-dir", true, "with --image: write the verified image to this new directory (docs/image.md)"},
      {"force", false, "with --image-dir: replace an existing non-empty directory"},
      {"timeout-ms", true, "longest silence from the source (default 30000)"},
      {"reconnect-timeout-ms", true, "post-copy: how long faults wait for a broken link to come back (default 10000 ms; 0: never)"},
      {"exit-after", false, "stop the resumed guest and exit once the migration completed"},
  };
  auto args = Args::parse(argv, specs);
  if (usage_error("dest", args, specs)) return 2;
  engine::DestinationOptions o;
  o.listen = args->get_or("listen", "uring:127.0.0.1:0");
  const bool image = args->has("image");
  const auto image_dir = args->get("image-dir");
  const auto overwrite = args->has("force") ? engine::ImageOverwrite::replace : engine::ImageOverwrite::refuse;
  if ((image_dir || args->has("force")) && !image) {
    std::fprintf(stderr, "livemig dest: --image-dir and --force need --image\n%s", Args::usage(specs).c_str());
    return 2;
  }
  if (image_dir) {
    if (auto usable = engine::check_image_dir_target(*image_dir, overwrite); !usable) {
      std::fprintf(stderr, "livemig dest: %s\n", usable.error().message.c_str());
      return 1;
    }
  }
  auto timeout = args->get_u64("timeout-ms", 30000);
  if (usage_error("dest", timeout, specs)) return 2;
  o.timeout = transport::Timeout(*timeout);
  auto reconnect = args->get_u64("reconnect-timeout-ms", engine::kDefaultReconnectTimeoutMs);
  if (usage_error("dest", reconnect, specs)) return 2;
  o.reconnect_timeout = transport::Timeout(*reconnect);
  std::shared_ptr<engine::ImageSink> image_sink;
  std::shared_ptr<engine::GuestRamSink> guest_sink;
  if (image) {
    o.sink = image_sink = std::make_shared<engine::ImageSink>();
  } else {
    auto bin = engine::find_guest_binary();
    if (!bin) {
      std::fprintf(stderr, "livemig dest: %s\n", bin.error().message.c_str());
      return 1;
    }
    o.sink = guest_sink = std::make_shared<engine::GuestRamSink>(engine::GuestRamSinkOptions{*bin, "/tmp"});
  }
  auto stop = stop_on_signals();
  if (!stop) {
    std::fprintf(stderr, "livemig dest: %s\n", stop.error().message.c_str());
    return 1;
  }
  o.cancel = stop->cancel;
  auto d = engine::Destination::listen(o);
  if (!d) {
    std::fprintf(stderr, "livemig dest: %s\n", d.error().message.c_str());
    return 1;
  }
  std::printf("LISTENING %s\n", (*d)->address().c_str());
  std::fflush(stdout);
  auto outcome = (*d)->run();
  if (!outcome) {
    std::fprintf(stderr, "livemig dest: %s\n", outcome.error().message.c_str());
    return 1;
  }
  std::printf("COMPLETED pages=%llu batches=%llu cpu=%.3f\n", (unsigned long long)outcome->pages_received,
              (unsigned long long)outcome->batches, outcome->cpu_seconds);
  if (image_dir) {
    // The source ran its own course already (kept, by default): a failure
    // here loses only this copy.
    auto written = engine::write_image_dir(*image_dir, image_sink->image(), {image_sink->source_pid(), overwrite});
    if (!written) {
      std::fprintf(stderr, "livemig dest: %s\n", written.error().message.c_str());
      return 1;
    }
    std::printf("IMAGE %s mappings=%llu pages=%llu stored=%llu\n", image_dir->c_str(),
                (unsigned long long)written->mappings, (unsigned long long)written->pages,
                (unsigned long long)written->data_pages);
  }
  if (auto resumed = guest_sink ? guest_sink->take_guest() : nullptr) {
    std::printf("RESUMED pid=%d control=%s\n", resumed->pid(), resumed->control_path().c_str());
    std::fflush(stdout);
    const pid_t guest_pid = resumed->pid();
    if (!args->has("exit-after")) {
      // The guest is our child: stay until it exits or we are told to stop
      // (SIGINT, SIGTERM, SIGHUP).
      while (!stop->cancel->requested()) {
        auto exited = resumed->wait_exit(200);
        if (!exited) continue;
        if (*exited == 0) return 0;
        std::fprintf(stderr, "livemig dest: %s\n", guest::guest_exit_text(guest_pid, *exited).c_str());
        return 1;
      }
    }
    (void)resumed->stop(5000);
  }
  return 0;
}

int source(const Argv& argv) {
  const std::vector<OptionSpec> specs = {
      {"pid", true, "the process to migrate"},
      {"to", true, "destination address, e.g. uring:127.0.0.1:7000"},
      {"ram", true, "ADDR:SIZE of a livemig-guest's RAM (default: every migratable mapping, image mode)"},
      {"tracker", true, "auto | uffd-wp | soft-dirty | hash"},
      {"policy", true, "fixed:<codec> | cbc | adaptive"},
      {"channels", true, "bulk channels (default 2)"},
      {"workers", true, "sender/compression threads (default 2)"},
      {"max-rounds", true, "pre-copy rounds at most (default 30)"},
      {"downtime-ms", true, "expected-downtime target (default 300)"},
      {"no-verify", false, "skip digest verification"},
      {"mode", true, "precopy | postcopy | hybrid (pre-copy for --max-rounds, then post-copy); default precopy"},
      {"prepaging", true, "post-copy push order: none | sequential | bubble | bubble-forward (default bubble)"},
      {"pivots", true, "post-copy: recent faults that grow a bubble (default 1)"},
      {"reconnect-timeout-ms", true, "post-copy: how long to dial again after a broken link (default 10000 ms; 0: never)"},
      {"after", true, "what becomes of the source once the destination holds a verified copy: kill | stop | keep "
                    "(default kill; keep, a live snapshot, for an image without --ram)"},
      {"allow-other-user", false, "migrate a process that belongs to another user"},
      {"out", true, "write the result JSON here"},
  };
  auto args = Args::parse(argv, specs);
  if (usage_error("source", args, specs)) return 2;
  engine::SourceOptions o;
  auto pid = args->get_u64("pid", 0);
  if (usage_error("source", pid, specs)) return 2;
  if (*pid == 0 || !args->has("to")) {
    std::fprintf(stderr, "livemig source: --pid and --to are required\n%s", Args::usage(specs).c_str());
    return 2;
  }
  o.pid = pid_t(*pid);
  if (auto ram = args->get("ram")) {
    auto colon = ram->find(':');
    auto addr = parse_u64(ram->substr(0, colon));
    auto size = colon == std::string::npos ? Result<uint64_t>(Error::msg("missing :SIZE")) : parse_size(ram->substr(colon + 1));
    if (!addr || !size) {
      std::fprintf(stderr, "livemig source: --ram '%s': expected ADDR:SIZE\n", ram->c_str());
      return 2;
    }
    o.scope.kind = dt::ScopeKind::ranges;
    o.scope.ranges = {{*addr, *addr + *size}};
    o.exec_state = engine::ExecStateKind::guest_ram;
  } else {
    o.scope.kind = dt::ScopeKind::migratable;
    o.exec_state = engine::ExecStateKind::image;
  }
  o.tracker = args->get_or("tracker", "auto");
  o.policy = args->get_or("policy", "adaptive");
  auto channels = args->get_u64("channels", 2);
  auto workers = args->get_u64("workers", 2);
  auto rounds = args->get_u64("max-rounds", 30);
  auto downtime = args->get_double("downtime-ms", 300);
  if (usage_error("source", channels, specs) || usage_error("source", workers, specs) ||
      usage_error("source", rounds, specs) || usage_error("source", downtime, specs))
    return 2;
  o.channels = unsigned(*channels);
  o.workers = unsigned(*workers);
  o.convergence.max_rounds = unsigned(*rounds);
  o.convergence.downtime_target_ms = *downtime;
  o.verify = !args->has("no-verify");
  o.allow_other_user = args->has("allow-other-user");
  o.after = o.exec_state == engine::ExecStateKind::image ? engine::AfterMigration::keep : engine::AfterMigration::kill;
  if (auto after = args->get("after")) {
    auto a = engine::parse_after(*after);
    if (usage_error("source", a, specs)) return 2;
    o.after = *a;
  }
  // Fault injection (tests): the engine kills itself on entering this phase.
  if (const char* die_at = std::getenv("LM_FI_SOURCE_DIE_AT"); die_at && *die_at) {
    std::string phase = die_at;
    o.on_phase = [phase](engine::SourcePhase p) {
      if (engine::source_phase_name(p) == phase) raise(SIGKILL);
    };
  }
  const std::string mode = args->get_or("mode", "precopy");
  if (mode == "postcopy") o.mode = engine::MigrationMode::postcopy;
  else if (mode == "hybrid") o.mode = engine::MigrationMode::hybrid;
  else if (mode != "precopy") {
    std::fprintf(stderr, "livemig source: --mode '%s': expected precopy, postcopy or hybrid\n", mode.c_str());
    return 2;
  }
  o.postcopy.prepaging = args->get_or("prepaging", "bubble");
  auto pivots = args->get_u64("pivots", 1);
  auto reconnect = args->get_u64("reconnect-timeout-ms", engine::kDefaultReconnectTimeoutMs);
  if (usage_error("source", pivots, specs) || usage_error("source", reconnect, specs)) return 2;
  o.postcopy.pivots = unsigned(*pivots);
  o.postcopy.reconnect_timeout_ms = unsigned(*reconnect);
  engine::MigrationResult result;
  result.host = engine::read_host_facts();
  result.config.migration.mode = o.mode;
  result.prepaging = o.mode == engine::MigrationMode::precopy ? "" : o.postcopy.prepaging;
  auto stop = stop_on_signals();
  auto signal_at = signal_at_phase_from_env(stop ? stop->cancel : nullptr);
  if (!stop || !signal_at) {
    std::fprintf(stderr, "livemig source: %s\n", (!stop ? stop.error() : signal_at.error()).message.c_str());
    return 1;
  }
  o.cancel = stop->cancel;
  if (*signal_at) {
    auto die_at = std::move(o.on_phase);
    o.on_phase = [die_at, signal_at = *signal_at](engine::SourcePhase p) {
      if (die_at) die_at(p);
      signal_at(p);
    };
  }
  engine::SourceMigration migration(o);
  auto r = migration.run(*args->get("to"), result);
  if (auto out = args->get("out")) (void)engine::write_result(result, *out);
  std::printf("%s", engine::summarize(result).c_str());
  if (!r) {
    std::fprintf(stderr, "livemig source: %s\n", r.error().message.c_str());
    return 1;
  }
  return 0;
}

}  // namespace lm::cmd
