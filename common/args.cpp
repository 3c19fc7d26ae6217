#include "common/args.hpp"

#include <cerrno>
#include <cstdlib>

namespace lm {

Result<uint64_t> parse_u64(std::string_view text) {
  std::string s(text);
  if (s.empty() || s[0] == '-') return Error::msg(strf("'%s' is not an unsigned integer", s.c_str()));
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 0);
  if (errno != 0 || end == s.c_str() || *end != '\0')
    return Error::msg(strf("'%s' is not an unsigned integer", s.c_str()));
  return uint64_t(v);
}

Result<double> parse_double(std::string_view text) {
  std::string s(text);
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end == s.c_str() || *end != '\0')
    return Error::msg(strf("'%s' is not a number", s.c_str()));
  return v;
}

Result<uint64_t> parse_size(std::string_view text) {
  std::string s(text);
  size_t digits = 0;
  while (digits < s.size() && (isdigit(static_cast<unsigned char>(s[digits])) || s[digits] == '.')) digits++;
  if (digits == 0) return Error::msg(strf("'%s' is not a size (e.g. 4096, 64K, 256M, 1G)", s.c_str()));
  std::string unit = s.substr(digits);
  if (unit.size() > 1 && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (unit.size() == 2 && (unit[1] == 'i' || unit[1] == 'I')) unit.pop_back();
  uint64_t mult = 1;
  if (unit.empty()) mult = 1;
  else if (unit == "K" || unit == "k") mult = 1ull << 10;
  else if (unit == "M" || unit == "m") mult = 1ull << 20;
  else if (unit == "G" || unit == "g") mult = 1ull << 30;
  else if (unit == "T" || unit == "t") mult = 1ull << 40;
  else return Error::msg(strf("'%s' has an unknown size unit", s.c_str()));
  auto number = parse_double(s.substr(0, digits));
  if (!number) return Error::msg(strf("'%s' is not a size", s.c_str()));
  return uint64_t(*number * double(mult));
}

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
