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

// Stops a wait from another thread: requests `source` after `after`, and
// says how long ago that was (for "the wait ended within N ms of the stop").
class StopLater {
 public:
  StopLater(std::stop_source& source, std::chrono::milliseconds after)
      : thread_([&source, after, this] {
          std::this_thread::sleep_for(after);
          stopped_at_ns_ = now_ns();
          source.request_stop();
        }) {}
  ~StopLater() { join(); }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  // After join(): milliseconds from the stop request to `now`.
  double ms_after_stop(uint64_t now) const { return double(now - stopped_at_ns_) * 1e-6; }

 private:
  uint64_t stopped_at_ns_ = 0;
  std::thread thread_;
};

inline std::string backend_param_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

}  // namespace lm::transport::testing
