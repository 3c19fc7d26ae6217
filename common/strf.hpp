// printf-style formatting into std::string (g++ 12 has no std::format).
#pragma once

#include <cstdarg>
#include <cstdio>
#include <string>

namespace lm {

__attribute__((format(printf, 1, 2))) inline std::string strf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string out;
  if (n > 0) {
    out.resize(static_cast<size_t>(n));
    std::vsnprintf(out.data(), out.size() + 1, fmt, ap2);
  }
  va_end(ap2);
  return out;
}

}  // namespace lm
