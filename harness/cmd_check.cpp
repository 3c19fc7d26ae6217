// Placeholder until its seam lands; replaced by the real command.
#include <cstdio>

#include "harness/commands.hpp"

namespace lm::cmd {

int check(const Argv&) {
  std::fprintf(stderr, "livemig: 'check' is not built yet\n");
  return 1;
}

}  // namespace lm::cmd
