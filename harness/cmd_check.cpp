// livemig check: probe the host once and print what works and why not.
#include <cstdio>

#include "common/args.hpp"
#include "harness/commands.hpp"
#include "harness/host_caps.hpp"

namespace lm::cmd {

int check(const Argv& argv) {
  const std::vector<OptionSpec> specs = {{"json", false, "print JSON instead of a table"},
                                         {"help", false, "show this help"}};
  auto args = Args::parse(argv, specs);
  if (!args || args->has("help") || !args->positional().empty()) {
    if (!args) std::fprintf(stderr, "livemig check: %s\n", args.error().message.c_str());
    std::fprintf(stderr, "usage: livemig check [--json]\n%s", Args::usage(specs).c_str());
    return args && args->has("help") ? 0 : 2;
  }
  HostCaps caps = probe_host();
  if (args->has("json")) {
    JsonWriter w;
    write_json(w, caps);
    std::fputs(w.str().c_str(), stdout);
  } else {
    std::fputs(format_table(caps).c_str(), stdout);
  }
  return 0;
}

}  // namespace lm::cmd
