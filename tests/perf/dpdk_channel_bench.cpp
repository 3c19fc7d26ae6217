// One side of a transport benchmark through the registry's Channel interface,
// so every backend (tcp, uring, dpdk) runs the same code: the receiver listens
// and counts bytes, the sender connects and streams messages with a few sends
// in flight per channel. Run as two processes by dpdk_bench.py.
//   dpdk_channel_bench --listen dpdk:memif:/tmp/x.sock --channels 1 --extra flows=4
//   dpdk_channel_bench --connect dpdk:memif:/tmp/x.sock --bytes 1G --msg-size 256K
#include <cstdio>
#include <deque>
#include <thread>

#include "common/args.hpp"
#include "common/clock.hpp"
#include "common/json.hpp"
#include "transport/channel.hpp"

using namespace lm;
using namespace lm::transport;

int main(int argc, char** argv) {
  std::vector<OptionSpec> specs = {
      {"listen", true, "receiver: address to listen on"},
      {"connect", true, "sender: address to connect to"},
      {"channels", true, "parallel channels, default 1"},
      {"bytes", true, "bytes per channel (sender), default 1G"},
      {"msg-size", true, "message size, default 256K"},
      {"extra", true, "ChannelOptions::extra (backend knobs)"},
      {"depth", true, "sends in flight per channel (sender), default 16"},
      {"label", true, "label in the JSON output"},
  };
  std::vector<std::string> raw(argv + 1, argv + argc);
  auto args = Args::parse(raw, specs);
  if (!args) {
    std::fprintf(stderr, "dpdk_channel_bench: %s\n%s", args.error().message.c_str(), Args::usage(specs).c_str());
    return 2;
  }
  auto channels = args->get_u64("channels", 1);
  auto bytes = args->get_size("bytes", 1ull << 30);
  auto msg_size = args->get_size("msg-size", 256u << 10);
  auto depth = args->get_u64("depth", 16);
  if (!channels || !bytes || !msg_size || !depth || *depth == 0) {
    std::fprintf(stderr, "dpdk_channel_bench: bad number\n");
    return 2;
  }
  ChannelOptions opt;
  opt.extra = args->get_or("extra", "");
  const bool sender = args->has("connect");
  std::string address = sender ? *args->get("connect") : args->get_or("listen", "");
  const Timeout t(60000);

  std::vector<std::unique_ptr<Channel>> chans;
  std::unique_ptr<Listener> listener;
  if (sender) {
    for (uint64_t c = 0; c < *channels; ++c) {
      auto ch = connect(address, opt, t);
      if (!ch) {
        std::fprintf(stderr, "dpdk_channel_bench: %s\n", ch.error().message.c_str());
        return 1;
      }
      chans.push_back(std::move(*ch));
    }
  } else {
    auto l = listen(address, opt);
    if (!l) {
      std::fprintf(stderr, "dpdk_channel_bench: %s\n", l.error().message.c_str());
      return 1;
    }
    listener = std::move(*l);
    std::printf("listening %s\n", listener->address().c_str());
    std::fflush(stdout);
    for (uint64_t c = 0; c < *channels; ++c) {
      auto ch = listener->accept(t);
      if (!ch) {
        std::fprintf(stderr, "dpdk_channel_bench: %s\n", ch.error().message.c_str());
        return 1;
      }
      chans.push_back(std::move(*ch));
    }
  }

  std::vector<uint64_t> moved(chans.size(), 0);
  std::vector<double> secs(chans.size(), 0);
  std::vector<std::string> errors(chans.size());
  std::vector<std::thread> threads;
  for (size_t c = 0; c < chans.size(); ++c) {
    threads.emplace_back([&, c] {
      Channel& ch = *chans[c];
      Stopwatch sw;
      if (sender) {
        // A retransmitting backend completes a send when it is acknowledged:
        // keep several in flight (the engine keeps up to its send window).
        const size_t kDepth = *depth;
        std::vector<std::vector<uint8_t>> bufs(kDepth, std::vector<uint8_t>(*msg_size, uint8_t(c + 1)));
        std::deque<uint64_t> inflight;
        uint64_t count = (*bytes + *msg_size - 1) / *msg_size;
        for (uint64_t m = 0; m < count; ++m) {
          if (inflight.size() == kDepth) {
            auto r = ch.wait_sent(inflight.front(), t);
            if (!r) {
              errors[c] = r.error().message;
              return;
            }
            inflight.pop_front();
          }
          ConstBuffer piece{bufs[m % kDepth].data(), *msg_size};
          auto seq = ch.send(std::span(&piece, 1), t);
          if (!seq) {
            errors[c] = seq.error().message;
            return;
          }
          inflight.push_back(*seq);
          moved[c] += *msg_size;
        }
        if (!inflight.empty()) {
          auto r = ch.wait_sent(inflight.back(), t);
          if (!r) errors[c] = r.error().message;
        }
      } else {
        bool first = true;
        for (;;) {
          auto r = ch.recv(t);
          if (!r) {
            errors[c] = r.error().message;
            return;
          }
          if (r->status == RecvStatus::closed) break;
          if (first) {
            sw.reset();
            first = false;
          }
          moved[c] += r->bytes.size();
        }
      }
      secs[c] = sw.elapsed_s();
      auto r = ch.close(t);
      if (!r) errors[c] = r.error().message;
    });
  }
  for (auto& th : threads) th.join();
  std::string error;
  uint64_t total = 0;
  double max_s = 0;
  for (size_t c = 0; c < chans.size(); ++c) {
    if (!errors[c].empty()) error = errors[c];
    total += moved[c];
    max_s = std::max(max_s, secs[c]);
  }
  const uint64_t nchannels = chans.size();
  chans.clear();
  listener.reset();
  JsonWriter j(false);
  j.begin_object();
  j.field("label", args->get_or("label", ""));
  j.field("address", address);
  j.field("side", sender ? "send" : "recv");
  j.field("ok", error.empty());
  if (!error.empty()) j.field("error", error);
  j.field("channels", nchannels);
  j.field("msg_size", uint64_t(*msg_size));
  j.field("bytes", total);
  j.field("seconds", max_s);
  j.field("gbit_per_s", max_s > 0 ? double(total) * 8 / max_s / 1e9 : 0.0);
  j.end_object();
  std::printf("%s\n", j.str().c_str());
  if (!error.empty()) std::fprintf(stderr, "dpdk_channel_bench: %s\n", error.c_str());
  return error.empty() ? 0 : 1;
}
