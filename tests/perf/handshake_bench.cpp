// Session setup with and without the pre-shared key, on loopback: the
// source dials control, priority and 2 bulk channels and runs each one's
// handshake (Session::connect returns once every channel was accepted).
// Alternates A (no key) and B (key) each iteration, per backend; prints and
// writes medians, p10/p90 and the load average as JSON.
//   handshake_bench [--iterations N] [--backends tcp,uring] [--json PATH]
#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "livemig_config.h"
#include "transport/session.hpp"

namespace {

using namespace lm;
using namespace lm::transport;

struct Spread {
  double median, p10, p90, min;
};

Spread spread(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  auto at = [&](double q) { return xs[size_t(q * double(xs.size() - 1) + 0.5)]; };
  return {at(0.5), at(0.1), at(0.9), xs.front()};
}

// One session set up and closed; returns the source's setup time in µs.
Result<double> one_session(Listener& listener, const SessionConfig& config, const MappingTable& table) {
  Result<Session> dest = Error::msg("not run");
  std::thread server([&] { dest = accept_session(listener, config, Timeout(5000)); });
  Stopwatch sw;
  auto source = Session::connect(listener.address(), config, table);
  const double us = sw.elapsed_ms() * 1e3;
  server.join();
  if (!source) return std::move(source).error();
  if (!dest) return std::move(dest).error();
  std::thread closer([&] { (void)dest->close(Timeout(2000)); });
  (void)source->close(Timeout(2000));
  closer.join();
  return us;
}

}  // namespace

int main(int argc, char** argv) {
  int iterations = 200;
  std::string json_path;
  std::vector<std::string> backends{"tcp"};
#if LM_HAVE_URING
  backends.push_back("uring");
#endif
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--iterations")) iterations = std::max(3, std::atoi(argv[i + 1]));
    else if (!std::strcmp(argv[i], "--json")) json_path = argv[i + 1];
    else if (!std::strcmp(argv[i], "--backends")) {
      backends.clear();
      std::string list = argv[i + 1];
      for (size_t at = 0; at <= list.size();) {
        size_t comma = std::min(list.find(',', at), list.size());
        backends.push_back(list.substr(at, comma - at));
        at = comma + 1;
      }
    }
  }
  auto table = MappingTable::make({{0x7f0000000000, 0x7f0000000000 + (1ull << 30), 3, 0}});
  if (!table) return 1;
  double load_start[3] = {};
  getloadavg(load_start, 3);
  std::string json = "{\n  \"benchmark\": \"handshake\",\n  \"channels\": \"control, priority, 2 bulk\",\n";
  json += strf("  \"iterations\": %d,\n  \"load-average-start\": %.2f,\n  \"backends\": {\n", iterations,
               load_start[0]);
  for (size_t b = 0; b < backends.size(); ++b) {
    auto listener = listen(backends[b] + ":127.0.0.1:0", ChannelOptions{});
    if (!listener) {
      std::fprintf(stderr, "handshake_bench: %s\n", listener.error().message.c_str());
      return 1;
    }
    SessionConfig plain;
    plain.bulk_channels = 2;
    SessionConfig keyed = plain;
    keyed.psk = "0123456789abcdef0123456789abcdef";  // a 32-byte key, as `generate` writes (hex: 64)
    std::vector<double> a, b_us;
    for (int i = 0; i < iterations + 5; ++i) {  // the first 5 of each warm up
      auto ra = one_session(**listener, plain, *table);
      auto rb = one_session(**listener, keyed, *table);
      if (!ra || !rb) {
        std::fprintf(stderr, "handshake_bench: %s\n", (!ra ? ra.error() : rb.error()).message.c_str());
        return 1;
      }
      if (i >= 5) {
        a.push_back(*ra);
        b_us.push_back(*rb);
      }
    }
    Spread sa = spread(a), sb = spread(b_us);
    std::printf("%-6s no key: median %7.1f us (p10 %7.1f, p90 %7.1f)   key: median %7.1f us (p10 %7.1f, p90 %7.1f)"
                "   added %+.1f us\n",
                backends[b].c_str(), sa.median, sa.p10, sa.p90, sb.median, sb.p10, sb.p90, sb.median - sa.median);
    auto obj = [](const Spread& s) {
      return strf("{\"median-us\": %.1f, \"p10-us\": %.1f, \"p90-us\": %.1f, \"min-us\": %.1f}", s.median, s.p10,
                  s.p90, s.min);
    };
    json += strf("    \"%s\": {\"no-key\": %s, \"key\": %s, \"added-median-us\": %.1f}%s\n", backends[b].c_str(),
                 obj(sa).c_str(), obj(sb).c_str(), sb.median - sa.median, b + 1 < backends.size() ? "," : "");
  }
  double load_end[3] = {};
  getloadavg(load_end, 3);
  json += strf("  },\n  \"load-average-end\": %.2f\n}\n", load_end[0]);
  std::printf("load average: start %.2f, end %.2f\n", load_start[0], load_end[0]);
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (!f) return 1;
    std::fputs(json.c_str(), f);
    std::fclose(f);
  }
  return 0;
}
