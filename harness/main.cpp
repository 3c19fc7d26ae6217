// livemig: live migration of process memory — command dispatcher.
#include <cstdio>
#include <new>
#include <string_view>

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
  int (*run)(const lm::cmd::Argv&);
  StopSignals stop_signals = StopSignals::kill;
};

int bench(const lm::cmd::Argv& args);

constexpr Command kCommands[] = {
    {"check", "probe this host's kernel and libraries; print what works and why not", lm::cmd::check},
    {"track", "track the pages a live process dirties, round by round", lm::cmd::track},
    {"snapshot", "capture a live process's migratable pages into a corpus file", lm::cmd::snapshot},
    {"run", "run a migration scenario (configs/*.toml) on this host and write its result JSON", lm::cmd::run,
     StopSignals::watched},
    {"dest", "receive one migration (listen; resume the guest or keep an image)", lm::cmd::dest,
     StopSignals::watched},
    {"source", "migrate a live process by PID to a listening 'livemig dest'", lm::cmd::source,
     StopSignals::watched},
    {"image", "an image kept by 'livemig dest --image-dir': 'image verify DIR --pid PID', 'image show DIR'",
     lm::cmd::image},
    {"bench", "benchmarks: 'bench compress', 'bench transport'", bench},
};

constexpr Command kBenchCommands[] = {
    {"compress", "codecs and policies on page corpora", lm::cmd::bench_compress},
    {"transport", "transport backends between two processes on loopback", lm::cmd::bench_transport},
};

template <size_t N>
int dispatch(const Command (&table)[N], const char* prog, const lm::cmd::Argv& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fprintf(stderr, "usage: %s COMMAND [OPTIONS]\n\ncommands:\n", prog);
    for (const auto& c : table)
      std::fprintf(stderr, "  %-12.*s %.*s\n", int(c.name.size()), c.name.data(), int(c.summary.size()),
                   c.summary.data());
    return args.empty() ? 2 : 0;
  }
  for (const auto& c : table) {
    if (c.name != args[0]) continue;
    // Before the command starts any thread: they all inherit the mask.
    if (c.stop_signals == StopSignals::watched) lm::cmd::block_stop_signals();
    try {
      return c.run(lm::cmd::Argv(args.begin() + 1, args.end()));
    } catch (const std::bad_alloc&) {  // no command lets it escape as a crash
      std::fprintf(stderr, "%s %s: out of memory\n", prog, args[0].c_str());
      return 1;
    }
  }
  std::fprintf(stderr, "%s: unknown command '%s' (try --help)\n", prog, args[0].c_str());
  return 2;
}

int bench(const lm::cmd::Argv& args) { return dispatch(kBenchCommands, "livemig bench", args); }

}  // namespace

int main(int argc, char** argv) {
  return dispatch(kCommands, "livemig", lm::cmd::Argv(argv + 1, argv + argc));
}
