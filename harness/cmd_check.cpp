// livemig check: probe the host once and print what works and why not.
#include <cstdio>
#include <memory>

#include "harness/commands.hpp"
#include "harness/host_caps.hpp"

namespace lm::cmd {

Run check(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  app.add_flag("--json", *json, "print JSON instead of a table");
  return [json] {
    HostCaps caps = probe_host();
    if (*json) {
      JsonWriter w;
      write_json(w, caps);
      std::fputs(w.str().c_str(), stdout);
    } else {
      std::fputs(format_table(caps).c_str(), stdout);
    }
    return 0;
  };
}

}  // namespace lm::cmd
