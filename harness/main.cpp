// livemig: live migration of process memory — command dispatcher.
#include <cstdio>
#include <new>
#include <string_view>
#include <vector>

#include "harness/cli.hpp"
#include "harness/commands.hpp"
#include "harness/signals.hpp"

namespace {

// What SIGINT, SIGTERM and SIGHUP do to a command: kill it (the default), or,
// for the migration commands, stop it cleanly through their signal watcher
// (harness/signals.hpp).
enum class StopSignals { kill, watched };

struct Command {
  std::string_view name;
  std::string_view summary;
  lm::cmd::Run (*add)(CLI::App&);  // nullptr: a group of the commands that follow
  StopSignals stop_signals = StopSignals::kill;
  std::string_view group = {};     // the command this one belongs to ("bench compress")
};

constexpr Command kCommands[] = {
    {"check", "probe this host's kernel and libraries; print what works and why not", lm::cmd::check},
    {"track", "track the pages a live process dirties, round by round", lm::cmd::track},
    {"snapshot", "capture a live process's migratable pages into a corpus file", lm::cmd::snapshot},
    {"run", "run a migration scenario (configs/*.toml) on this host and write its result JSON", lm::cmd::run,
     StopSignals::watched},
    {"dest", "receive a migration, or --sessions N at once on one listener (resume guests or keep images)",
     lm::cmd::dest,
     StopSignals::watched},
    {"source", "migrate a live process by PID to a listening 'livemig dest' (several --pid: a group)",
     lm::cmd::source,
     StopSignals::watched},
    {"image", "an image kept by 'livemig dest --image-dir': 'image verify DIR --pid PID', 'image show DIR'", nullptr},
    {"verify", "compare a kept image with a live or frozen process", lm::cmd::image_verify, StopSignals::kill,
     "image"},
    {"show", "what a kept image holds", lm::cmd::image_show, StopSignals::kill, "image"},
    {"compare", "compare two sets of result documents: medians, change and interval, verdict per metric",
     lm::cmd::compare},
    {"perf-gate", "build two revisions, run scenarios interleaved, fail on a regression (CI)", lm::cmd::perf_gate,
     StopSignals::watched},
    {"report", "an HTML page with figures from result documents", lm::cmd::report},
    {"rig", "two namespaces joined by a veth pair, rate-limited: 'rig up|down|status|exec'", lm::cmd::rig},
    {"bench", "benchmarks: 'bench compress', 'bench transport'", nullptr},
    {"compress", "codecs and policies on page corpora", lm::cmd::bench_compress, StopSignals::kill, "bench"},
    {"transport", "transport backends between two processes: on loopback, or --serve / --to across hosts", lm::cmd::bench_transport,
     StopSignals::kill, "bench"},
};

struct Added {
  CLI::App* app;
  const Command* command;
  lm::cmd::Run run;
};

std::vector<Added> add_commands(CLI::App& livemig) {
  std::vector<Added> out;
  for (const auto& c : kCommands) {
    CLI::App* parent = &livemig;
    if (!c.group.empty()) parent = livemig.get_subcommand(std::string(c.group));
    CLI::App* app = parent->add_subcommand(std::string(c.name), std::string(c.summary));
    if (c.add) out.push_back({app, &c, c.add(*app)});
    else app->require_subcommand(1);
  }
  return out;
}

// The innermost command the command line named (for messages and help).
const CLI::App& innermost(const CLI::App& app) {
  const auto chosen = app.get_subcommands();
  return chosen.empty() ? app : innermost(*chosen.front());
}

int parse(CLI::App& livemig, int argc, char** argv) {
  try {
    livemig.parse(argc, argv);
    return -1;
  } catch (const CLI::CallForHelp&) {
    std::fputs(livemig.help().c_str(), stdout);  // the innermost command's
    return 0;
  } catch (const CLI::ParseError& e) {
    const CLI::App& command = innermost(livemig);
    const std::string where = lm::cmd::command_path(command);
    // CLI11 checks what is required before it complains about arguments it
    // did not expect: the unexpected one is the better message.
    std::string what = e.what();
    if (const auto extra = command.remaining(); dynamic_cast<const CLI::RequiredError*>(&e) && !extra.empty())
      what = CLI::ExtrasError(extra).what();
    std::fprintf(stderr, "%s: %s (see '%s --help')\n", where.c_str(), what.c_str(), where.c_str());
    return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App livemig("livemig: live migration of process memory", "livemig");
  livemig.require_subcommand(1);
  const std::vector<Added> commands = add_commands(livemig);
  if (argc < 2 || std::string_view(argv[1]) == "help") {
    std::fputs(livemig.help().c_str(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (int status = parse(livemig, argc, argv); status >= 0) return status;
  for (const auto& c : commands) {
    if (!c.app->parsed()) continue;
    // Before the command starts any thread: they all inherit the mask.
    if (c.command->stop_signals == StopSignals::watched) lm::cmd::block_stop_signals();
    try {
      return c.run();
    } catch (const std::bad_alloc&) {  // no command lets it escape as a crash
      std::fprintf(stderr, "%s: out of memory\n", lm::cmd::command_path(*c.app).c_str());
      return 1;
    }
  }
  return 2;  // not reached: CLI11 requires a command
}
