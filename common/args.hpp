// A small command-line parser for the helper programs (livemig-guest and the
// DPDK test peers); livemig itself uses CLI11 (harness/cli.hpp).
// "--name value", "--name=value", "--flag", and positional arguments.
// Unknown options are an error naming the option.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "common/parse.hpp"

namespace lm {

struct OptionSpec {
  std::string_view name;  // without the leading "--"
  bool takes_value;
  std::string_view help;
};

class Args {
 public:
  // argv[0] is not part of args.
  static Result<Args> parse(const std::vector<std::string>& args, std::vector<OptionSpec> specs);

  bool has(std::string_view name) const;
  std::optional<std::string> get(std::string_view name) const;
  std::string get_or(std::string_view name, std::string_view fallback) const;
  // Typed getters: absent → fallback; present but malformed → error naming the option.
  Result<uint64_t> get_u64(std::string_view name, uint64_t fallback) const;
  Result<uint64_t> get_size(std::string_view name, uint64_t fallback) const;
  Result<double> get_double(std::string_view name, double fallback) const;
  const std::vector<std::string>& positional() const { return positional_; }

  // "  --name VALUE  help" lines for a usage message.
  static std::string usage(const std::vector<OptionSpec>& specs);

 private:
  std::map<std::string, std::string, std::less<>> values_;
  std::vector<std::string> positional_;
};

}  // namespace lm
