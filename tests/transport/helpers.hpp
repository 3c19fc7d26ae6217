// Shared by the transport tests: connected channel pairs on every backend.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "livemig_config.h"
#include "transport/channel.hpp"

namespace lm::transport::testing {

// Every backend this build has: "inproc" plus the registry's socket backends,
// and their variants as "<backend>_<variant>" (zero-copy sends, multishot
// receive, kernel submission thread).
inline std::vector<std::string> test_backends() {
  std::vector<std::string> out{"inproc", "tcp", "tcp_zerocopy"};
#if LM_HAVE_URING
  out.push_back("uring");
  out.push_back("uring_zerocopy");
  out.push_back("uring_multishot");
  out.push_back("uring_sqpoll");
#endif
  return out;
}

inline bool is_socket_backend(const std::string& b) { return b != "inproc"; }

// "uring_zerocopy" -> backend "uring" with the variant's options applied.
inline std::string apply_variant(const std::string& name, ChannelOptions& options) {
  size_t cut = name.find('_');
  if (cut == std::string::npos) return name;
  std::string variant = name.substr(cut + 1);
  if (variant == "zerocopy") options.zero_copy = ZeroCopy::on;
  if (variant == "multishot") options.extra = "recv=multishot";
  if (variant == "sqpoll") options.extra = "sqpoll=1";
  return name.substr(0, cut);
}

// a: the connecting side, b: the accepting side.
inline Result<ChannelPair> connected_pair(const std::string& variant, ChannelOptions options) {
  std::string backend = apply_variant(variant, options);
  if (backend == "inproc") return make_inproc_pair(options, "inproc");
  auto listener = LM_TRY(listen(backend + ":127.0.0.1:0", options));
  std::string address = listener->address();
  auto dialed = std::async(std::launch::async, [&] { return connect(address, options, Timeout(5000)); });
  auto accepted = listener->accept(Timeout(5000));
  auto a = dialed.get();
  if (!a) return std::move(a).error();
  if (!accepted) return std::move(accepted).error();
  return ChannelPair{std::move(*a), std::move(*accepted)};
}

// Deterministic content: byte i of stream `seed`.
inline void fill_pattern(std::byte* p, size_t n, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    if (i % 8 == 0) {
      x ^= x >> 31;
      x *= 0xBF58476D1CE4E5B9ull;
      x ^= x >> 27;
    }
    p[i] = std::byte(x >> ((i % 8) * 8));
  }
}

// Runs `wait(token)`, which blocks, and stops the token from another thread
// after `after`: the wait's result, and how long after the stop it returned.
template <class Wait>
auto wait_stopped_later(Wait wait, std::chrono::milliseconds after = std::chrono::milliseconds(100)) {
  std::stop_source source;
  uint64_t stopped_at_ns = 0;
  std::thread stopper([&] {
    std::this_thread::sleep_for(after);
    stopped_at_ns = now_ns();
    source.request_stop();
  });
  using WaitResult = decltype(wait(std::stop_token()));
  WaitResult waited = wait(source.get_token());
  uint64_t returned_ns = now_ns();
  stopper.join();
  struct Stopped {
    WaitResult result;
    double ms_after_stop;
  };
  return Stopped{std::move(waited), double(returned_ns - stopped_at_ns) * 1e-6};
}

inline std::string backend_param_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

}  // namespace lm::transport::testing
