// Sessions: handshake and negotiation, channels placed by (session, role,
// index) not arrival order, page batches across 1..4 bulk channels on every
// backend, the rejections (version, codecs, pre-shared key), and the mutual
// authentication: wrong or one-sided keys, replayed handshakes in both
// directions, a channel of another key's session.
#include <atomic>
#include <cstring>
#include <thread>

#include "tests/transport/helpers.hpp"
#include "transport/session.hpp"

namespace lm::transport {
namespace {

constexpr uint64_t kBase = 0x7f1200000000;
constexpr size_t kPages = 2048;

MappingTable mappings() {
  auto t = MappingTable::make({{kBase, kBase + kPages * kPageSize, 3, 0}}, 1);
  EXPECT_TRUE(t.ok());
  return *t;
}

// Where the destination gets channels from and how the source dials them,
// for every backend (in-process pairs go through an in-process link).
struct Endpoints {
  Session::Dialer dial;
  std::unique_ptr<Listener> listener;
  Result<std::unique_ptr<Channel>> accept(Timeout t) { return listener->accept(t); }
};

std::unique_ptr<Endpoints> endpoints(const std::string& variant, ChannelOptions options) {
  std::string backend = testing::apply_variant(variant, options);
  auto e = std::make_unique<Endpoints>();
  if (backend == "inproc") {
    auto link = make_inproc_link(options);
    e->listener = std::move(link.listener);
    e->dial = std::move(link.dial);
    return e;
  }
  auto l = listen(backend + ":127.0.0.1:0", options);
  EXPECT_TRUE(l.ok()) << l.error().message;
  e->listener = std::move(*l);
  std::string address = e->listener->address();
  e->dial = [address, options](Timeout t) { return connect(address, options, t); };
  return e;
}

Result<Session> accept_one(Endpoints& ep, const SessionConfig& config, Timeout timeout) {
  SessionAcceptor acceptor(config);
  for (;;) {
    auto ch = LM_TRY(ep.accept(timeout));
    auto s = LM_TRY(acceptor.offer(std::move(ch)));
    if (s) return std::move(*s);
  }
}

struct Pair {
  Result<Session> source = Error::msg("not run");
  Result<Session> dest = Error::msg("not run");
};

Pair establish(const std::string& backend, const SessionConfig& src, const SessionConfig& dst,
               std::vector<uint16_t> order = {}) {
  auto ep = endpoints(backend, src.channel);
  Pair p;
  std::thread server([&] { p.dest = accept_one(*ep, dst, Timeout(3000)); });
  p.source = Session::connect_with(ep->dial, src, mappings(), order);
  server.join();
  return p;
}

using SessionParam = std::tuple<std::string, int>;

class SessionTest : public ::testing::TestWithParam<SessionParam> {};

// Page content derived from its address, so the receiver can check every byte.
void page_content(std::byte* out, uint64_t addr) { testing::fill_pattern(out, kPageSize, addr); }

TEST_P(SessionTest, PageBatchesAcrossBulkChannelsArriveIntact) {
  auto [backend, nbulk] = GetParam();
  SessionConfig config;
  config.bulk_channels = uint16_t(nbulk);
  config.psk = "shared secret";
  // Dial bulk channels in reverse: the destination must place them by index.
  std::vector<uint16_t> order;
  for (int i = nbulk - 1; i >= 0; --i) order.push_back(uint16_t(i));
  Pair p = establish(backend, config, config, order);
  ASSERT_TRUE(p.source.ok()) << p.source.error().message;
  ASSERT_TRUE(p.dest.ok()) << p.dest.error().message;
  Session& src = *p.source;
  Session& dst = *p.dest;
  EXPECT_EQ(src.negotiated().session_id, dst.negotiated().session_id);
  EXPECT_TRUE(src.negotiated().authenticated);
  EXPECT_TRUE(dst.negotiated().authenticated);
  ASSERT_EQ(dst.bulk_count(), size_t(nbulk));
  for (int i = 0; i < nbulk; ++i)
    EXPECT_EQ(dst.bulk(i).name().rfind("bulk" + std::to_string(i) + " ", 0), 0u) << dst.bulk(i).name();
  EXPECT_EQ(dst.mappings().entries().size(), 1u);
  uint16_t version = src.negotiated().version;
  uint32_t codecs = dst.negotiated().codecs;

  constexpr size_t kBatchPages = 32;
  constexpr size_t kBatches = kPages / kBatchPages;
  // Batch k goes to bulk channel k % N; every third page is a zero page.
  std::thread sender([&] {
    std::vector<PageEntry> entries;
    std::vector<std::byte> payload;
    OutMessage m;
    for (size_t k = 0; k < kBatches; ++k) {
      entries.clear();
      payload.clear();
      for (size_t i = 0; i < kBatchPages; ++i) {
        uint64_t addr = kBase + (k * kBatchPages + i) * kPageSize;
        bool zero = (k * kBatchPages + i) % 3 == 0;
        entries.push_back({addr, zero ? 0u : uint32_t(kPageSize), zero ? Codec::zero : Codec::raw, 0, 0});
        if (!zero) {
          payload.resize(payload.size() + kPageSize);
          page_content(payload.data() + payload.size() - kPageSize, addr);
        }
      }
      encode_page_batch(m, version, 0, entries, payload);
      ASSERT_TRUE(send_message(src.bulk(k % nbulk), m, Timeout(5000)).ok());
    }
    encode_round_end(m, version, RoundEndBody{0, 1, kPages, 0, 0, 0, 0, kBatches});
    ASSERT_TRUE(send_message(src.control(), m, Timeout(5000)).ok());
  });

  std::vector<std::thread> receivers;
  std::vector<size_t> pages_seen(nbulk, 0);
  for (int c = 0; c < nbulk; ++c) {
    receivers.emplace_back([&, c] {
      std::vector<std::byte> want(kPageSize);
      size_t batches = kBatches / nbulk + (size_t(c) < kBatches % nbulk ? 1 : 0);
      for (size_t k = 0; k < batches; ++k) {
        auto msg = recv_message(dst.bulk(c), Timeout(5000));
        ASSERT_TRUE(msg.ok()) << msg.error().message;
        auto batch = decode_page_batch(*msg, dst.mappings(), codecs);
        ASSERT_TRUE(batch.ok()) << batch.error().message;
        size_t at = 0;
        for (const PageEntry& e : batch->entries) {
          ASSERT_EQ((e.addr - kBase) / kPageSize / kBatchPages % nbulk, size_t(c)) << "batch on the wrong channel";
          if (e.codec == Codec::raw) {
            page_content(want.data(), e.addr);
            ASSERT_EQ(std::memcmp(batch->payload.data() + at, want.data(), kPageSize), 0);
          }
          at += e.length;
          ++pages_seen[c];
        }
      }
    });
  }
  auto end = recv_message(dst.control(), Timeout(10000));
  sender.join();
  for (auto& t : receivers) t.join();
  ASSERT_TRUE(end.ok()) << end.error().message;
  auto re = decode_round_end(*end);
  ASSERT_TRUE(re.ok());
  size_t total = 0;
  for (size_t n : pages_seen) total += n;
  EXPECT_EQ(total, re->pages);

  std::thread closer([&] { EXPECT_TRUE(dst.close(Timeout(5000)).ok()); });
  EXPECT_TRUE(src.close(Timeout(5000)).ok());
  closer.join();
}

// The engine's source dials every channel after the control channel at
// once: each still lands in its own slot, and carries what is sent on it.
TEST_P(SessionTest, ConcurrentDialingFillsEverySlot) {
  auto [backend, nbulk] = GetParam();
  SessionConfig config;
  config.bulk_channels = uint16_t(nbulk);
  config.dialing = Dialing::concurrent;
  Pair p = establish(backend, config, config);
  ASSERT_TRUE(p.source.ok()) << p.source.error().message;
  ASSERT_TRUE(p.dest.ok()) << p.dest.error().message;
  Session& src = *p.source;
  Session& dst = *p.dest;
  EXPECT_EQ(src.negotiated().session_id, dst.negotiated().session_id);
  ASSERT_EQ(dst.bulk_count(), size_t(nbulk));
  auto check = [&](Channel& from, Channel& to, uint64_t word) {
    EXPECT_EQ(to.name().substr(0, to.name().find(' ')), from.name().substr(0, from.name().find(' ')));
    ConstBuffer piece{&word, sizeof word};
    ASSERT_TRUE(send_sync(from, {&piece, 1}, Timeout(5000)).ok());
    auto r = to.recv(Timeout(5000));
    ASSERT_TRUE(r.ok()) << r.error().message;
    ASSERT_EQ(r->bytes.size(), sizeof word);
    uint64_t got = 0;
    std::memcpy(&got, r->bytes.data(), sizeof got);
    EXPECT_EQ(got, word) << to.name();
  };
  check(src.control(), dst.control(), 1);
  check(src.priority(), dst.priority(), 2);
  for (int i = 0; i < nbulk; ++i) check(src.bulk(i), dst.bulk(i), 100 + uint64_t(i));
}

// One of the concurrent dials fails: the session is not made and the error
// names that channel.
TEST(SessionConcurrentDialing, AFailedDialIsTheSessionsError) {
  auto link = make_inproc_link({});
  std::atomic<int> dials{0};
  Session::Dialer fails_one = [&](Timeout t) -> Result<std::unique_ptr<Channel>> {
    if (++dials == 3) return Error::sys(ECONNRESET, "cut on purpose");
    return link.dial(t);
  };
  SessionConfig config;
  config.bulk_channels = 3;
  config.dialing = Dialing::concurrent;
  std::atomic<bool> stop{false};
  std::thread server([&] {
    SessionAcceptor acceptor(config);
    while (!stop) {
      auto ch = link.listener->accept(Timeout(100));
      if (ch) (void)acceptor.offer(std::move(*ch));
    }
  });
  auto s = Session::connect_with(fails_one, config, mappings());
  stop = true;
  server.join();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message.find("cut on purpose"), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("channel"), std::string::npos) << s.error().message;
  EXPECT_EQ(dials.load(), 2 + 3) << "every channel was dialled";
}

std::string session_param_name(const ::testing::TestParamInfo<SessionParam>& info) {
  return std::get<0>(info.param) + "_" + std::to_string(std::get<1>(info.param)) + "bulk";
}

INSTANTIATE_TEST_SUITE_P(BackendsAndBulk, SessionTest,
                         ::testing::Combine(::testing::ValuesIn(testing::test_backends()), ::testing::Values(1, 2, 3, 4)),
                         session_param_name);

class HandshakeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(HandshakeTest, VersionMismatchNamesBothSides) {
  SessionConfig src, dst;
  src.version_min = 1;
  src.version_max = 1;
  dst.version_min = 2;
  dst.version_max = 3;
  Pair p = establish(GetParam(), src, dst);
  ASSERT_FALSE(p.source.ok());
  ASSERT_FALSE(p.dest.ok());
  for (const Error* e : {&p.source.error(), &p.dest.error()})
    EXPECT_NE(e->message.find("no common protocol version: source supports 1..1, destination 2..3"),
              std::string::npos)
        << e->message;
}

TEST_P(HandshakeTest, NegotiatesHighestCommonVersionAndCommonCodecs) {
  SessionConfig src, dst;
  src.version_min = 1;
  src.version_max = 1;
  dst.version_min = 1;
  src.codecs = (1u << unsigned(Codec::raw)) | (1u << unsigned(Codec::zero)) | (1u << unsigned(Codec::lz4));
  dst.codecs = (1u << unsigned(Codec::raw)) | (1u << unsigned(Codec::lz4)) | (1u << unsigned(Codec::zstd));
  Pair p = establish(GetParam(), src, dst);
  ASSERT_TRUE(p.source.ok()) << p.source.error().message;
  ASSERT_TRUE(p.dest.ok()) << p.dest.error().message;
  uint32_t common = (1u << unsigned(Codec::raw)) | (1u << unsigned(Codec::lz4));
  EXPECT_EQ(p.source->negotiated().codecs, common);
  EXPECT_EQ(p.dest->negotiated().codecs, common);
  EXPECT_EQ(p.dest->negotiated().version, 1);
}

TEST_P(HandshakeTest, NoCommonCodecIsAClearError) {
  SessionConfig src, dst;
  src.codecs = 1u << unsigned(Codec::lz4);
  dst.codecs = (1u << unsigned(Codec::raw)) | (1u << unsigned(Codec::zstd));
  Pair p = establish(GetParam(), src, dst);
  ASSERT_FALSE(p.source.ok());
  EXPECT_NE(p.source.error().message.find("source {lz4}, destination {raw,zstd}"), std::string::npos)
      << p.source.error().message;
}

// Both errors are EACCES, say what happened and name the channel (so the
// peer's address on a socket backend).
void expect_key_error(const Result<Session>& r, const std::string& what, const std::string& backend) {
  ASSERT_FALSE(r.ok()) << "expected: " << what;
  EXPECT_EQ(r.error().code, EACCES) << r.error().message;
  EXPECT_NE(r.error().message.find(what), std::string::npos) << r.error().message;
  const std::string peer = testing::is_socket_backend(backend) ? "127.0.0.1:" : "inproc";
  EXPECT_NE(r.error().message.find(peer), std::string::npos) << r.error().message;
}

TEST_P(HandshakeTest, WrongPreSharedKeyRejectedOnBothSides) {
  for (auto [src_key, dst_key] : {std::pair{"guess guess guess", "the real key, 16+"},
                                  std::pair{"the real key, 16+", "guess guess guess"}}) {
    SessionConfig src, dst;
    src.psk = src_key;
    dst.psk = dst_key;
    Pair p = establish(GetParam(), src, dst);
    // The source checks the destination's proof first and tells it why.
    expect_key_error(p.source, "pre-shared key mismatch: the destination's proof did not verify", GetParam());
    expect_key_error(p.dest, "peer reported: pre-shared key mismatch: the destination's proof did not verify",
                     GetParam());
  }
}

TEST_P(HandshakeTest, KeyOnOneSideOnlyRejectedOnBothSides) {
  SessionConfig keyed, none;
  keyed.psk = "only one side has it";
  Pair a = establish(GetParam(), keyed, none);
  expect_key_error(a.source, "pre-shared key mismatch: the source has a key, the destination none", GetParam());
  expect_key_error(a.dest, "pre-shared key mismatch: the source has a key, the destination none", GetParam());
  Pair b = establish(GetParam(), none, keyed);
  expect_key_error(b.source, "pre-shared key mismatch: the destination has a key, the source none", GetParam());
  expect_key_error(b.dest, "pre-shared key mismatch: the destination has a key, the source none", GetParam());
}

TEST_P(HandshakeTest, NoKeyOnEitherSideIsUnauthenticated) {
  Pair p = establish(GetParam(), SessionConfig{}, SessionConfig{});
  ASSERT_TRUE(p.source.ok()) << p.source.error().message;
  ASSERT_TRUE(p.dest.ok()) << p.dest.error().message;
  EXPECT_FALSE(p.source->negotiated().authenticated);
  EXPECT_FALSE(p.dest->negotiated().authenticated);
}

TEST_P(HandshakeTest, PageSizeMismatchRejected) {
  SessionConfig src, dst;
  dst.page_size = 16384;
  Pair p = establish(GetParam(), src, dst);
  ASSERT_FALSE(p.source.ok());
  EXPECT_NE(p.source.error().message.find("page size mismatch: source 4096, destination 16384"), std::string::npos)
      << p.source.error().message;
}

TEST(InprocLinkTest, AcceptTimesOutAndADialAfterTheListenerIsGoneIsRefused) {
  auto link = make_inproc_link(ChannelOptions{}, "lonely");
  auto none = link.listener->accept(Timeout(20));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ETIMEDOUT);
  EXPECT_EQ(link.listener->address(), "inproc:lonely");
  auto first = link.dial(Timeout(100));
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto accepted = link.listener->accept(Timeout(100));
  ASSERT_TRUE(accepted.ok()) << accepted.error().message;
  link.listener.reset();
  auto late = link.dial(Timeout(100));
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code, ECONNREFUSED);
  EXPECT_NE(late.error().message.find("lonely"), std::string::npos) << late.error().message;
}

TEST(SessionAcceptorTest, TwoSessionsInterleavedOnOneAcceptorAreKeptApart) {
  SessionConfig config;
  config.bulk_channels = 2;
  auto ep = endpoints("inproc", config.channel);
  Result<Session> s1 = Error::msg("not run"), s2 = Error::msg("not run");
  std::vector<Session> done;
  std::thread server([&] {
    SessionAcceptor acceptor(config);
    while (done.size() < 2) {
      auto ch = ep->accept(Timeout(5000));
      ASSERT_TRUE(ch.ok()) << ch.error().message;
      auto s = acceptor.offer(std::move(*ch));
      ASSERT_TRUE(s.ok()) << s.error().message;
      if (*s) done.push_back(std::move(**s));
    }
  });
  std::thread c1([&] { s1 = Session::connect_with(ep->dial, config, mappings()); });
  std::thread c2([&] { s2 = Session::connect_with(ep->dial, config, mappings(), {1, 0}); });
  c1.join();
  c2.join();
  server.join();
  ASSERT_TRUE(s1.ok() && s2.ok());
  ASSERT_EQ(done.size(), 2u);
  EXPECT_NE(done[0].negotiated().session_id, done[1].negotiated().session_id);
  // Each destination session talks to the source session with the same id.
  for (Session& d : done) {
    Session& s = d.negotiated().session_id == s1->negotiated().session_id ? *s1 : *s2;
    uint64_t id = s.negotiated().session_id;
    ConstBuffer piece{&id, sizeof id};
    ASSERT_TRUE(send_sync(s.bulk(1), {&piece, 1}, Timeout(1000)).ok());
    auto r = d.bulk(1).recv(Timeout(1000));
    ASSERT_TRUE(r.ok());
    uint64_t got;
    std::memcpy(&got, r->bytes.data(), sizeof got);
    EXPECT_EQ(got, d.negotiated().session_id);
  }
}

// A SessionServer (livemig dest --sessions): two sources complete while
// nobody waits, and neither is dropped; a caller that wants one id gets that
// session whatever completed first; two callers at once get one each; a
// caller with nothing left to take times out, naming the listener.
TEST(SessionServerTest, SessionsAreKeptForTheirTakerAndHandedOutOnce) {
  SessionConfig config;
  config.bulk_channels = 2;
  auto ep = endpoints("inproc", config.channel);
  SessionServer server(*ep->listener, config);
  Result<Session> s1 = Error::msg("not run"), s2 = Error::msg("not run"), s3 = Error::msg("not run");
  {
    std::thread c1([&] { s1 = Session::connect_with(ep->dial, config, mappings()); });
    std::thread c2([&] { s2 = Session::connect_with(ep->dial, config, mappings(), {1, 0}); });
    c1.join();
    c2.join();
  }
  ASSERT_TRUE(s1.ok()) << s1.error().message;
  ASSERT_TRUE(s2.ok()) << s2.error().message;
  const uint64_t id1 = s1->negotiated().session_id, id2 = s2->negotiated().session_id;
  // Both complete now, no one has asked yet: the second is taken by id first.
  auto second = server.next(Timeout(3000), {}, [&](uint64_t id) { return id == id2; });
  ASSERT_TRUE(second.ok()) << second.error().message;
  EXPECT_EQ(second->negotiated().session_id, id2);
  auto first = server.next(Timeout(3000));
  ASSERT_TRUE(first.ok()) << "a session completed while nobody waited is kept: " << first.error().message;
  EXPECT_EQ(first->negotiated().session_id, id1);
  auto none = server.next(Timeout(50), {}, [&](uint64_t id) { return id != id1 && id != id2; });
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ETIMEDOUT);
  EXPECT_NE(none.error().message.find(ep->listener->address()), std::string::npos) << none.error().message;

  // Two waiters at once, then a third source: one waiter gets it, the other
  // times out; nothing is handed out twice.
  Result<Session> w1 = Error::msg("not run"), w2 = Error::msg("not run");
  std::thread a([&] { w1 = server.next(Timeout(1500)); });
  std::thread b([&] { w2 = server.next(Timeout(1500)); });
  s3 = Session::connect_with(ep->dial, config, mappings());
  a.join();
  b.join();
  ASSERT_TRUE(s3.ok()) << s3.error().message;
  EXPECT_NE(w1.ok(), w2.ok()) << "exactly one waiter takes the third session";
  const Result<Session>& got = w1.ok() ? w1 : w2;
  if (got.ok()) EXPECT_EQ(got->negotiated().session_id, s3->negotiated().session_id);
}

// A post-copy recovery dials the session again under its old id; an earlier
// attempt that broke after joining some channels must not block it.
TEST(SessionAcceptorTest, RedialUnderTheSameIdAfterAPartialAttempt) {
  SessionConfig config;
  config.bulk_channels = 2;
  auto ep = endpoints("inproc", config.channel);
  std::optional<Session> joined;
  std::string server_error;
  std::thread server([&] {
    SessionAcceptor acceptor(config);
    while (!joined) {
      auto ch = ep->accept(Timeout(5000));
      if (!ch) {
        server_error = ch.error().message;
        return;
      }
      auto s = acceptor.offer(std::move(*ch));
      if (s.ok() && *s) joined = std::move(**s);
    }
  });
  int dials = 0;
  Session::Dialer breaks_at_third = [&](Timeout t) -> Result<std::unique_ptr<Channel>> {
    if (++dials == 3) return Error::sys(ECONNRESET, "cut on purpose");
    return ep->dial(t);
  };
  config.session_id = 0x5eed0000cafe;
  auto first = Session::connect_with(breaks_at_third, config, mappings());
  ASSERT_FALSE(first.ok()) << "the first attempt loses its first bulk channel";
  auto second = Session::connect_with(ep->dial, config, mappings());
  server.join();
  ASSERT_TRUE(second.ok()) << second.error().message;
  ASSERT_TRUE(joined.has_value()) << server_error;
  EXPECT_EQ(second->negotiated().session_id, 0x5eed0000cafeu);
  EXPECT_EQ(joined->negotiated().session_id, 0x5eed0000cafeu);
  // Every slot, control and priority included, is the second attempt's.
  uint64_t word = 42;
  ConstBuffer piece{&word, sizeof word};
  for (auto slot : {&Session::control, &Session::priority}) {
    ASSERT_TRUE(send_sync(((*second).*slot)(), {&piece, 1}, Timeout(1000)).ok());
    auto r = ((*joined).*slot)().recv(Timeout(1000));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->bytes.size(), sizeof word);
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, HandshakeTest, ::testing::ValuesIn(testing::test_backends()),
                         testing::backend_param_name);

// --- replays and splices ------------------------------------------------------------------

// Passes everything to a real channel and keeps a copy of every message sent
// through it: a wiretap on one side of the link.
class RecordingChannel final : public Channel {
 public:
  RecordingChannel(std::unique_ptr<Channel> inner, std::vector<std::vector<std::byte>>& sent)
      : inner_(std::move(inner)), sent_(sent) {}
  using Channel::recv;
  using Channel::wait_sent;
  Result<uint64_t> send(std::span<const ConstBuffer> pieces, Timeout timeout) override {
    std::vector<std::byte> copy;
    for (const auto& p : pieces) {
      const auto* b = static_cast<const std::byte*>(p.data);
      copy.insert(copy.end(), b, b + p.size);
    }
    sent_.push_back(std::move(copy));
    return inner_->send(pieces, timeout);
  }
  uint64_t send_completed() override { return inner_->send_completed(); }
  Result<void> wait_sent(uint64_t seq, Timeout timeout, std::stop_token stop) override {
    return inner_->wait_sent(seq, timeout, std::move(stop));
  }
  Result<Received> recv(Timeout timeout, std::stop_token stop) override {
    return inner_->recv(timeout, std::move(stop));
  }
  Result<void> close(Timeout timeout) override { return inner_->close(timeout); }
  const std::string& name() const override { return inner_->name(); }
  void set_name(std::string name) override { inner_->set_name(std::move(name)); }

 private:
  std::unique_ptr<Channel> inner_;
  std::vector<std::vector<std::byte>>& sent_;
};

void send_recorded(Channel& ch, const std::vector<std::byte>& m) {
  ConstBuffer piece{m.data(), m.size()};
  EXPECT_TRUE(send_sync(ch, {&piece, 1}, Timeout(1000)).ok());
}

// The types of the messages `ch` receives until an error message (its text
// into `told`), a close or a timeout.
std::vector<MsgType> received_until_error(Channel& ch, std::string& told) {
  std::vector<MsgType> types;
  for (;;) {
    auto m = recv_message(ch, Timeout(3000));
    if (!m) return types;
    types.push_back(m->type);
    if (m->type == MsgType::error) {
      told = peer_error(*m, "wiretapper").message;
      return types;
    }
  }
}

class ReplayTest : public ::testing::TestWithParam<std::string> {};

// A wiretapper recorded a whole authenticated handshake of the source's
// control channel and sends it again: the destination's fresh nonce makes
// the recorded proof worthless.
TEST_P(ReplayTest, RecordedSourceHandshakeFailsAgainstAFreshDestinationNonce) {
  SessionConfig config;
  config.psk = "replay me if you can";
  auto ep = endpoints(GetParam(), config.channel);
  std::vector<std::vector<std::byte>> control_sent;
  int dials = 0;
  Session::Dialer tapped = [&](Timeout t) -> Result<std::unique_ptr<Channel>> {
    auto ch = LM_TRY(ep->dial(t));
    if (++dials > 1) return ch;
    return std::unique_ptr<Channel>(std::make_unique<RecordingChannel>(std::move(ch), control_sent));
  };
  Result<Session> dest = Error::msg("not run");
  std::thread server([&] { dest = accept_one(*ep, config, Timeout(3000)); });
  auto source = Session::connect_with(tapped, config, mappings());
  server.join();
  ASSERT_TRUE(source.ok()) << source.error().message;
  ASSERT_TRUE(dest.ok()) << dest.error().message;
  ASSERT_EQ(control_sent.size(), 3u) << "hello, auth, mappings";

  Result<std::optional<Session>> replayed = Error::msg("not run");
  std::thread server2([&] {
    SessionAcceptor acceptor(config);
    auto ch = ep->accept(Timeout(3000));
    if (!ch) {
      replayed = std::move(ch).error();
      return;
    }
    replayed = acceptor.offer(std::move(*ch));
  });
  auto raw = ep->dial(Timeout(3000));
  ASSERT_TRUE(raw.ok()) << raw.error().message;
  for (const auto& m : control_sent) send_recorded(**raw, m);
  std::string told;
  auto types = received_until_error(**raw, told);
  server2.join();
  ASSERT_FALSE(replayed.ok()) << "a replayed handshake joined a session";
  EXPECT_EQ(replayed.error().code, EACCES);
  EXPECT_NE(replayed.error().message.find("the source's proof did not verify (a wrong key, or a replayed"),
            std::string::npos)
      << replayed.error().message;
  EXPECT_EQ(types, (std::vector<MsgType>{MsgType::hello, MsgType::auth, MsgType::error}));
  EXPECT_NE(told.find("pre-shared key mismatch: the source's proof did not verify"), std::string::npos) << told;
}

// A destination without the key replays what a real destination sent in an
// earlier handshake: the source's fresh nonce makes the proof fail, and the
// impostor gets an error and nothing else (no proof of the source's, no mappings).
TEST_P(ReplayTest, SourceRefusesADestinationThatCannotProveTheKey) {
  SessionConfig config;
  config.psk = "the destination must know this";
  auto ep = endpoints(GetParam(), config.channel);
  std::vector<std::vector<std::byte>> dest_sent;
  Result<Session> dest = Error::msg("not run");
  std::thread server([&] {
    SessionAcceptor acceptor(config);
    for (int n = 0;; ++n) {
      auto ch = ep->accept(Timeout(3000));
      if (!ch) {
        dest = std::move(ch).error();
        return;
      }
      std::unique_ptr<Channel> c = std::move(*ch);
      if (n == 0) c = std::make_unique<RecordingChannel>(std::move(c), dest_sent);
      auto s = acceptor.offer(std::move(c));
      if (!s) {
        dest = std::move(s).error();
        return;
      }
      if (*s) {
        dest = std::move(**s);
        return;
      }
    }
  });
  auto first = Session::connect_with(ep->dial, config, mappings());
  server.join();
  ASSERT_TRUE(first.ok()) << first.error().message;
  ASSERT_TRUE(dest.ok()) << dest.error().message;
  ASSERT_EQ(dest_sent.size(), 3u) << "hello, auth, accept";

  std::string told;
  std::vector<MsgType> types;
  std::thread impostor([&] {
    auto ch = ep->accept(Timeout(3000));
    ASSERT_TRUE(ch.ok()) << ch.error().message;
    auto hello = recv_message(**ch, Timeout(3000));
    ASSERT_TRUE(hello.ok()) << hello.error().message;
    send_recorded(**ch, dest_sent[0]);
    send_recorded(**ch, dest_sent[1]);
    types = received_until_error(**ch, told);
  });
  auto second = Session::connect_with(ep->dial, config, mappings());
  impostor.join();
  expect_key_error(second, "pre-shared key mismatch: the destination's proof did not verify", GetParam());
  EXPECT_EQ(types, std::vector<MsgType>{MsgType::error}) << "the source sent more than its refusal";
  EXPECT_NE(told.find("the destination's proof did not verify"), std::string::npos) << told;
}

INSTANTIATE_TEST_SUITE_P(InprocAndTcp, ReplayTest, ::testing::Values("inproc", "tcp"), testing::backend_param_name);

// Session A (key K1) has joined its control and priority channels at a K1
// destination; a source holding K2 claims A's bulk slot (A's session id) with
// a bulk channel whose control and priority went to a K2 destination. The
// channel is refused, and A completes with its own bulk channel.
TEST(SessionAuthTest, BulkChannelOfAnotherKeysSessionCannotJoin) {
  SessionConfig k1;
  k1.psk = "first key, long enough";
  k1.session_id = 0xa11ce;
  SessionConfig k2 = k1;
  k2.psk = "second key, long enough";
  auto d1 = endpoints("inproc", k1.channel);
  auto d2 = endpoints("inproc", k2.channel);
  std::vector<std::string> d1_errors;
  std::optional<Session> d1_session;
  std::thread server1([&] {
    SessionAcceptor acceptor(k1);
    while (!d1_session) {
      auto ch = d1->accept(Timeout(5000));
      if (!ch) return;
      auto s = acceptor.offer(std::move(*ch));
      if (!s) d1_errors.push_back(s.error().message);
      else if (*s) d1_session = std::move(**s);
    }
  });
  std::thread server2([&] {  // takes the intruder's control and priority channels
    SessionAcceptor acceptor(k2);
    for (int i = 0; i < 2; ++i) {
      auto ch = d2->accept(Timeout(5000));
      if (!ch) return;
      EXPECT_TRUE(acceptor.offer(std::move(*ch)).ok());
    }
  });
  std::optional<Result<Session>> intruder;
  int a_dials = 0;
  Session::Dialer a_dial = [&](Timeout t) -> Result<std::unique_ptr<Channel>> {
    if (++a_dials == 3) {  // A's control and priority joined; before A's bulk0
      int b_dials = 0;
      Session::Dialer b_dial = [&](Timeout bt) { return ++b_dials <= 2 ? d2->dial(bt) : d1->dial(bt); };
      intruder = Session::connect_with(b_dial, k2, mappings());
    }
    return d1->dial(t);
  };
  auto a = Session::connect_with(a_dial, k1, mappings());
  server1.join();
  server2.join();
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(intruder.has_value());
  expect_key_error(*intruder, "bulk0 inproc", "inproc");
  EXPECT_NE(intruder->error().message.find("the destination's proof did not verify"), std::string::npos)
      << intruder->error().message;
  ASSERT_EQ(d1_errors.size(), 1u);
  EXPECT_NE(d1_errors[0].find("peer reported: pre-shared key mismatch"), std::string::npos) << d1_errors[0];
  ASSERT_TRUE(d1_session.has_value());
  EXPECT_EQ(d1_session->negotiated().session_id, 0xa11ceu);
  // A's bulk channel is the one that joined: its data arrives.
  uint64_t word = 0xb0b;
  ConstBuffer piece{&word, sizeof word};
  ASSERT_TRUE(send_sync(a->bulk(0), {&piece, 1}, Timeout(1000)).ok());
  auto r = d1_session->bulk(0).recv(Timeout(1000));
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->bytes.size(), sizeof word);
}

TEST(SessionAuthTest, KeylessSessionOffLoopbackIsRefusedUnlessInsecure) {
  SessionConfig none;
  for (const char* address : {"tcp:0.0.0.0:7000", "tcp:[::]:7000", "uring:10.1.2.3:7000", "tcp:192.168.0.1:1",
                              "dpdk:af_packet:veth0"}) {
    auto r = check_key_for_address(address, none, "listen on");
    ASSERT_FALSE(r.ok()) << address;
    EXPECT_NE(r.error().message.find(std::string("refusing to listen on ") + address +
                                     " without a pre-shared key"),
              std::string::npos)
        << r.error().message;
    EXPECT_NE(r.error().message.find("--psk-file"), std::string::npos);
    EXPECT_NE(r.error().message.find("--insecure"), std::string::npos);
  }
  for (const char* address : {"tcp:127.0.0.1:7000", "uring:127.0.0.2:0", "tcp:[::1]:7000", "dpdk:127.0.0.1:0",
                              "dpdk:memif:/tmp/x.sock"})
    EXPECT_TRUE(check_key_for_address(address, none, "connect to").ok()) << address;
  SessionConfig keyed;
  keyed.psk = "a key of 16 bytes";
  EXPECT_TRUE(check_key_for_address("tcp:0.0.0.0:7000", keyed, "listen on").ok());
  SessionConfig insecure;
  insecure.unauthenticated = Unauthenticated::allowed;
  EXPECT_TRUE(check_key_for_address("tcp:0.0.0.0:7000", insecure, "listen on").ok());
}

}  // namespace
}  // namespace lm::transport
