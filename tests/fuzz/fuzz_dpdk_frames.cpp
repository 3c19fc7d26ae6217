// The DPDK reliable protocol's receive side without EAL: a ReliableEndpoint
// over an in-memory FramePort that delivers the input's frames, one per
// poll, with the clock advanced between them (so retransmission, keepalive
// and peer-timeout paths run). Input: records of flags u8, length u16,
// frame bytes. Flags: bit 0 seal the header (magic, version, header_sum),
// bit 1 set the session nonces, bit 2 set payload_sum, bits 3-4 the time
// step, bit 5 the application takes received messages, bit 6 it submits a
// message (on flow bit 7). At the end every frame must be back (no leak).
#include <cstring>
#include <deque>

#include "fuzz_target.hpp"
#include "transport/dpdk/frame_format.hpp"
#include "transport/dpdk/reliable_endpoint.hpp"

using namespace lm;
using namespace lm::dpdk;

namespace {

constexpr uint32_t kMyNonce = 0x1111;
constexpr uint32_t kPeerNonce = 0x2222;
constexpr uint32_t kCapacity = sizeof(FrameHeader) + 1024;

// Heap frames with a reference count; counts what is outstanding.
class FakePort : public FramePort {
 public:
  struct Block {
    int refs;
    uint8_t bytes[kCapacity];
  };
  ~FakePort() override {
    for (Frame& f : inbox_) release(&f, 1);
  }
  uint32_t frame_capacity() const override { return kCapacity; }
  size_t alloc(Frame* out, size_t n) override {
    for (size_t i = 0; i < n; ++i) out[i] = make();
    return n;
  }
  size_t transmit(Frame* frames, size_t n) override {
    release(frames, n);
    return n;
  }
  size_t receive(Frame* out, size_t n) override {
    size_t k = 0;
    for (; k < n && !inbox_.empty(); ++k) {
      out[k] = inbox_.front();
      inbox_.pop_front();
    }
    return k;
  }
  void retain(Frame& f) override { static_cast<Block*>(f.handle)->refs++; }
  void release(Frame* frames, size_t n) override {
    for (size_t i = 0; i < n; ++i) {
      auto* b = static_cast<Block*>(frames[i].handle);
      if (!b) continue;
      FUZZ_CHECK(b->refs > 0);
      if (--b->refs == 0) {
        delete b;
        live_--;
      }
      frames[i].handle = nullptr;
    }
  }
  std::string peer_name() const override { return "fuzz"; }

  void deliver(const uint8_t* bytes, uint32_t len) {
    Frame f = make();
    std::memcpy(f.data, bytes, len);
    f.len = len;
    FrameHeader h{};
    if (len >= sizeof h) std::memcpy(&h, bytes, sizeof h);
    f.flow = h.flow;
    inbox_.push_back(f);
  }
  long live() const { return live_; }
  long queued() const { return long(inbox_.size()); }

 private:
  Frame make() {
    auto* b = new Block;
    b->refs = 1;
    live_++;
    return Frame{b, b->bytes, 0, 0};
  }
  std::deque<Frame> inbox_;
  long live_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FakePort port;
  {
    ReliableConfig cfg;
    cfg.flows = 2;
    cfg.reorder_slots = 64;
    cfg.send_slots = 64;
    cfg.initial_window = 16;
    cfg.min_window = 4;
    cfg.max_message = 64 << 10;
    cfg.rx_queue_bytes = 1 << 20;
    auto ep = ReliableEndpoint::create(port, cfg, kMyNonce);
    FUZZ_CHECK(ep.ok());
    uint64_t now = 1'000'000'000;
    static const uint8_t message[3000] = {42};
    size_t pos = 0;
    while (pos + 3 <= size) {
      const uint8_t flags = data[pos];
      size_t len = std::min<size_t>(data[pos + 1] | (data[pos + 2] << 8), kCapacity);
      pos += 3;
      len = std::min(len, size - pos);
      uint8_t frame[kCapacity] = {};
      std::memcpy(frame, data + pos, len);
      pos += len;
      if (len >= sizeof(FrameHeader)) {
        FrameHeader h;
        std::memcpy(&h, frame, sizeof h);
        if (flags & 2) h.nonce = kPeerNonce, h.peer_nonce = kMyNonce;
        if (flags & 4) h.payload_sum = checksum32(frame + sizeof h, std::min<size_t>(h.payload_len, len - sizeof h));
        if (flags & 1) h.magic = kFrameMagic, h.version = kProtocolVersion, seal_header(h);
        std::memcpy(frame, &h, sizeof h);
      }
      port.deliver(frame, uint32_t(len));
      static constexpr uint64_t kSteps[] = {10'000, 1'000'000, 30'000'000, 3'000'000'000};
      now += kSteps[(flags >> 3) & 3];
      (*ep)->poll(now);
      if (flags & 32)
        for (uint16_t flow = 0; flow < cfg.flows; ++flow)
          while (auto m = (*ep)->try_receive_message(flow)) {
            FUZZ_CHECK(m->size <= cfg.max_message);
            size_t sum = 0;
            for (auto p : m->pieces) sum += p.size();
            FUZZ_CHECK(sum == m->size);
            (*ep)->release_message(*m);
          }
      if (flags & 64) {
        std::span<const uint8_t> piece(message, 1 + (flags & 7) * 400);
        (void)(*ep)->submit(uint16_t(flags >> 7), {&piece, 1});
      }
    }
    for (int i = 0; i < 4; ++i) (*ep)->poll(now += 1'000'000);
    (void)(*ep)->counters();
  }
  // The endpoint gave back every frame it took (the inbox's are the port's own).
  FUZZ_CHECK(port.live() == port.queued());
  return 0;
}

#ifndef LM_LIBFUZZER
namespace {
FrameHeader header(FrameType type, uint16_t flow, uint64_t seq, uint16_t flags, uint16_t payload_len) {
  FrameHeader h{};
  h.magic = kFrameMagic;
  h.version = kProtocolVersion;
  h.type = type;
  h.flow = flow;
  h.nonce = kPeerNonce;
  h.peer_nonce = kMyNonce;
  h.seq = seq;
  h.window_edge = 64;
  h.flags = flags;
  h.payload_len = payload_len;
  return h;
}
void append(FuzzInput& s, uint8_t flags, FrameHeader h, std::span<const uint8_t> payload = {}) {
  h.payload_sum = checksum32(payload.data(), payload.size());
  seal_header(h);
  const size_t len = sizeof h + payload.size();
  s.push_back(flags);
  s.push_back(uint8_t(len));
  s.push_back(uint8_t(len >> 8));
  const auto* p = reinterpret_cast<const uint8_t*>(&h);
  s.insert(s.end(), p, p + sizeof h);
  s.insert(s.end(), payload.begin(), payload.end());
}
}  // namespace

// A peer's session: hello, a flow opened, a message in one frame, one in
// two frames, an ack, FIN, bye.
std::vector<FuzzInput> fuzz_seeds() {
  static const uint8_t text[] = "a message from the peer, in frames";
  std::vector<FuzzInput> seeds;
  for (uint8_t app : {uint8_t(32), uint8_t(32 | 64)}) {
    FuzzInput s;
    auto h = header(FrameType::hello, 0, 0, 0, 0);
    append(s, app, h);
    append(s, app, header(FrameType::data, 0, 0, kFlagOpen, 0));
    auto d = header(FrameType::data, 0, 1, kFlagFirst | kFlagLast, sizeof text);
    d.msg_len = sizeof text;
    append(s, app, d, text);
    auto first = header(FrameType::data, 0, 2, kFlagFirst, 10);
    first.msg_len = sizeof text;
    append(s, app, first, std::span(text, 10));
    append(s, app | (1 << 3), header(FrameType::data, 0, 3, kFlagLast, sizeof text - 10), std::span(text + 10, sizeof text - 10));
    auto ack = header(FrameType::ack, 0, 0, 0, 0);
    ack.ack = 1;
    append(s, app, ack);
    append(s, app, header(FrameType::data, 0, 4, kFlagFin, 0));
    append(s, app | (2 << 3), header(FrameType::bye, 0, 0, 0, 0));
    seeds.push_back(std::move(s));
  }
  return seeds;
}
#endif
