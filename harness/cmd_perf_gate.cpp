// livemig perf-gate --base REV --candidate REV --scenarios A.toml,B.toml --repeat N
//
// Builds both revisions in temporary git worktrees (or takes existing build
// directories), runs every scenario with each build interleaved (base,
// candidate, then candidate, base, ...) on this machine, so load from
// elsewhere falls on both sides alike, and compares the two sets as pairs
// ('livemig compare').
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/clock.hpp"
#include "common/subprocess.hpp"
#include "harness/commands.hpp"
#include "harness/compare.hpp"
#include "harness/signals.hpp"

extern char** environ;

namespace lm::cmd {

namespace {

namespace fs = std::filesystem;

struct GateArgs {
  std::string base_rev, candidate_rev;
  std::string base_build, candidate_build;
  std::vector<std::string> scenarios;
  std::vector<std::string> sets;
  std::vector<std::string> candidate_env;
  unsigned repeat = 3;
  std::string out = "results/perf-gate";
  std::string repo = ".";
  unsigned jobs = 2;
  unsigned run_timeout_s = 600;
  std::string threshold = "5%";
  std::vector<std::string> metric_thresholds;
  unsigned min_repeat = 3;
  std::string host_slowdown = "off";
  std::string format = "text";
};

// One side of the gate: where its livemig and livemig-guest are.
struct Side {
  const char* name;  // "base", "candidate"
  std::string rev;   // empty: a given build
  fs::path build;
  std::vector<std::string> env;  // the whole environment of its runs
};

// Waits for a child, ending it when the gate is interrupted.
Result<ExitStatus> wait_child(Subprocess& child, const engine::Cancel& cancel, unsigned timeout_s) {
  const uint64_t deadline = now_ns() + uint64_t(timeout_s) * 1'000'000'000;
  for (;;) {
    if (cancel.requested()) {
      (void)child.kill_and_wait();
      return cancel.error();
    }
    if (now_ns() > deadline) {
      (void)child.kill_and_wait();
      return Error::msg(strf("%s: no exit after %u s; killed", child.name().c_str(), timeout_s));
    }
    auto r = child.wait(200);
    if (r || r.error().code != ETIMEDOUT) return r;
  }
}

Result<void> run_checked(const std::vector<std::string>& argv, const engine::Cancel& cancel, unsigned timeout_s,
                         Stdio out = Stdio::inherit) {
  SpawnOptions o;
  o.stdout_to = out;
  o.on_parent_exit = ParentExit::die;
  auto child = LM_TRY(Subprocess::spawn(argv, o));
  auto status = LM_TRY(wait_child(child, cancel, timeout_s));
  if (!status.success()) {
    std::string cmd;
    for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    return Error::msg(strf("%s: %s", cmd.c_str(), status.text().c_str()));
  }
  return ok();
}

// The temporary worktrees and their directory; removed however the gate ends.
class Worktrees {
 public:
  Worktrees(std::string repo) : repo_(std::move(repo)) {}
  ~Worktrees() {
    engine::Cancel never;
    for (const auto& dir : added_)
      if (auto r = run_checked({"git", "-C", repo_, "worktree", "remove", "--force", dir.string()}, never, 120); !r)
        std::fprintf(stderr, "livemig perf-gate: %s\n", r.error().message.c_str());
    if (!root_.empty()) {
      std::error_code ec;
      fs::remove_all(root_, ec);  // no 'git worktree prune': it would touch other people's worktrees
    }
  }
  Worktrees(const Worktrees&) = delete;
  Worktrees& operator=(const Worktrees&) = delete;

  // Checks `rev` out into a new worktree and builds livemig there.
  Result<fs::path> build(const std::string& name, const std::string& rev, unsigned jobs, const engine::Cancel& cancel) {
    if (root_.empty()) {
      const char* tmp = std::getenv("TMPDIR");
      std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/livemig-perf-gate-XXXXXX";
      if (!mkdtemp(pattern.data())) return Error::from_errno(strf("perf-gate: mkdtemp %s", pattern.c_str()));
      root_ = pattern;
    }
    const fs::path dir = root_ / name;
    LM_TRY(run_checked({"git", "-C", repo_, "worktree", "add", "--detach", dir.string(), rev}, cancel, 300));
    added_.push_back(dir);
    const fs::path build = dir / "build";
    std::fprintf(stderr, "livemig perf-gate: building %s (%s) in %s\n", name.c_str(), rev.c_str(), build.c_str());
    LM_TRY(run_checked({"meson", "setup", build.string(), dir.string(), "--buildtype=debugoptimized",
                        "-Dtests=disabled", "-Dbenchmarks=disabled"},
                       cancel, 600, Stdio::null));
    LM_TRY(run_checked({"nice", "ninja", "-C", build.string(), strf("-j%u", jobs)}, cancel, 3600, Stdio::null));
    return build;
  }

 private:
  std::string repo_;
  fs::path root_;
  std::vector<fs::path> added_;
};

std::vector<std::string> environment_with(const fs::path& build, const std::vector<std::string>& extra) {
  std::vector<std::string> env;
  for (char** e = environ; *e; e++)
    if (std::string_view(*e).substr(0, 13) != "LM_GUEST_BIN=") env.emplace_back(*e);
  env.push_back("LM_GUEST_BIN=" + (build / "harness" / "guest" / "livemig-guest").string());
  env.insert(env.end(), extra.begin(), extra.end());
  return env;
}

std::string load_average() {
  double l[3] = {0, 0, 0};
  if (getloadavg(l, 3) != 3) return "unknown";
  return strf("%.2f %.2f %.2f", l[0], l[1], l[2]);
}

// One run of one scenario by one side; its result document at `out`.
Result<void> run_once(const Side& side, const std::string& scenario, const GateArgs& a, const std::string& out,
                      const engine::Cancel& cancel) {
  std::vector<std::string> argv = {(side.build / "harness" / "livemig").string(), "run", scenario, "--quiet",
                                   "--out", out};
  for (const auto& s : a.sets) argv.insert(argv.end(), {"--set", s});
  SpawnOptions o;
  o.stdout_to = Stdio::null;
  o.environment = side.env;
  o.on_parent_exit = ParentExit::die;
  auto child = LM_TRY(Subprocess::spawn(argv, o));
  auto status = LM_TRY(wait_child(child, cancel, a.run_timeout_s));
  if (!status.success() && !fs::exists(out))
    return Error::msg(strf("%s run %s: %s, no result", side.name, scenario.c_str(), status.text().c_str()));
  return ok();
}

int gate(const GateArgs& a) {
  auto options = compare::make_options(a.threshold, a.metric_thresholds, a.min_repeat, a.host_slowdown);
  if (!options) {
    std::fprintf(stderr, "livemig perf-gate: %s\n", options.error().message.c_str());
    return 2;
  }
  if (a.base_rev.empty() == a.base_build.empty() || a.candidate_rev.empty() == a.candidate_build.empty()) {
    std::fprintf(stderr, "livemig perf-gate: each side needs exactly one of --base/--base-build, "
                         "--candidate/--candidate-build\n");
    return 2;
  }
  auto cancel = std::make_shared<engine::Cancel>();
  auto watcher = SignalWatcher::start(cancel);
  if (!watcher) {
    std::fprintf(stderr, "livemig perf-gate: %s\n", watcher.error().message.c_str());
    return 4;
  }
  Worktrees worktrees(a.repo);
  Side sides[2] = {{"base", a.base_rev, a.base_build, {}}, {"candidate", a.candidate_rev, a.candidate_build, {}}};
  for (Side& s : sides) {
    if (!s.rev.empty()) {
      auto build = worktrees.build(s.name, s.rev, a.jobs, *cancel);
      if (!build) {
        std::fprintf(stderr, "livemig perf-gate: %s: %s\n", s.name, build.error().message.c_str());
        return 4;
      }
      s.build = *build;
    }
    s.env = environment_with(s.build, &s == &sides[1] ? a.candidate_env : std::vector<std::string>{});
  }

  std::error_code ec;
  for (const Side& s : sides) {
    fs::remove_all(fs::path(a.out) / s.name, ec);
    fs::create_directories(fs::path(a.out) / s.name, ec);
    if (ec) {
      std::fprintf(stderr, "livemig perf-gate: create %s/%s: %s\n", a.out.c_str(), s.name, ec.message().c_str());
      return 4;
    }
  }
  const std::string load_start = load_average();
  std::fprintf(stderr, "livemig perf-gate: %zu scenario(s) x %u repetitions, interleaved; load average %s\n",
               a.scenarios.size(), a.repeat, load_start.c_str());
  // Each repetition is a pair of runs; every other pair runs the candidate
  // first (A B, B A, ...), so what the second run of a pair inherits from the
  // first falls on both sides alike (with A always first the same binary's
  // second runs once came out 10% lower in throughput, paired [-12.5%, -6.5%]).
  for (unsigned i = 0; i < a.repeat; i++)
    for (const auto& scenario : a.scenarios)
      for (unsigned k = 0; k < 2; k++) {
        const Side& s = sides[i % 2 ? 1 - k : k];
        const std::string stem = fs::path(scenario).stem().string();
        const std::string out = strf("%s/%s/%s-%u.json", a.out.c_str(), s.name, stem.c_str(), i);
        if (auto r = run_once(s, fs::absolute(scenario).string(), a, out, *cancel); !r) {
          std::fprintf(stderr, "livemig perf-gate: %s\n", r.error().message.c_str());
          if (cancel->requested()) return 4;
        }
      }
  const std::string load_end = load_average();
  std::fprintf(stderr, "livemig perf-gate: load average at the end %s\n", load_end.c_str());
  nlohmann::ordered_json doc = {{"schema", "livemig-perf-gate/1"},
                                {"base", sides[0].rev.empty() ? sides[0].build.string() : sides[0].rev},
                                {"candidate", sides[1].rev.empty() ? sides[1].build.string() : sides[1].rev},
                                {"candidate-env", a.candidate_env},
                                {"scenarios", a.scenarios},
                                {"repeat", a.repeat},
                                {"order", "interleaved per scenario and repetition: base, candidate in even "
                                          "repetitions, candidate, base in odd ones"},
                                {"load-average-start", load_start},
                                {"load-average-end", load_end}};
  std::ofstream(fs::path(a.out) / "perf-gate.json") << doc.dump(2) << "\n";
  return compare::compare_and_print({(fs::path(a.out) / "base").string()},
                                    {(fs::path(a.out) / "candidate").string()}, *options, a.format);
}

}  // namespace

Run perf_gate(CLI::App& app) {
  auto a = std::make_shared<GateArgs>();
  app.footer(
      "Each revision is checked out with 'git worktree add' under $TMPDIR and built there (meson, ninja -jN, "
      "tests off); the worktrees are removed when the gate ends, also on failure or interruption. Result "
      "documents go to OUT/base and OUT/candidate, the load averages to OUT/perf-gate.json.\nExit status: "
      "0 nothing regressed, 1 a metric regressed, 2 bad command line, 3 unreadable results, 4 a build or "
      "setup failed (or the gate was interrupted).");
  app.add_option("--base", a->base_rev, "the baseline revision (any git revision)");
  app.add_option("--candidate", a->candidate_rev, "the candidate revision");
  app.add_option("--base-build", a->base_build, "an existing build directory as the baseline, instead of --base")
      ->check(CLI::ExistingDirectory);
  app.add_option("--candidate-build", a->candidate_build, "an existing build directory as the candidate")
      ->check(CLI::ExistingDirectory);
  app.add_option("--scenarios", a->scenarios, "scenario files (configs/*.toml), comma-separated")
      ->required()
      ->delimiter(',')
      ->check(CLI::ExistingFile);
  app.add_option("--repeat", a->repeat, "runs of each scenario on each side")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--set", a->sets, "section.key=value for every run (repeatable)")->type_name("KEY=VALUE");
  app.add_option("--candidate-env", a->candidate_env, "NAME=VALUE in the candidate's runs only (repeatable)")
      ->type_name("NAME=VALUE");
  app.add_option("--out", a->out, "where the result documents go")->capture_default_str();
  app.add_option("--repo", a->repo, "the git repository the revisions are in")->capture_default_str();
  app.add_option("--jobs", a->jobs, "ninja -j for the builds")->capture_default_str()->check(CLI::Range(1u, 256u));
  app.add_option("--run-timeout", a->run_timeout_s, "seconds one run may take before it is killed")
      ->capture_default_str();
  app.add_option("--threshold", a->threshold, "as 'livemig compare'")->capture_default_str();
  app.add_option("--metric-threshold", a->metric_thresholds, "as 'livemig compare'")->type_name("METRIC=PERCENT");
  app.add_option("--min-repeat", a->min_repeat, "as 'livemig compare'")->capture_default_str();
  app.add_option("--host-slowdown", a->host_slowdown, "as 'livemig compare'")->capture_default_str();
  app.add_option("--format", a->format, "text, markdown or json")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "markdown", "json"}));
  return [a] { return gate(*a); };
}

}  // namespace lm::cmd
