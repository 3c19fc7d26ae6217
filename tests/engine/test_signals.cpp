// SIGINT, SIGTERM and SIGHUP to `livemig run`, delivered at each phase the
// source goes through (LM_FI_SIGNAL_AT makes the command signal itself on
// entering that phase): the run ends non-zero, writes its result document,
// ends every process it started and removes its work directory. Before the
// commit the document says "interrupted by SIG..."; after a post-copy commit
// the VM runs at the destination, so the run finishes (completed) instead of
// abandoning it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/engine/engine_test_util.hpp"

using namespace lm::engine::test;

namespace {

struct SignalCase {
  const char* signal;  // SIGINT, SIGTERM, SIGHUP
  const char* phase;   // a source phase name
};

std::string case_name(const ::testing::TestParamInfo<SignalCase>& info) {
  std::string s = std::string(info.param.signal) + "_" + info.param.phase;
  for (char& ch : s)
    if (ch == '-') ch = '_';
  return s;
}

// A 64 MiB guest over TCP; pre-copy with at most 3 rounds, or pure post-copy.
std::string scenario(bool postcopy) {
  return std::string("name = \"signal\"\n"
                     "[workload]\nram = \"64M\"\nrate = 5000\nwarmup-ms = 100\n"
                     "[migration]\ntransport = \"tcp\"\naddress = \"127.0.0.1:0\"\nmode = \"") +
         (postcopy ? "postcopy" : "precopy") +
         "\"\n"
         "[convergence]\nmax-rounds = 3\n"
         "[postcopy]\nreconnect-timeout-ms = 1000\n";
}

struct RunOutcome {
  int status = -1;  // waitpid status
  std::string document;
};

// `livemig run CONFIG --out F --quiet` with TMPDIR=tmp and the signal switch.
RunOutcome run_livemig(const std::string& tmp, const SignalCase& c) {
  const std::string config = tmp + "/scenario.toml", out = tmp + "/result.json";
  std::ofstream(config) << scenario(std::string(c.phase) == "postcopy");
  const std::string bin = env_or_fail("LM_LIVEMIG_BIN");
  const std::string fi = std::string(c.phase) + ":" + c.signal;
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    alarm(60);  // never outlive the test
    setenv("TMPDIR", tmp.c_str(), 1);
    setenv("LM_FI_SIGNAL_AT", fi.c_str(), 1);
    execl(bin.c_str(), bin.c_str(), "run", config.c_str(), "--out", out.c_str(), "--quiet", nullptr);
    _exit(127);
  }
  RunOutcome r;
  waitpid(pid, &r.status, 0);
  std::ifstream f(out);
  std::stringstream text;
  text << f.rdbuf();
  r.document = text.str();
  return r;
}

std::vector<std::string> run_dirs_left(const std::string& tmp) {
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(tmp))
    if (e.path().filename().string().rfind("livemig-run-", 0) == 0) left.push_back(e.path());
  return left;
}

class MigrateSignal : public ::testing::TestWithParam<SignalCase> {};

TEST_P(MigrateSignal, AbortsCleanly) {
  const SignalCase& c = GetParam();
  const std::string tmp = temp_dir();
  RunOutcome r = run_livemig(tmp, c);
  std::printf("document:\n%s\n", r.document.c_str());

  EXPECT_FALSE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) << "an interrupted run exits non-zero";
  EXPECT_FALSE(WIFSIGNALED(r.status)) << "killed by signal " << WTERMSIG(r.status) << " instead of stopping cleanly";
  ASSERT_FALSE(r.document.empty()) << "no result document";
  if (std::string(c.phase) == "postcopy") {
    // After the post-copy commit the VM runs at the destination: finished, not abandoned.
    EXPECT_NE(r.document.find("\"status\": \"completed\""), std::string::npos);
  } else {
    EXPECT_NE(r.document.find("\"status\": \"failed\""), std::string::npos);
    EXPECT_NE(r.document.find(std::string("\"error\": \"interrupted by ") + c.signal + "\""), std::string::npos);
  }
  // Every process of the run (the source guest, the destination's guest)
  // mentions its work directory under `tmp`.
  auto left = wait_until_gone(tmp, 2000);
  EXPECT_TRUE(left.empty()) << "a process of the run outlived it";
  for (pid_t stray : left) kill(stray, SIGKILL);
  EXPECT_TRUE(run_dirs_left(tmp).empty()) << "the run's work directory was left behind";
  std::filesystem::remove_all(tmp);
}

constexpr const char* kSignals[] = {"SIGINT", "SIGTERM", "SIGHUP"};
constexpr const char* kPhases[] = {"setup", "precopy", "stop-and-copy", "postcopy"};

std::vector<SignalCase> all_cases() {
  std::vector<SignalCase> v;
  for (auto s : kSignals)
    for (auto p : kPhases) v.push_back({s, p});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Phases, MigrateSignal, ::testing::ValuesIn(all_cases()), case_name);

}  // namespace
