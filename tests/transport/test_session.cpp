// Sessions: handshake and negotiation, channels placed by (session, role,
// index) not arrival order, page batches across 1..4 bulk channels on every
// backend, and the rejections (version, codecs, pre-shared key).
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
  src.version_max = 1;
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

TEST_P(HandshakeTest, WrongPreSharedKeyRejected) {
  SessionConfig src, dst;
  src.psk = "guess";
  dst.psk = "the real key";
  Pair p = establish(GetParam(), src, dst);
  ASSERT_FALSE(p.source.ok());
  ASSERT_FALSE(p.dest.ok());
  EXPECT_NE(p.source.error().message.find("pre-shared key mismatch"), std::string::npos) << p.source.error().message;
  EXPECT_EQ(p.source.error().code, EACCES);
  EXPECT_NE(p.dest.error().message.find("pre-shared key mismatch"), std::string::npos) << p.dest.error().message;

  SessionConfig none;
  Pair q = establish(GetParam(), none, dst);
  ASSERT_FALSE(q.source.ok());
  EXPECT_NE(q.source.error().message.find("pre-shared key mismatch"), std::string::npos);
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

}  // namespace
}  // namespace lm::transport
