// Scenario parsing: TOML text (up to the first NUL) with toml++ into a
// ScenarioConfig, then the NUL-separated rest as `--set key=value`
// overrides, as `livemig run` reads a scenario file and its flags. A parsed
// scenario must show every setting it applied and parse again from that.
#include <string>

#include "fuzz_target.hpp"
#include "harness/scenario.hpp"

using namespace lm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string input(reinterpret_cast<const char*>(data), size);
  size_t nul = input.find('\0');
  std::string text = input.substr(0, nul);
  std::vector<std::string> overrides;
  while (nul != std::string::npos && overrides.size() < 16) {
    size_t next = input.find('\0', nul + 1);
    overrides.push_back(input.substr(nul + 1, next == std::string::npos ? next : next - nul - 1));
    nul = next;
  }
  auto c = engine::parse_scenario(text, "fuzz.toml", overrides);
  if (!c) return 0;
  // Every override's key reads back, and setting it again as shown is accepted.
  for (const auto& o : overrides) {
    const std::string key = o.substr(0, o.find('='));
    const std::string shown = engine::setting_text(*c, key);  // empty for an empty string
    engine::ScenarioConfig again = *c;
    auto r = engine::apply_setting(again, key, shown);
    if (!r) std::fprintf(stderr, "key %s shown as '%s': %s\n", key.c_str(), shown.c_str(), r.error().message.c_str());
    FUZZ_CHECK(r.ok());
  }
  return 0;
}

#ifndef LM_LIBFUZZER
std::vector<FuzzInput> fuzz_seeds() {
  const std::string scenarios[] = {
      "name = \"default\"\n[workload]\nkind = \"guest\"\nram = \"1G\"\nrate = 20000\n"
      "pattern = \"hotspot:0.1\"\ncontent = \"mixed\"\nwrite = \"page\"\nthreads = 1\nwarmup-ms = 1000\n"
      "[migration]\nmode = \"precopy\"\ntransport = \"uring\"\naddress = \"127.0.0.1:0\"\nchannels = 2\n"
      "policy = \"adaptive\"\nworkers = 2\ntracker = \"auto\"\n"
      "[convergence]\nmax-rounds = 30\nmax-bytes-factor = 4.0\ndowntime-target-ms = 300\n",
      std::string("[migration]\nmode = \"postcopy\"\n\0workload.ram=64M\0migration.channels=4", 68),
      std::string("name = \"x\"\n\0convergence.max-rounds=5\0workload.kind=redis", 56),
  };
  std::vector<FuzzInput> seeds;
  for (const auto& s : scenarios) seeds.emplace_back(s.begin(), s.end());
  return seeds;
}
#endif
