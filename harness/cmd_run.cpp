// livemig run CONFIG.toml [--set key=value ...] [--out FILE.json] [--quiet]
#include <unistd.h>

#include <cstdio>

#include "common/args.hpp"
#include "harness/commands.hpp"
#include "harness/engine/runner.hpp"

namespace lm::cmd {

int run(const Argv& argv) {
  // --set may repeat: collect those first, the rest goes to the parser.
  std::vector<std::string> overrides;
  Argv rest;
  for (size_t i = 0; i < argv.size(); i++) {
    if (argv[i] == "--set" && i + 1 < argv.size()) overrides.push_back(argv[++i]);
    else if (argv[i].rfind("--set=", 0) == 0) overrides.push_back(argv[i].substr(6));
    else rest.push_back(argv[i]);
  }
  const std::vector<OptionSpec> specs = {
      {"out", true, "write the result JSON here (default results/<name>.json)"},
      {"quiet", false, "no progress line"},
      {"help", false, "this text"},
  };
  auto args = Args::parse(rest, specs);
  if (!args || args->has("help") || args->positional().size() != 1) {
    if (!args) std::fprintf(stderr, "livemig run: %s\n", args.error().message.c_str());
    std::fprintf(stderr, "usage: livemig run CONFIG.toml [--set section.key=value ...] [options]\n%s",
                 Args::usage(specs).c_str());
    return args && args->has("help") ? 0 : 2;
  }
  auto config = engine::load_scenario(args->positional()[0], overrides);
  if (!config) {
    std::fprintf(stderr, "livemig run: %s\n", config.error().message.c_str());
    return 2;
  }
  auto guest = engine::find_guest_binary();
  if (!guest) {
    std::fprintf(stderr, "livemig run: %s\n", guest.error().message.c_str());
    return 1;
  }
  engine::RunOptions options;
  options.guest_binary = *guest;
  options.progress = !args->has("quiet") && isatty(STDERR_FILENO) ? engine::ProgressLine::on : engine::ProgressLine::off;
  auto result = engine::run_scenario(*config, options);
  if (!result) {
    std::fprintf(stderr, "livemig run: %s\n", result.error().message.c_str());
    return 1;
  }
  std::string out = args->get_or("out", "results/" + config->name + ".json");
  if (auto w = engine::write_result(*result, out); !w)
    std::fprintf(stderr, "livemig run: %s\n", w.error().message.c_str());
  std::printf("%s", engine::summarize(*result).c_str());
  std::printf("result        %s\n", out.c_str());
  return result->completed ? 0 : 1;
}

}  // namespace lm::cmd
