#include "common/parse.hpp"

#include <cctype>
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

}  // namespace lm
