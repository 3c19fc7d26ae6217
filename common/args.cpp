#include "common/args.hpp"

namespace lm {

Result<Args> Args::parse(const std::vector<std::string>& args, std::vector<OptionSpec> specs) {
  Args out;
  for (size_t i = 0; i < args.size(); i++) {
    const std::string& a = args[i];
    if (a.size() < 3 || a[0] != '-' || a[1] != '-') {
      out.positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2);
    std::optional<std::string> inline_value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name.resize(eq);
    }
    const OptionSpec* spec = nullptr;
    for (const auto& s : specs)
      if (s.name == name) spec = &s;
    if (!spec) return Error::msg(strf("unknown option --%s", name.c_str()));
    if (!spec->takes_value) {
      if (inline_value) return Error::msg(strf("option --%s takes no value", name.c_str()));
      out.values_[name] = "";
    } else if (inline_value) {
      out.values_[name] = *inline_value;
    } else {
      if (i + 1 >= args.size()) return Error::msg(strf("option --%s needs a value", name.c_str()));
      out.values_[name] = args[++i];
    }
  }
  return out;
}

bool Args::has(std::string_view name) const { return values_.find(name) != values_.end(); }

std::optional<std::string> Args::get(std::string_view name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::get_or(std::string_view name, std::string_view fallback) const {
  auto v = get(name);
  return v ? *v : std::string(fallback);
}

template <class T, class F>
static Result<T> typed(const Args& a, std::string_view name, T fallback, F parse) {
  auto v = a.get(name);
  if (!v) return fallback;
  auto r = parse(*v);
  if (!r) return std::move(r).error().context(strf("--%.*s", int(name.size()), name.data()));
  return *r;
}

Result<uint64_t> Args::get_u64(std::string_view name, uint64_t fallback) const {
  return typed<uint64_t>(*this, name, fallback, parse_u64);
}
Result<uint64_t> Args::get_size(std::string_view name, uint64_t fallback) const {
  return typed<uint64_t>(*this, name, fallback, parse_size);
}
Result<double> Args::get_double(std::string_view name, double fallback) const {
  return typed<double>(*this, name, fallback, parse_double);
}

std::string Args::usage(const std::vector<OptionSpec>& specs) {
  std::string out;
  for (const auto& s : specs) {
    std::string left = "  --" + std::string(s.name) + (s.takes_value ? " VALUE" : "");
    if (left.size() < 28) left.resize(28, ' ');
    else left += "  ";
    out += left + std::string(s.help) + "\n";
  }
  return out;
}

}  // namespace lm
