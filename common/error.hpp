// The project's one error convention: functions that can fail return
// lm::Result<T>; an lm::Error says what failed, on what (PID, address, peer)
// and, for system errors, the errno and its text. No exceptions cross module
// boundaries.
#pragma once

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "common/strf.hpp"

namespace lm {

struct Error {
  int code = 0;         // errno value; 0 when the error is not a system error
  std::string message;  // complete, human-readable sentence fragment

  // "what: strerror(err)", keeping err.
  static Error sys(int err, std::string_view what) {
    return Error{err, std::string(what) + ": " + std::strerror(err)};
  }
  // "what: strerror(errno)"; reads errno at the call.
  static Error from_errno(std::string_view what) { return sys(errno, what); }
  static Error msg(std::string what) { return Error{0, std::move(what)}; }

  // Prefixes the message with the outer operation: "outer: inner".
  Error&& context(std::string_view outer) && {
    message = std::string(outer) + ": " + message;
    return std::move(*this);
  }
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

  Result&& context(std::string_view outer) && {
    if (!ok()) std::get<1>(v_).message = std::string(outer) + ": " + std::get<1>(v_).message;
    return std::move(*this);
  }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : e_(std::move(error)) {}

  bool ok() const { return !e_.has_value(); }
  explicit operator bool() const { return ok(); }
  void value() const {}

  const Error& error() const& { return *e_; }
  Error&& error() && { return std::move(*e_); }

  Result&& context(std::string_view outer) && {
    if (e_) e_->message = std::string(outer) + ": " + e_->message;
    return std::move(*this);
  }

 private:
  std::optional<Error> e_;
};

inline Result<void> ok() { return {}; }

}  // namespace lm

// Evaluates a Result-returning expression; on error returns the error from the
// enclosing function (whose return type is any lm::Result<U>), otherwise yields
// the value. Uses a GNU statement expression (g++ and clang).
#define LM_TRY(expr)                                        \
  ({                                                        \
    auto lm_try_result_ = (expr);                           \
    if (!lm_try_result_.ok()) return std::move(lm_try_result_).error(); \
    std::move(lm_try_result_).value();                      \
  })

// As LM_TRY, prefixing the error with a context string on failure.
#define LM_TRY_CTX(expr, ctx)                               \
  ({                                                        \
    auto lm_try_result_ = (expr);                           \
    if (!lm_try_result_.ok()) return std::move(lm_try_result_).error().context(ctx); \
    std::move(lm_try_result_).value();                      \
  })
