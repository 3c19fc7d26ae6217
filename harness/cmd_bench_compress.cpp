// Placeholder until its seam lands; replaced by the real command.
#include <cstdio>

#include "harness/commands.hpp"

namespace lm::cmd {

int bench_compress(const Argv&) {
  std::fprintf(stderr, "livemig: 'bench_compress' is not built yet\n");
  return 1;
}

}  // namespace lm::cmd
