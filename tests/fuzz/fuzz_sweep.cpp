// Sweep files: TOML text with a base scenario and [sweep] arrays, read by
// load_sweep from a memfd (its /proc/self/fd path), expanded into points.
// Every point carries one override per swept key, and every pass's run
// order is a permutation of the points.
#include <sys/mman.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "fuzz_target.hpp"
#include "harness/sweep.hpp"

using namespace lm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int fd = memfd_create("fuzz-sweep", MFD_CLOEXEC);
  FUZZ_CHECK(fd >= 0);
  FUZZ_CHECK(write(fd, data, size) == ssize_t(size));
  auto sweep = engine::load_sweep("/proc/self/fd/" + std::to_string(fd));
  close(fd);
  if (!sweep) return 0;
  FUZZ_CHECK(!sweep->points.empty());
  const size_t keys = sweep->points.front().overrides.size();
  for (const auto& p : sweep->points) FUZZ_CHECK(p.overrides.size() == keys && !p.label.empty());
  // Every pass runs every point once.
  for (unsigned pass : {1u, 2u}) {
    auto order = engine::sweep_run_order(*sweep, pass);
    std::vector<bool> seen(sweep->points.size(), false);
    FUZZ_CHECK(order.size() == seen.size());
    for (size_t i : order) {
      FUZZ_CHECK(i < seen.size() && !seen[i]);
      seen[i] = true;
    }
  }
  return 0;
}

#ifndef LM_LIBFUZZER
std::vector<FuzzInput> fuzz_seeds() {
  const std::string sweeps[] = {
      "base = \"../default.toml\"\nname = \"dirty-rate\"\n[sweep]\n\"workload.rate\" = [5000, 20000, 40000]\n"
      "\"migration.transport\" = [\"tcp\", \"uring\"]\n",
      "base = \"x.toml\"\n[sweep]\n\"convergence.max-bytes-factor\" = [1.5, 4.0]\n\"migration.compress\" = [true, false]\n",
      "base = \"x.toml\"\ninterleave = \"b\"\n[sweep]\n\"a\" = [1, 2]\n\"b\" = [\"p\", \"q\", \"r\"]\n\"c\" = [7, 8]\n",
  };
  std::vector<FuzzInput> seeds;
  for (const auto& s : sweeps) seeds.emplace_back(s.begin(), s.end());
  return seeds;
}
#endif
