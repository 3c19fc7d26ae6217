// Channel contract on every backend: integrity of multi-buffer messages with
// buffer reuse only after completion, back-pressure, timeouts, the close
// handshake, a vanished or killed peer, and a truncated stream.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <thread>

#include "common/clock.hpp"
#include "tests/transport/helpers.hpp"
#include "transport/protocol.hpp"
#include "transport/scatter.hpp"
#include "transport/stream.hpp"

namespace lm::transport {
namespace {

using testing::connected_pair;
using testing::fill_pattern;

class ChannelTest : public ::testing::TestWithParam<std::string> {
 protected:
  ChannelPair pair(ChannelOptions options = {}) {
    auto p = connected_pair(GetParam(), options);
    EXPECT_TRUE(p.ok()) << p.error().message;
    return p.ok() ? std::move(*p) : ChannelPair{};
  }
  // Small windows and socket buffers: a receiver that does not read soon
  // holds the sender back.
  ChannelPair small_buffer_pair() {
    ChannelOptions o;
    o.send_window = 1 << 20;
    o.socket_buffer = 256 << 10;
    return pair(o);
  }
};

struct Shape {
  std::vector<size_t> pieces;
  size_t total = 0;
};

// Message i: 1..5 pieces, mostly small to medium, sometimes empty, sometimes 2 MiB.
Shape shape_of(uint64_t i) {
  std::mt19937_64 rng(i);
  Shape s;
  size_t n = 1 + rng() % 5;
  for (size_t k = 0; k < n; ++k) {
    size_t size;
    switch (rng() % 8) {
      case 0: size = 0; break;
      case 1: size = 1 + rng() % 64; break;
      case 2: size = (1 + rng() % 4) << 20; break;  // large: direct-read path
      default: size = rng() % (300 << 10); break;
    }
    if (size > (2u << 20)) size = 2u << 20;
    s.pieces.push_back(size);
    s.total += size;
  }
  return s;
}

TEST_P(ChannelTest, RandomMultiBufferMessagesArriveIntactAndInOrder) {
  ChannelOptions o;
  o.send_window = 4 << 20;
  auto [a, b] = pair(o);
  ASSERT_TRUE(a && b);
  constexpr uint64_t kMessages = 300;
  constexpr size_t kSlots = 8;  // buffers reused only after the channel completed them

  std::thread sender([&, &a = a] {
    std::vector<std::vector<std::byte>> slots(kSlots);
    std::vector<uint64_t> slot_seq(kSlots, 0);
    for (uint64_t i = 0; i < kMessages; ++i) {
      size_t slot = i % kSlots;
      if (slot_seq[slot]) {
        ASSERT_TRUE(a->wait_sent(slot_seq[slot], Timeout(10000)).ok());
      }
      Shape s = shape_of(i);
      slots[slot].resize(s.total);
      fill_pattern(slots[slot].data(), s.total, i);
      std::vector<ConstBuffer> pieces;
      size_t at = 0;
      for (size_t size : s.pieces) {
        pieces.push_back({slots[slot].data() + at, size});
        at += size;
      }
      auto seq = a->send(pieces, Timeout(10000));
      ASSERT_TRUE(seq.ok()) << seq.error().message;
      slot_seq[slot] = *seq;
    }
    ASSERT_TRUE(a->wait_sent(slot_seq[(kMessages - 1) % kSlots], Timeout(10000)).ok());
    EXPECT_EQ(a->send_completed(), kMessages);
  });

  std::vector<std::byte> want;
  for (uint64_t i = 0; i < kMessages; ++i) {
    auto r = b->recv(Timeout(10000));
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->status, RecvStatus::message);
    Shape s = shape_of(i);
    ASSERT_EQ(r->bytes.size(), s.total) << "message " << i;
    want.resize(s.total);
    fill_pattern(want.data(), s.total, i);
    // An empty message may have no buffer at all: memcmp must not see its null pointer.
    if (s.total) ASSERT_EQ(std::memcmp(r->bytes.data(), want.data(), s.total), 0) << "message " << i;
    ASSERT_EQ(reinterpret_cast<uintptr_t>(r->bytes.data()) % 8, 0u) << "message " << i << " not 8-aligned";
  }
  sender.join();
  std::thread closer([&, &a = a] { EXPECT_TRUE(a->close(Timeout(5000)).ok()); });
  auto end = b->recv(Timeout(5000));
  ASSERT_TRUE(end.ok()) << end.error().message;
  EXPECT_EQ(end->status, RecvStatus::closed);
  EXPECT_TRUE(b->close(Timeout(5000)).ok());
  closer.join();
}

// recv_pieces (scatter receive) and recv alternate on one channel: the
// pieces join to the message, in order, and no piece is empty.
TEST_P(ChannelTest, RecvPiecesJoinToTheMessageAlternatingWithRecv) {
  auto [a, b] = pair();
  ASSERT_TRUE(a && b);
  constexpr uint64_t kMessages = 40;
  std::thread sender([&, &a = a] {
    for (uint64_t i = 0; i < kMessages; ++i) {
      Shape s = shape_of(i);
      std::vector<std::byte> m(s.total);
      fill_pattern(m.data(), s.total, i);
      ConstBuffer piece{m.data(), m.size()};
      ASSERT_TRUE(send_sync(*a, {&piece, 1}, Timeout(10000)).ok());
    }
  });
  std::vector<std::byte> want, got;
  std::vector<std::span<const std::byte>> pieces;
  for (uint64_t i = 0; i < kMessages; ++i) {
    Shape s = shape_of(i);
    want.resize(s.total);
    fill_pattern(want.data(), s.total, i);
    got.clear();
    if (i % 2) {
      auto r = b->recv(Timeout(10000));
      ASSERT_TRUE(r.ok()) << r.error().message;
      ASSERT_EQ(r->status, RecvStatus::message);
      got.assign(r->bytes.begin(), r->bytes.end());
    } else {
      auto st = recv_pieces(*b, pieces, Timeout(10000));
      ASSERT_TRUE(st.ok()) << st.error().message;
      ASSERT_EQ(*st, RecvStatus::message);
      for (auto p : pieces) {
        EXPECT_FALSE(p.empty()) << "message " << i;
        got.insert(got.end(), p.begin(), p.end());
      }
    }
    ASSERT_EQ(got.size(), s.total) << "message " << i;
    ASSERT_TRUE(got == want) << "message " << i;
  }
  sender.join();
  std::thread closer([&, &a = a] { EXPECT_TRUE(a->close(Timeout(5000)).ok()); });
  auto end = recv_pieces(*b, pieces, Timeout(5000));
  ASSERT_TRUE(end.ok()) << end.error().message;
  EXPECT_EQ(*end, RecvStatus::closed);
  EXPECT_TRUE(pieces.empty());
  EXPECT_TRUE(b->close(Timeout(5000)).ok());
  closer.join();
}

TEST_P(ChannelTest, CloseHandshakeDeliversQueuedMessagesThenClosed) {
  auto [a, b] = pair();
  ASSERT_TRUE(a && b);
  std::vector<std::byte> msg(100000);
  for (int i = 0; i < 10; ++i) {
    fill_pattern(msg.data(), msg.size(), i);
    ConstBuffer piece{msg.data(), msg.size()};
    ASSERT_TRUE(send_sync(*a, {&piece, 1}, Timeout(5000)).ok());
  }
  std::thread closer([&, &a = a] {
    auto r = a->close(Timeout(5000));
    EXPECT_TRUE(r.ok()) << r.error().message;
  });
  for (int i = 0; i < 10; ++i) {
    auto r = b->recv(Timeout(5000));
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->status, RecvStatus::message);
    ASSERT_EQ(r->bytes.size(), msg.size());
  }
  auto r = b->recv(Timeout(5000));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->status, RecvStatus::closed);
  EXPECT_TRUE(b->close(Timeout(5000)).ok());
  closer.join();
  // A closed channel refuses to send.
  ConstBuffer piece{msg.data(), 1};
  EXPECT_FALSE(a->send({&piece, 1}, Timeout(100)).ok());
}

TEST_P(ChannelTest, SlowReceiverBlocksSenderWithBoundedMemory) {
  auto [a, b] = small_buffer_pair();
  ASSERT_TRUE(a && b);
  std::vector<std::byte> msg(1 << 20);
  ConstBuffer piece{msg.data(), msg.size()};
  int sent = 0;
  Error blocked;
  for (; sent < 200; ++sent) {
    auto r = send_sync(*a, {&piece, 1}, Timeout(300));
    if (!r) {
      blocked = std::move(r).error();
      break;
    }
  }
  ASSERT_LT(sent, 200) << "sender never blocked: no back-pressure";
  EXPECT_EQ(blocked.code, ETIMEDOUT) << blocked.message;
  EXPECT_NE(blocked.message.find(a->name()), std::string::npos) << blocked.message;
  // The receiver drains what was accepted; the channel still works.
  for (int i = 0; i < sent; ++i) {
    auto r = b->recv(Timeout(5000));
    ASSERT_TRUE(r.ok()) << r.error().message;
  }
}

// Socket backends report what the peer acknowledged (the adaptive policy's
// link windows count that, not bytes queued in growing socket buffers) and
// how long the sender waited on the peer's receive window; others, nothing.
TEST_P(ChannelTest, LinkCountersCountWhatThePeerAcknowledged) {
  auto [a, b] = small_buffer_pair();
  ASSERT_TRUE(a && b);
  const std::optional<LinkCounters> before = a->link_counters();
  if (!testing::is_socket_backend(GetParam())) {
    EXPECT_FALSE(before.has_value());
    return;
  }
  ASSERT_TRUE(before.has_value());
  constexpr size_t kMessages = 8, kSize = 1 << 20;
  std::vector<std::byte> msg(kSize);
  ConstBuffer piece{msg.data(), msg.size()};
  std::thread sender([&, &a = a] {
    for (size_t i = 0; i < kMessages; i++) {
      auto r = send_sync(*a, {&piece, 1}, Timeout(10000));
      ASSERT_TRUE(r.ok()) << r.error().message;
    }
  });
  // 300 ms without reading: the receive window closes on the sender.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  for (size_t i = 0; i < kMessages; i++) {
    auto r = b->recv(Timeout(10000));
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->bytes.size(), kSize);
  }
  sender.join();
  // The last acknowledgements may trail the last read a little.
  std::optional<LinkCounters> after;
  for (int i = 0; i < 200; i++) {
    after = a->link_counters();
    if (!after || after->acked_bytes - before->acked_bytes >= kMessages * kSize) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(after.has_value());
  const uint64_t acked = after->acked_bytes - before->acked_bytes;
  EXPECT_GE(acked, kMessages * kSize);
  EXPECT_LE(acked, kMessages * kSize + (64 << 10)) << "the messages and their frame headers, nothing more";
  EXPECT_GE(after->peer_limited_us - before->peer_limited_us, 100'000u) << "300 ms on a closed receive window";
}

TEST_P(ChannelTest, RecvTimesOutAndChannelStaysUsable) {
  auto [a, b] = pair();
  ASSERT_TRUE(a && b);
  Stopwatch sw;
  auto r = b->recv(Timeout(150));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ETIMEDOUT) << r.error().message;
  EXPECT_GE(sw.elapsed_ms(), 100.0);
  uint64_t v = 42;
  ConstBuffer piece{&v, sizeof v};
  ASSERT_TRUE(send_sync(*a, {&piece, 1}, Timeout(1000)).ok());
  auto r2 = b->recv(Timeout(2000));
  ASSERT_TRUE(r2.ok()) << r2.error().message;
  ASSERT_EQ(r2->bytes.size(), sizeof v);
  EXPECT_EQ(std::memcmp(r2->bytes.data(), &v, sizeof v), 0);
}

// A recv with a long timeout ends within milliseconds of its stop token being
// stopped from another thread, with ECANCELED naming the channel; the channel
// is unharmed: the next message arrives whole.
TEST_P(ChannelTest, StoppedRecvEndsAtOnceAndChannelStaysUsable) {
  auto [a, b] = pair();
  ASSERT_TRUE(a && b);
  for (int attempt = 0; attempt < 2; ++attempt) {  // the second wait reuses the wake-up
    auto [r, late_ms] = testing::wait_stopped_later([&b = b](std::stop_token t) { return b->recv(Timeout(20000), t); });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ECANCELED) << r.error().message;
    EXPECT_NE(r.error().message.find(b->name()), std::string::npos) << r.error().message;
    EXPECT_LT(late_ms, 50.0);
  }
  std::stop_source already;
  already.request_stop();
  auto r = b->recv(Timeout(20000), already.get_token());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ECANCELED) << r.error().message;
  std::vector<std::byte> msg(3 << 20);  // large: the direct-read path
  fill_pattern(msg.data(), msg.size(), 5);
  ConstBuffer piece{msg.data(), msg.size()};
  std::thread sender([&, &a = a] { EXPECT_TRUE(send_sync(*a, {&piece, 1}, Timeout(5000)).ok()); });
  std::stop_source never;
  auto got = b->recv(Timeout(5000), never.get_token());
  sender.join();
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->bytes.size(), msg.size());
  EXPECT_EQ(std::memcmp(got->bytes.data(), msg.data(), msg.size()), 0);
}

// wait_sent for a send the receiver does not take yet ends at its stop; the
// send is still in flight and completes once the receiver drains.
TEST_P(ChannelTest, StoppedWaitSentEndsAtOnceAndTheSendStillCompletes) {
  if (GetParam().rfind("uring", 0) != 0) GTEST_SKIP() << "only uring's send returns before it completes";
  auto [a, b] = pair();
  ASSERT_TRUE(a && b);
  std::vector<std::byte> msg(32 << 20);  // far beyond the socket buffers
  fill_pattern(msg.data(), msg.size(), 9);
  ConstBuffer piece{msg.data(), msg.size()};
  auto seq = a->send({&piece, 1}, Timeout(5000));
  ASSERT_TRUE(seq.ok()) << seq.error().message;
  ASSERT_LT(a->send_completed(), *seq) << "completed before anyone received it";
  auto [w, late_ms] =
      testing::wait_stopped_later([&a = a, &seq](std::stop_token t) { return a->wait_sent(*seq, Timeout(20000), t); });
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code, ECANCELED) << w.error().message;
  EXPECT_NE(w.error().message.find(a->name()), std::string::npos) << w.error().message;
  EXPECT_LT(late_ms, 50.0);
  std::thread receiver([&b = b, &msg] {
    auto got = b->recv(Timeout(10000));
    ASSERT_TRUE(got.ok()) << got.error().message;
    ASSERT_EQ(got->bytes.size(), msg.size());
    EXPECT_EQ(std::memcmp(got->bytes.data(), msg.data(), msg.size()), 0);
  });
  auto done = a->wait_sent(*seq, Timeout(10000));
  receiver.join();
  EXPECT_TRUE(done.ok()) << done.error().message;
}

TEST_P(ChannelTest, VanishedPeerFailsPendingRecvAndLaterSends) {
  auto [a, b] = pair();
  ASSERT_TRUE(a && b);
  std::thread killer([&a = a] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    a.reset();  // no close handshake
  });
  Stopwatch sw;
  auto r = b->recv(Timeout(5000));  // pending while the peer goes away
  killer.join();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().code, ETIMEDOUT) << r.error().message;
  EXPECT_LT(sw.elapsed_ms(), 4000.0);
  EXPECT_NE(r.error().message.find(b->name()), std::string::npos) << r.error().message;
  std::vector<std::byte> msg(256 << 10);
  ConstBuffer piece{msg.data(), msg.size()};
  bool failed = false;
  for (int i = 0; i < 200 && !failed; ++i) failed = !send_sync(*b, {&piece, 1}, Timeout(2000)).ok();
  EXPECT_TRUE(failed) << "sends to a vanished peer kept succeeding";
}

TEST_P(ChannelTest, PeerKilledMidStreamGivesErrorNotHang) {
  if (!testing::is_socket_backend(GetParam())) GTEST_SKIP() << "needs a process boundary";
  ChannelOptions o;
  std::string backend = testing::apply_variant(GetParam(), o);
  auto listener = listen(backend + ":127.0.0.1:0", o);
  ASSERT_TRUE(listener.ok()) << listener.error().message;
  std::string address = (*listener)->address();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto ch = connect(address, o, Timeout(5000));
    if (!ch) _exit(3);
    std::vector<std::byte> msg(64 << 10);
    ConstBuffer piece{msg.data(), msg.size()};
    for (;;)
      if (!send_sync(**ch, {&piece, 1}, Timeout(5000))) _exit(4);
  }
  auto ch = (*listener)->accept(Timeout(5000));
  bool got_some = ch.ok();
  for (int i = 0; got_some && i < 20; ++i) got_some = (*ch)->recv(Timeout(5000)).ok();
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_TRUE(got_some);
  Stopwatch sw;
  Result<Received> r = Received{};
  for (int i = 0; i < 100000; ++i) {  // drain what was buffered, then the error
    r = (*ch)->recv(Timeout(5000));
    if (!r) break;
  }
  ASSERT_FALSE(r.ok()) << "no error after the peer was killed";
  EXPECT_NE(r.error().code, ETIMEDOUT) << r.error().message;
  EXPECT_LT(sw.elapsed_ms(), 5000.0);
}

// A backend's channel whose peer is a plain socket the test writes raw bytes to.
struct RawPeer {
  UniqueFd raw;
  std::unique_ptr<Channel> channel;
  std::string error;
};

RawPeer raw_peer(const std::string& variant) {
  RawPeer p;
  ChannelOptions o;
  std::string backend = testing::apply_variant(variant, o);
  auto listener = listen(backend + ":127.0.0.1:0", o);
  if (!listener) return {UniqueFd(), nullptr, listener.error().message};
  std::string address = (*listener)->address();
  auto raw = connect_socket(address.substr(address.find(':') + 1), o, Timeout(5000));
  if (!raw) return {UniqueFd(), nullptr, raw.error().message};
  auto ch = (*listener)->accept(Timeout(5000));
  if (!ch) return {UniqueFd(), nullptr, ch.error().message};
  return {std::move(*raw), std::move(*ch), {}};
}

TEST_P(ChannelTest, TruncatedStreamIsAnErrorNamingTheChannel) {
  if (!testing::is_socket_backend(GetParam())) GTEST_SKIP() << "stream framing only";
  RawPeer peer = raw_peer(GetParam());
  ASSERT_TRUE(peer.channel) << peer.error;
  auto& raw = peer.raw;
  auto& ch = peer.channel;
  // A frame announcing 1000 bytes, of which only 10 arrive.
  FrameHeader h{kFrameData, 1000};
  char bytes[sizeof h + 10] = {};
  std::memcpy(bytes, &h, sizeof h);
  ASSERT_EQ(::write(raw.get(), bytes, sizeof bytes), ssize_t(sizeof bytes));
  raw.reset();
  auto r = ch->recv(Timeout(5000));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("truncated"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(ch->name()), std::string::npos) << r.error().message;
}

// A byte flipped on the wire (after the sender sealed the message) is found by
// the receiver's checksum, and the error names the channel it arrived on.
// A stop that lands while a large frame is half read leaves the rest for the
// next recv: the stream stays in step (a timeout there is the same case).
TEST_P(ChannelTest, StoppedInsideALargeFrameResumesWithTheRestOfIt) {
  if (!testing::is_socket_backend(GetParam())) GTEST_SKIP() << "stream framing only";
  RawPeer peer = raw_peer(GetParam());
  ASSERT_TRUE(peer.channel) << peer.error;
  auto& ch = peer.channel;
  std::vector<std::byte> body(1 << 20);
  fill_pattern(body.data(), body.size(), 11);
  FrameHeader h{kFrameData, uint32_t(body.size())};
  const size_t first = 300 << 10;
  std::vector<std::byte> head(sizeof h + first);
  std::memcpy(head.data(), &h, sizeof h);
  std::memcpy(head.data() + sizeof h, body.data(), first);
  ASSERT_EQ(::write(peer.raw.get(), head.data(), head.size()), ssize_t(head.size()));
  auto [r, late_ms] = testing::wait_stopped_later([&](std::stop_token t) { return ch->recv(Timeout(20000), t); },
                                                  std::chrono::milliseconds(200));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ECANCELED) << r.error().message;
  size_t rest = body.size() - first;
  ASSERT_EQ(::write(peer.raw.get(), body.data() + first, rest), ssize_t(rest));
  auto got = ch->recv(Timeout(5000));
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->bytes.size(), body.size());
  EXPECT_EQ(std::memcmp(got->bytes.data(), body.data(), body.size()), 0);
}

TEST_P(ChannelTest, ByteFlippedOnTheWireIsChecksumErrorNamingChannel) {
  if (!testing::is_socket_backend(GetParam())) GTEST_SKIP() << "raw socket writer";
  RawPeer peer = raw_peer(GetParam());
  ASSERT_TRUE(peer.channel) << peer.error;
  auto& raw = peer.raw;
  auto& ch = peer.channel;
  std::vector<std::byte> state(1000);
  fill_pattern(state.data(), state.size(), 7);
  OutMessage m;
  encode_exec_state(m, 1, 1, state);
  std::vector<char> wire(sizeof(FrameHeader));
  FrameHeader h{kFrameData, uint32_t(m.size())};
  std::memcpy(wire.data(), &h, sizeof h);
  for (const auto& p : m.pieces()) wire.insert(wire.end(), static_cast<const char*>(p.data),
                                               static_cast<const char*>(p.data) + p.size);
  wire.resize(wire.size() + frame_pad(m.size()));
  wire[sizeof h + sizeof(MsgHeader) + 500] ^= 0x40;  // in the payload
  ASSERT_EQ(::write(raw.get(), wire.data(), wire.size()), ssize_t(wire.size()));
  auto r = recv_message(*ch, Timeout(5000));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("checksum mismatch"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(ch->name()), std::string::npos) << r.error().message;
}

TEST_P(ChannelTest, OversizedMessageRejectedBySender) {
  ChannelOptions o;
  o.max_message = 1 << 20;
  auto [a, b] = pair(o);
  ASSERT_TRUE(a && b);
  std::vector<std::byte> msg((1 << 20) + 1);
  ConstBuffer piece{msg.data(), msg.size()};
  auto r = a->send({&piece, 1}, Timeout(1000));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EMSGSIZE);
}

INSTANTIATE_TEST_SUITE_P(Backends, ChannelTest, ::testing::ValuesIn(testing::test_backends()),
                         testing::backend_param_name);

// Listener::accept with a long timeout ends within milliseconds of its stop;
// the listener then accepts as before.
TEST(SocketListener, StoppedAcceptEndsAtOnceAndListenerStaysUsable) {
  for (const std::string& variant : testing::test_backends()) {
    if (!testing::is_socket_backend(variant) || variant.find('_') != std::string::npos) continue;
    SCOPED_TRACE(variant);
    ChannelOptions options;
    auto listener = listen(variant + ":127.0.0.1:0", options);
    ASSERT_TRUE(listener.ok()) << listener.error().message;
    auto [r, late_ms] =
        testing::wait_stopped_later([&](std::stop_token t) { return (*listener)->accept(Timeout(20000), t); });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ECANCELED) << r.error().message;
    EXPECT_NE(r.error().message.find((*listener)->address()), std::string::npos) << r.error().message;
    EXPECT_LT(late_ms, 50.0);
    std::string address = (*listener)->address();
    auto dialed = std::async(std::launch::async, [&] { return connect(address, options, Timeout(5000)); });
    auto accepted = (*listener)->accept(Timeout(5000));
    ASSERT_TRUE(accepted.ok()) << accepted.error().message;
    ASSERT_TRUE(dialed.get().ok());
  }
}

TEST(Registry, ListsBuiltBackendsAndRejectsUnknown) {
  auto tcp = find_backend("tcp");
  ASSERT_TRUE(tcp.ok());
  EXPECT_TRUE((*tcp)->probe().available);
#if LM_HAVE_URING
  auto uring = find_backend("uring");
  ASSERT_TRUE(uring.ok());
  Probe p = (*uring)->probe();
  EXPECT_TRUE(p.available) << p.reason;  // io_uring is enabled on the project's machines
#endif
  auto bad = connect("carrier-pigeon:1.2.3.4:5", ChannelOptions{}, Timeout(100));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message.find("carrier-pigeon"), std::string::npos);
  EXPECT_NE(bad.error().message.find("tcp"), std::string::npos) << "lists the known backends";
}

}  // namespace
}  // namespace lm::transport
