// livemig report RESULTS... --out DIR: the page and figures are drawn by
// harness/report/livemig_report.py (matplotlib); this command finds it and
// hands it the results and its own path, for the 'livemig compare' table.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/error.hpp"
#include "harness/commands.hpp"

namespace lm::cmd {

namespace {

namespace fs = std::filesystem;

struct ReportArgs {
  std::vector<std::string> results;
  std::string out;
  std::vector<std::string> base;  // --base: results for the compare table
};

// The report script: $LM_REPORT_SCRIPT, next to this livemig (a build tree),
// or under ../libexec/livemig (an installation).
Result<fs::path> find_script(const fs::path& self) {
  if (const char* env = std::getenv("LM_REPORT_SCRIPT"); env && *env) return fs::path(env);
  std::error_code ec;
  for (const fs::path& p : {self.parent_path() / "livemig-report.py",
                            self.parent_path().parent_path() / "libexec" / "livemig" / "livemig-report.py"})
    if (fs::exists(p, ec)) return p;
  return Error::msg(strf("livemig-report.py not found next to %s or in ../libexec/livemig; set LM_REPORT_SCRIPT",
                         self.c_str()));
}

// Debian's python3, the one python3-matplotlib is installed for (a python3
// earlier in PATH, pyenv's say, may not have it); $LM_PYTHON overrides.
std::string python() {
  if (const char* env = std::getenv("LM_PYTHON"); env && *env) return env;
  std::error_code ec;
  return fs::exists("/usr/bin/python3", ec) ? "/usr/bin/python3" : "python3";
}

int report_command(const ReportArgs& a) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) {
    std::fprintf(stderr, "livemig report: find livemig's own path: %s\n", ec.message().c_str());
    return 1;
  }
  auto script = find_script(self);
  if (!script) {
    std::fprintf(stderr, "livemig report: %s\n", script.error().message.c_str());
    return 1;
  }
  std::vector<std::string> args = {python(), script->string(), "--livemig", self.string(), "--out", a.out};
  for (const auto& b : a.base) args.insert(args.end(), {"--base", b});
  args.insert(args.end(), a.results.begin(), a.results.end());
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  execvp(args[0].c_str(), argv.data());
  std::fprintf(stderr, "livemig report: exec %s %s: %s\n", args[0].c_str(), script->c_str(), std::strerror(errno));
  return 1;
}

}  // namespace

Run report(CLI::App& app) {
  auto a = std::make_shared<ReportArgs>();
  app.footer(
      "Writes DIR/index.html and its figures (PNG and SVG, matplotlib): per run the timeline (bytes and pages "
      "per round, the dirty rate, downtime marked), per sweep (a directory with summary.json) the measured "
      "total time and downtime against each point beside the model's prediction, post-copy fault-latency "
      "percentiles, and, with --base, the 'livemig compare' table of BASE against RESULTS.");
  app.add_option("RESULTS", a->results, "result documents, sweep directories, or directories of results")
      ->required()
      ->check(CLI::ExistingPath);
  app.add_option("--out", a->out, "the report's directory")->required();
  app.add_option("--base", a->base, "baseline results: add the compare table (RESULTS are the candidate)")
      ->check(CLI::ExistingPath);
  return [a] { return report_command(*a); };
}

}  // namespace lm::cmd
