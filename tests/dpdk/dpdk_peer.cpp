// One side of a DPDK transport session, as a process of its own: the tests
// and benchmarks start two of these (memif server + client, or af_packet in
// two network namespaces). The sender streams messages on every channel; the
// receiver checks sizes and (with --verify) every byte, then both close with
// the protocol's handshake. Prints one JSON object with figures and counters.
#include <cstdio>
#include <cstring>
#include <thread>

#include "common/args.hpp"
#include "common/clock.hpp"
#include "common/json.hpp"
#include "transport/dpdk/dpdk_session.hpp"

using namespace lm;
using namespace lm::dpdk;

namespace {

// Message content: 8-byte words derived from (channel, message, word).
void fill_pattern(std::vector<uint8_t>& buf, uint16_t ch, uint64_t msg) {
  uint64_t* w = reinterpret_cast<uint64_t*>(buf.data());
  size_t words = buf.size() / 8;
  uint64_t base = (uint64_t(ch) << 56) ^ (msg << 28) ^ 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < words; ++i) w[i] = base + i * 0x100000001b3ull;
  for (size_t i = words * 8; i < buf.size(); ++i) buf[i] = uint8_t(msg + i);
}

bool check_pattern(const MessageBuffer& got, size_t want_size, uint16_t ch, uint64_t msg,
                   std::vector<uint8_t>& scratch) {
  if (got.size() != want_size) return false;
  scratch.resize(want_size);
  fill_pattern(scratch, ch, msg);
  return std::memcmp(got.data(), scratch.data(), want_size) == 0;
}

struct Figures {
  uint64_t bytes = 0, messages = 0;
  double seconds = 0;
  std::string error;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<OptionSpec> specs = {
      {"kind", true, "memif | af_packet"},
      {"role", true, "server | client (memif)"},
      {"socket", true, "memif socket path"},
      {"iface", true, "af_packet interface"},
      {"mode", true, "send | recv"},
      {"channels", true, "channels (flows), default 1"},
      {"bytes", true, "bytes per channel to send, default 256M"},
      {"msg-size", true, "message size, default 256K"},
      {"verify", false, "fill and check every byte"},
      {"loss", true, "injected loss on transmit (0..1)"},
      {"dup", true, "injected duplication on transmit (0..1)"},
      {"reorder", true, "injected reordering on transmit (0..1)"},
      {"peer-timeout-ms", true, "peer silence that fails the session, default 2000"},
      {"zero-copy", false, "memif client zero-copy (needs --single-file-segments)"},
      {"cpu", true, "pin the poll worker to this CPU"},
      {"mem-mb", true, "EAL memory, default 512"},
      {"header-checksum-only", false, "no payload checksum"},
      {"attach", false, "attach payloads as external buffers (sends complete on ack)"},
      {"frame-bytes", true, "largest L2 frame (memif bsize), default per device"},
      {"label", true, "label in the JSON output"},
  };
  std::vector<std::string> raw(argv + 1, argv + argc);
  auto args = Args::parse(raw, specs);
  if (!args) {
    std::fprintf(stderr, "dpdk_peer: %s\n%s", args.error().message.c_str(), Args::usage(specs).c_str());
    return 2;
  }
  auto num = [&](const char* n, uint64_t d) { return args->get_u64(n, d); };
  SessionConfig cfg;
  std::string kind = args->get_or("kind", "memif");
  cfg.port.kind = kind == "af_packet" ? DeviceKind::af_packet : DeviceKind::memif;
  cfg.port.role = args->get_or("role", "server") == "client" ? MemifRole::client : MemifRole::server;
  cfg.port.socket = args->get_or("socket", "/run/livemig-memif.sock");
  cfg.port.iface = args->get_or("iface", "");
  if (args->has("zero-copy")) {
    cfg.port.zero_copy = ZeroCopy::on;
    cfg.eal.single_file_segments = true;
  }
  auto channels = num("channels", 1), bytes = args->get_size("bytes", 256u << 20),
       msg_size = args->get_size("msg-size", 256u << 10), timeout_ms = num("peer-timeout-ms", 2000),
       cpu = num("cpu", ~0ull), mem = num("mem-mb", 512), frame_bytes = num("frame-bytes", 0);
  auto loss = args->get_double("loss", 0), dup = args->get_double("dup", 0),
       reorder = args->get_double("reorder", 0);
  for (auto* r : {&channels, &bytes, &msg_size, &timeout_ms, &cpu, &mem, &frame_bytes})
    if (!r->ok()) {
      std::fprintf(stderr, "dpdk_peer: %s\n", r->error().message.c_str());
      return 2;
    }
  for (auto* r : {&loss, &dup, &reorder})
    if (!r->ok()) {
      std::fprintf(stderr, "dpdk_peer: %s\n", r->error().message.c_str());
      return 2;
    }
  cfg.protocol.flows = uint16_t(*channels);
  cfg.protocol.peer_timeout_ns = *timeout_ms * 1'000'000;
  cfg.inject = Impairment{*loss, *dup, *reorder};
  cfg.eal.memory_mb = unsigned(*mem);
  cfg.port.frame_bytes = uint32_t(*frame_bytes);
  if (args->has("header-checksum-only")) cfg.protocol.payload_checksum = PayloadChecksum::off;
  if (args->has("attach")) cfg.protocol.send_mode = SendMode::attach;
  if (*cpu != ~0ull) cfg.worker_cpu = int(*cpu);
  const bool sender = args->get_or("mode", "recv") == "send";
  const bool verify = args->has("verify");

  Stopwatch setup;
  auto session = DpdkSession::open(cfg);
  if (!session) {
    std::fprintf(stderr, "dpdk_peer: %s\n", session.error().message.c_str());
    return 1;
  }
  DpdkSession& s = **session;
  std::fprintf(stderr, "dpdk_peer: established over %s (mempool %s) in %.1f ms\n", s.devargs().c_str(),
               s.pool_ops().c_str(), setup.elapsed_ms());

  std::vector<Figures> figs(*channels);
  Stopwatch run;
  std::vector<std::thread> threads;
  for (uint16_t ch = 0; ch < *channels; ++ch) {
    threads.emplace_back([&, ch] {
      Figures& f = figs[ch];
      Stopwatch sw;
      if (sender) {
        // Several buffers in flight so the poller always has one to copy.
        constexpr int kDepth = 4;
        std::vector<std::vector<uint8_t>> bufs(kDepth, std::vector<uint8_t>(*msg_size));
        std::vector<uint64_t> tickets(kDepth, 0);
        uint64_t count = (*bytes + *msg_size - 1) / *msg_size;
        for (uint64_t m = 0; m < count; ++m) {
          int slot = int(m % kDepth);
          if (tickets[slot]) {
            auto r = s.endpoint().wait_sent(ch, tickets[slot], 60'000'000'000ull);
            if (!r) {
              f.error = r.error().message;
              return;
            }
          }
          if (verify) fill_pattern(bufs[slot], ch, m);
          std::span<const uint8_t> part(bufs[slot]);
          auto t = s.endpoint().submit(ch, std::span(&part, 1));
          if (!t) {
            f.error = t.error().message;
            return;
          }
          tickets[slot] = *t;
          f.bytes += part.size();
          f.messages++;
        }
        for (uint64_t t : tickets)
          if (t) {
            auto r = s.endpoint().wait_sent(ch, t, 60'000'000'000ull);
            if (!r) {
              f.error = r.error().message;
              return;
            }
          }
      } else {
        std::vector<uint8_t> scratch;
        for (;;) {
          auto m = s.receive(ch, 120'000'000'000ull);
          if (!m) {
            if (s.end_of_stream(ch)) break;
            f.error = m.error().message;
            return;
          }
          if (f.messages == 0) sw.reset();
          if (verify ? !check_pattern(*m, *msg_size, ch, f.messages, scratch) : m->size() != *msg_size) {
            f.error = strf("channel %u message %llu: %zu bytes, content %s", ch,
                           (unsigned long long)f.messages, m->size(), verify ? "differs" : "unchecked");
            return;
          }
          f.bytes += m->size();
          f.messages++;
        }
      }
      f.seconds = sw.elapsed_s();
    });
  }
  for (auto& t : threads) t.join();
  std::string error;
  for (auto& f : figs)
    if (!f.error.empty()) error = f.error;
  double data_s = run.elapsed_s();
  Result<void> closed = ok();
  if (error.empty()) closed = s.close();
  if (!closed) error = closed.error().message;
  double total_s = run.elapsed_s();
  SessionStats st = s.stats();

  uint64_t total_bytes = 0;
  double max_s = 0;
  for (auto& f : figs) {
    total_bytes += f.bytes;
    max_s = std::max(max_s, f.seconds);
  }
  JsonWriter j;
  j.begin_object();
  j.field("label", args->get_or("label", ""));
  j.field("kind", kind);
  j.field("mode", sender ? "send" : "recv");
  j.field("ok", error.empty());
  if (!error.empty()) j.field("error", error);
  j.field("channels", unsigned(*channels));
  j.field("msg_size", uint64_t(*msg_size));
  j.field("bytes", total_bytes);
  j.field("data_seconds", sender ? data_s : max_s);
  j.field("total_seconds", total_s);
  j.field("gbit_per_s", max_s > 0 ? double(total_bytes) * 8 / max_s / 1e9 : 0.0);
  j.field("loss", *loss);
  j.field("max_payload", uint64_t(s.max_payload()));
  j.begin_object("counters");
  uint64_t attached = 0;
  for (auto& c : st.flows) attached += c.attached_frames;
  j.field("attached_frames", attached);
  uint64_t frames_tx = 0, frames_rx = 0, retx = 0, losses = 0, dups = 0, timeouts = 0, probes = 0, srtt = 0, minrtt = 0;
  for (auto& c : st.flows) {
    frames_tx += c.frames_tx;
    frames_rx += c.frames_rx;
    retx += c.retransmits;
    losses += c.losses_detected;
    dups += c.duplicates;
    timeouts += c.timeouts;
    probes += c.tail_probes;
    srtt = std::max(srtt, c.srtt_ns);
    minrtt = minrtt ? std::min(minrtt, c.min_rtt_ns) : c.min_rtt_ns;
  }
  j.field("data_frames_tx", frames_tx);
  j.field("data_frames_rx", frames_rx);
  j.field("retransmits", retx);
  j.field("losses_detected", losses);
  j.field("duplicates", dups);
  j.field("timeouts", timeouts);
  j.field("tail_probes", probes);
  j.field("srtt_us", double(srtt) / 1e3);
  j.field("min_rtt_us", double(minrtt) / 1e3);
  j.field("bad_frames", st.endpoint.bad_frames);
  j.field("stale_frames", st.endpoint.stale_frames);
  j.field("tx_stalls", st.endpoint.tx_stalls);
  j.field("alloc_failures", st.endpoint.alloc_failures);
  j.field("port_rx_frames", st.port.rx_frames);
  j.field("port_tx_frames", st.port.tx_frames);
  j.field("port_rx_ignored", st.port.rx_ignored);
  j.field("poll_loops", st.poll_loops);
  j.end_object();
  j.end_object();
  std::printf("%s\n", j.str().c_str());
  std::fflush(stdout);
  if (!error.empty()) std::fprintf(stderr, "dpdk_peer: %s\n", error.c_str());
  return error.empty() ? 0 : 1;
}
