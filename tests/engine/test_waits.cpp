// Waits that another thread ends: a Cancel (a signal, the runner) or a stop
// token (a sibling thread failed) ends a blocked receive or session accept at
// once, over real sockets, and the channel works on afterwards.
#include <gtest/gtest.h>

#include <chrono>

#include "engine/cancel.hpp"
#include "engine/messages.hpp"
#include "tests/transport/helpers.hpp"
#include "transport/session.hpp"

namespace lm::engine {
namespace {

using transport::Timeout;
using transport::testing::wait_stopped_later;

Peer peer_on(transport::Channel& channel, const Cancel* cancel) {
  return Peer(channel, transport::kProtocolVersionMax, Inbound{}, Timeout(20000), cancel);
}

// `wait` while another thread requests `cancel`, as the signal watcher does.
template <class Wait>
auto wait_cancelled_later(Cancel& cancel, Wait wait) {
  return wait_stopped_later([&](std::stop_token t) {
    std::stop_callback request(t, [&] { cancel.request("interrupted by the test"); });
    return wait();
  });
}

TEST(Waits, CancelEndsABlockedReceiveAtOnce) {
  auto pair = transport::testing::connected_pair("tcp", {});
  ASSERT_TRUE(pair.ok()) << pair.error().message;
  Cancel cancel;
  const Peer receiver = peer_on(*pair->b, &cancel);
  auto [r, late_ms] = wait_cancelled_later(cancel, [&] { return receiver.receive(transport::kForever); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ECANCELED) << r.error().message;
  EXPECT_EQ(r.error().message, "interrupted by the test");
  EXPECT_LT(late_ms, 50.0);
  // Once requested, a receive does not wait at all.
  Stopwatch again;
  EXPECT_FALSE(receiver.receive(Timeout(20000)).ok());
  EXPECT_LT(again.elapsed_ms(), 50.0);
}

TEST(Waits, StopTokenEndsAReceiveThatAlsoWatchesACancel) {
  auto pair = transport::testing::connected_pair("tcp", {});
  ASSERT_TRUE(pair.ok()) << pair.error().message;
  Cancel cancel;
  const Peer receiver = peer_on(*pair->b, &cancel);
  auto [r, late_ms] =
      wait_stopped_later([&](std::stop_token sibling_failed) { return receiver.receive(transport::kForever, sibling_failed); });
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("failed elsewhere"), std::string::npos) << r.error().message;
  EXPECT_LT(late_ms, 50.0);
  EXPECT_FALSE(cancel.requested());
  // The channel is whole: the next message arrives and decodes.
  const Peer sender = peer_on(*pair->a, nullptr);
  ASSERT_TRUE(sender.send(RoundEnd{.round = 3, .flags = kRoundEndFinal}).ok());
  auto end = receiver.expect<RoundEnd>(Timeout(5000));
  ASSERT_TRUE(end.ok()) << end.error().message;
  EXPECT_EQ(end->round, 3u);
}

TEST(Waits, CancelEndsASessionAcceptAtOnce) {
  auto listener = transport::listen("tcp:127.0.0.1:0", {});
  ASSERT_TRUE(listener.ok()) << listener.error().message;
  Cancel cancel;
  auto [s, late_ms] = wait_cancelled_later(cancel, [&] {
    return transport::accept_session(**listener, transport::SessionConfig{}, Timeout(20000), cancel.token());
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, ECANCELED) << s.error().message;
  EXPECT_NE(s.error().message.find((*listener)->address()), std::string::npos) << s.error().message;
  EXPECT_LT(late_ms, 50.0);
}

}  // namespace
}  // namespace lm::engine
