// The livemig command line (harness/cli.hpp, CLI11): every command has a
// --help that exits 0; an unknown option or a malformed value is one line on
// stderr that names the option, and exit status 2, before the command does
// anything.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <string>
#include <vector>

#include "tests/engine/engine_test_util.hpp"

using namespace lm::engine::test;

namespace {

int exit_status(const LivemigOutcome& o) { return WIFEXITED(o.status) ? WEXITSTATUS(o.status) : -1; }

const std::vector<std::vector<std::string>> kCommands = {
    {"check"}, {"track"}, {"snapshot"}, {"run"}, {"dest"}, {"source"}, {"image", "verify"}, {"image", "show"},
    {"bench", "compress"}, {"bench", "transport"}};

std::string joined(const std::vector<std::string>& words) {
  std::string s;
  for (const auto& w : words) s += (s.empty() ? "" : " ") + w;
  return s;
}

TEST(Cli, EveryCommandHasHelp) {
  for (auto args : kCommands) {
    const std::string name = "livemig " + joined(args);
    args.push_back("--help");
    LivemigOutcome o = run_livemig(args);
    EXPECT_EQ(exit_status(o), 0) << name << ": " << o.err;
    EXPECT_NE(o.out.find("Usage: " + name), std::string::npos) << o.out;
  }
}

// The error names the option and the command; one line, exit 2.
void expect_usage_error(const std::vector<std::string>& args, const std::string& named) {
  LivemigOutcome o = run_livemig(args);
  EXPECT_EQ(exit_status(o), 2) << joined(args) << ": " << o.err;
  EXPECT_NE(o.err.find(named), std::string::npos) << joined(args) << ": " << o.err;
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << joined(args) << ": not one line: " << o.err;
  EXPECT_EQ(o.err.rfind("livemig", 0), 0u) << o.err;
}

TEST(Cli, UnknownOptionIsNamed) {
  for (auto args : kCommands) {
    args.push_back("--no-such-option");
    expect_usage_error(args, "--no-such-option");
  }
}

TEST(Cli, MalformedValuesAreNamed) {
  expect_usage_error({"source", "--pid", "abc", "--to", "tcp:127.0.0.1:9"}, "--pid");
  expect_usage_error({"source", "--pid", "0", "--to", "tcp:127.0.0.1:9"}, "--pid");
  expect_usage_error({"source", "--pid", "5", "--to", "tcp:127.0.0.1:9", "--channels", "many"}, "--channels");
  expect_usage_error({"source", "--pid", "5", "--to", "tcp:127.0.0.1:9", "--mode", "sideways"}, "--mode");
  expect_usage_error({"source", "--pid", "5", "--to", "nosuch:127.0.0.1:9"}, "'nosuch'");
  expect_usage_error({"source", "--pid", "5", "--to", "tcp:127.0.0.1:9", "--tracker", "dirty-bits"}, "--tracker");
  expect_usage_error({"source", "--pid", "5", "--to", "tcp:127.0.0.1:9", "--ram", "0x1000"}, "--ram");
  expect_usage_error({"source", "--pid", "5", "--to", "tcp:127.0.0.1:9", "--after", "never"}, "--after");
  expect_usage_error({"source", "--pid", "5", "--to", "tcp:127.0.0.1:9", "--reconnect-timeout-ms", "-1"},
                     "--reconnect-timeout-ms");
  expect_usage_error({"dest", "--listen", "carrier-pigeon:127.0.0.1:0"}, "--listen");
  expect_usage_error({"dest", "--timeout-ms", "soon"}, "--timeout-ms");
  expect_usage_error({"dest", "--image-dir", "/tmp/x"}, "--image");
  expect_usage_error({"track", "--pid", "1", "--range", "zz"}, "--range");
  expect_usage_error({"track", "--pid", "1", "--rounds", "-2"}, "--rounds");
  expect_usage_error({"snapshot", "--pid", "1", "--out", "/dev/null", "--max-pages", "0"}, "--max-pages");
  expect_usage_error({"bench", "transport", "--msg-size", "12X"}, "--msg-size");
  expect_usage_error({"bench", "transport", "--channels", "65"}, "--channels");
  expect_usage_error({"bench", "compress", "--policies", "cbc,bogus"}, "--policies");
  expect_usage_error({"bench", "compress", "--links", "0"}, "--links");
  expect_usage_error({"image", "verify", "/tmp", "--pid", "x"}, "--pid");
}

TEST(Cli, MissingArgumentsAreNamed) {
  expect_usage_error({"source", "--to", "tcp:127.0.0.1:9"}, "--pid");
  expect_usage_error({"source", "--pid", "5"}, "--to");
  expect_usage_error({"track"}, "--pid");
  expect_usage_error({"snapshot", "--pid", "1"}, "--out");
  expect_usage_error({"run"}, "CONFIG");
  expect_usage_error({"image", "show"}, "DIR");
  expect_usage_error({"bench"}, "subcommand");
  expect_usage_error({"nosuch"}, "nosuch");
}

TEST(Cli, NoCommandPrintsTheCommands) {
  LivemigOutcome o = run_livemig({});
  EXPECT_EQ(exit_status(o), 2);
  EXPECT_NE(o.err.find("source"), std::string::npos) << o.err;
  EXPECT_NE(o.err.find("bench"), std::string::npos) << o.err;
}

// `--set` repeats and may stand before the scenario; a bad key stops the run
// before anything starts (2).
TEST(Cli, RunTakesRepeatedSetBeforeOrAfterTheScenario) {
  const std::string config = std::string(LM_SOURCE_ROOT) + "/configs/default.toml";
  LivemigOutcome before = run_livemig({"run", "--set", "workload.ram=\"64M\"", "--set", "bogus.key=1", config});
  EXPECT_EQ(exit_status(before), 2) << before.err;
  EXPECT_NE(before.err.find("unknown key 'bogus.key'"), std::string::npos) << before.err;
  LivemigOutcome after = run_livemig({"run", config, "--set=postcopy.prepaging=nosuch"});
  EXPECT_EQ(exit_status(after), 2) << after.err;
  EXPECT_NE(after.err.find("key 'postcopy.prepaging' = 'nosuch'"), std::string::npos) << after.err;
}

}  // namespace
