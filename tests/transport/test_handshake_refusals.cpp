// Every way the destination refuses a channel's handshake tells the peer why
// before it closes (docs/protocol.md, "Limits and refusals"), and an idle
// peer does not hold up another one (handshakes run concurrently).
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <thread>

#include "transport/session.hpp"

namespace lm::transport {
namespace {

constexpr Timeout kDeadline(300);

HelloBody source_hello(ChannelRole role) {
  HelloBody h{};
  h.version_min = kProtocolVersionMin;
  h.version_max = kProtocolVersionMax;
  h.page_size = uint32_t(kPageSize);
  h.features = 0;
  h.codecs = (1u << kCodecCount) - 1;
  h.bulk_channels = 1;
  h.role = uint8_t(role);
  h.session_id = 42;
  return h;
}

Result<void> send_hello(Channel& ch, const HelloBody& h) {
  OutMessage m;
  encode_hello(m, h);
  return send_message(ch, m, Timeout(1000));
}

std::unique_ptr<Channel> dial_or_fail(const Dial& dial) {
  auto ch = dial(Timeout(1000));
  EXPECT_TRUE(ch.ok()) << ch.error().message;
  return ch ? std::move(*ch) : nullptr;
}

struct Row {
  const char* name;
  // What the peer does on its raw channel before it waits for the verdict.
  std::function<void(Channel&)> act;
  const char* told;  // in the error message it must receive
};

const Row kRows[] = {
    {"idle_past_the_deadline", [](Channel&) {}, "handshake deadline of 300 ms passed"},
    {"unexpected_first_message",
     [](Channel& ch) {
       OutMessage m;
       encode_accept(m, kProtocolVersionMax, AcceptBody{});
       ASSERT_TRUE(send_message(ch, m, Timeout(1000)).ok());
     },
     "expected hello, got accept"},
    {"undecodable_hello",
     [](Channel& ch) {
       HelloBody h = source_hello(ChannelRole::control);
       h.role = 7;
       ASSERT_TRUE(send_hello(ch, h).ok());
     },
     "unknown channel role 7"},
    {"no_common_version",
     [](Channel& ch) {
       HelloBody h = source_hello(ChannelRole::control);
       h.version_min = h.version_max = 77;
       ASSERT_TRUE(send_hello(ch, h).ok());
     },
     "no common protocol version"},
    {"silent_after_hello",
     [](Channel& ch) {
       ASSERT_TRUE(send_hello(ch, source_hello(ChannelRole::control)).ok());
       auto theirs = recv_message(ch, Timeout(1000));
       ASSERT_TRUE(theirs.ok()) << theirs.error().message;
       ASSERT_EQ(theirs->type, MsgType::hello);
     },
     "handshake deadline of 300 ms passed"},
    {"wrong_key",
     [](Channel& ch) {
       HelloBody h = source_hello(ChannelRole::priority);
       h.psk = 1;  // keyed, as the destination is: the proofs are exchanged
       ASSERT_TRUE(send_hello(ch, h).ok());
       ASSERT_TRUE(recv_message(ch, Timeout(1000)).ok());
       OutMessage m;
       encode_auth(m, kProtocolVersionMax, AuthBody{});
       ASSERT_TRUE(send_message(ch, m, Timeout(1000)).ok());
     },
     "pre-shared key mismatch"},
    {"refused_by_admission",
     [](Channel& ch) {
       HelloBody h = source_hello(ChannelRole::bulk);
       h.bulk_channels = 500;
       ASSERT_TRUE(send_hello(ch, h).ok());  // unkeyed: the admission check follows the hellos
     },
     "refuses 500 bulk channels"},
};

class HandshakeRefusal : public ::testing::TestWithParam<Row> {};

TEST_P(HandshakeRefusal, ThePeerIsToldWhyBeforeTheClose) {
  const Row& row = GetParam();
  SessionConfig config;
  config.handshake_deadline = kDeadline;
  if (std::string(row.name) == "wrong_key") config.psk = "the key";
  config.admit = [](const Negotiated& n, const MappingTable*) -> Result<void> {
    if (n.bulk_channels > 64) return Error::msg(strf("destination refuses %u bulk channels: limit 64", n.bulk_channels));
    return ok();
  };
  std::vector<std::string> refused;
  config.on_refused = [&](const Error& e) { refused.push_back(e.message); };
  auto link = make_inproc_link(ChannelOptions{}, "refusal");
  Result<Session> accepted = Error::msg("not run");
  std::thread dest([&] { accepted = accept_session(*link.listener, config, Timeout(1000)); });

  auto ch = link.dial(Timeout(1000));
  ASSERT_TRUE(ch.ok()) << ch.error().message;
  row.act(**ch);
  // The destination's word comes before the end of the channel.
  Result<Message> told = Error::msg("nothing");
  for (;;) {
    told = recv_message(**ch, Timeout(2000));
    // The destination's hello (and, keyed, its proof) may come first.
    if (!told || (told->type != MsgType::hello && told->type != MsgType::auth)) break;
  }
  ASSERT_TRUE(told.ok()) << "closed without a word: " << told.error().message;
  ASSERT_EQ(told->type, MsgType::error);
  auto text = decode_error(*told);
  ASSERT_TRUE(text.ok());
  EXPECT_NE(text->text.find(row.told), std::string::npos) << text->text;
  dest.join();
  // The destination's own account names the same reason and the channel.
  ASSERT_FALSE(accepted.ok());
  EXPECT_NE(accepted.error().message.find(row.told), std::string::npos) << accepted.error().message;
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_NE(refused[0].find("refusal"), std::string::npos) << "names the channel: " << refused[0];
}

INSTANTIATE_TEST_SUITE_P(Rows, HandshakeRefusal, ::testing::ValuesIn(kRows),
                         [](const auto& info) { return std::string(info.param.name); });

// Beyond the cap on pending handshakes the oldest is dropped, told why.
TEST(HandshakeCap, TheOldestPendingHandshakeIsDroppedAndTold) {
  SessionConfig config;
  config.max_pending_handshakes = 2;
  config.handshake_deadline = Timeout(5000);
  auto link = make_inproc_link(ChannelOptions{}, "cap");
  std::thread dest([&] { (void)accept_session(*link.listener, config, Timeout(1500)); });
  std::vector<std::unique_ptr<Channel>> idle;
  for (int i = 0; i < 3; i++) idle.push_back(dial_or_fail(link.dial));
  auto told = recv_message(*idle[0], Timeout(1000));
  ASSERT_TRUE(told.ok()) << told.error().message;
  ASSERT_EQ(told->type, MsgType::error);
  EXPECT_NE(decode_error(*told)->text.find("2 handshakes pending"), std::string::npos) << decode_error(*told)->text;
  EXPECT_FALSE(recv_message(*idle[1], Timeout(100)).ok()) << "the younger ones wait on";
  dest.join();
}

// A channel whose handshake passed waits in its incomplete session; beyond the
// cap, the oldest such session is dropped and its channels told why.
TEST(HandshakeCap, TheOldestIncompleteSessionIsDroppedAndTold) {
  SessionConfig config;
  config.max_pending_handshakes = 1;
  auto link = make_inproc_link(ChannelOptions{}, "incomplete");
  std::thread dest([&] { (void)accept_session(*link.listener, config, Timeout(1500)); });
  auto join_priority = [&](uint64_t session_id) {
    auto ch = dial_or_fail(link.dial);
    HelloBody h = source_hello(ChannelRole::priority);
    h.session_id = session_id;
    EXPECT_TRUE(send_hello(*ch, h).ok());
    EXPECT_TRUE(recv_message(*ch, Timeout(1000)).ok());  // unkeyed: no proofs, the accept follows
    auto accepted = recv_message(*ch, Timeout(1000));
    EXPECT_TRUE(accepted.ok() && accepted->type == MsgType::accept);
    return ch;
  };
  auto first = join_priority(1);
  auto second = join_priority(2);
  auto told = recv_message(*first, Timeout(1000));
  ASSERT_TRUE(told.ok()) << told.error().message;
  ASSERT_EQ(told->type, MsgType::error);
  EXPECT_NE(decode_error(*told)->text.find("sessions incomplete"), std::string::npos) << decode_error(*told)->text;
  dest.join();
  // The younger one is told when the destination stops accepting.
  auto later = recv_message(*second, Timeout(1000));
  ASSERT_TRUE(later.ok()) << later.error().message;
  EXPECT_EQ(later->type, MsgType::error);
}

// An idle connection does not delay a source that connects after it.
TEST(HandshakeConcurrency, AnIdlePeerDoesNotDelayASource) {
  SessionConfig config;  // the default deadline (3 s)
  auto link = make_inproc_link(ChannelOptions{}, "concurrent");
  Result<Session> accepted = Error::msg("not run");
  std::thread dest([&] { accepted = accept_session(*link.listener, config, Timeout(5000)); });
  std::vector<std::unique_ptr<Channel>> idle;
  for (int i = 0; i < 10; i++) idle.push_back(dial_or_fail(link.dial));
  auto table = MappingTable::make({{0x10000, 0x20000, 3, 0}}, 1);
  ASSERT_TRUE(table.ok());
  const auto t0 = std::chrono::steady_clock::now();
  auto source = Session::connect_with(link.dial, SessionConfig{}, *table);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  dest.join();
  ASSERT_TRUE(source.ok()) << source.error().message;
  ASSERT_TRUE(accepted.ok()) << accepted.error().message;
  std::printf("session established in %.1f ms behind 10 idle connections\n", ms);
  EXPECT_LT(ms, 1000) << "the idle connections held the source up";
}

}  // namespace
}  // namespace lm::transport
