// TLS 1.3 channels (transport/tls_channel.*) over tcp and uring, with a
// pre-shared key and with mutual X.509: data integrity, failures that name
// what failed, deadlines and stops during the handshake.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <random>
#include <thread>

#include "tests/transport/helpers.hpp"
#include "tests/transport/tls_certs.hpp"
#include "transport/tls_channel.hpp"

namespace lm::transport {
namespace {

using testing::fill_pattern;

std::vector<std::byte> key_bytes(uint8_t seed) {
  std::vector<std::byte> k(32);
  for (size_t i = 0; i < k.size(); ++i) k[i] = std::byte(seed + i * 7);
  return k;
}

// Two credential directories with different CAs, made once per run.
class TlsCreds : public ::testing::Environment {
 public:
  static inline std::string root, ca_a, ca_b;
  void SetUp() override {
    char tmpl[] = "/tmp/lm-tls-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root = tmpl;
    ca_a = root + "/a";
    ca_b = root + "/b";
    auto a = testing::write_test_creds(ca_a, "livemig test CA A");
    ASSERT_TRUE(a.ok()) << a.error().message;
    auto b = testing::write_test_creds(ca_b, "livemig test CA B");
    ASSERT_TRUE(b.ok()) << b.error().message;
  }
  void TearDown() override { std::filesystem::remove_all(root); }
};
const auto* const kCredsEnv = ::testing::AddGlobalTestEnvironment(new TlsCreds);

std::shared_ptr<const TlsConfig> make_config(const std::string& kind, const std::string& dir = TlsCreds::ca_a,
                                             uint8_t psk_seed = 1) {
  auto c = kind == "psk" ? TlsConfig::psk(key_bytes(psk_seed)) : TlsConfig::x509(dir);
  EXPECT_TRUE(c.ok()) << c.error().message;
  return c.ok() ? *c : nullptr;
}

// Dials `listener` with `client_options` and accepts the other end.
Result<ChannelPair> dial(Listener& listener, const ChannelOptions& client_options) {
  std::string address = listener.address();
  auto dialed = std::async(std::launch::async, [&] { return connect(address, client_options, Timeout(5000)); });
  auto accepted = listener.accept(Timeout(5000));
  auto a = dialed.get();
  if (!a) return std::move(a).error();
  if (!accepted) return std::move(accepted).error();
  return ChannelPair{std::move(*a), std::move(*accepted)};
}

// A tcp pair: the listening side with `server`, the dialing side with `client`.
Result<ChannelPair> tcp_pair(const ChannelOptions& server, const ChannelOptions& client) {
  auto listener = LM_TRY(listen("tcp:127.0.0.1:0", server));
  return dial(*listener, client);
}

struct Param {
  std::string backend;  // tcp | uring
  std::string creds;    // psk | x509
};

std::vector<Param> params() {
  std::vector<Param> out;
  std::vector<std::string> backends{"tcp"};
#if LM_HAVE_URING
  backends.push_back("uring");
#endif
  for (const auto& b : backends)
    for (const char* c : {"psk", "x509"}) out.push_back({b, c});
  return out;
}

class TlsTest : public ::testing::TestWithParam<Param> {
 protected:
  ChannelOptions options() {
    ChannelOptions o;
    o.tls = make_config(GetParam().creds);
    return o;
  }
  std::string listen_address() { return GetParam().backend + ":127.0.0.1:0"; }
};

// Messages of 0..n pieces with deterministic content; the receiver checks every byte.
struct Stream {
  std::vector<size_t> sizes;
  void send_all(Channel& ch) {
    std::vector<std::byte> buf(*std::max_element(sizes.begin(), sizes.end()));
    for (size_t i = 0; i < sizes.size(); ++i) {
      fill_pattern(buf.data(), sizes[i], i);
      // Three pieces: a small head, a middle, the rest (record boundaries fall inside pieces).
      size_t a = std::min<size_t>(sizes[i], 24), b = std::min(sizes[i] - a, sizes[i] / 3);
      ConstBuffer pieces[3] = {{buf.data(), a}, {buf.data() + a, b}, {buf.data() + a + b, sizes[i] - a - b}};
      auto sent = send_sync(ch, pieces, Timeout(10000));
      ASSERT_TRUE(sent.ok()) << sent.error().message;
    }
  }
  void recv_all(Channel& ch) {
    std::vector<std::byte> want(*std::max_element(sizes.begin(), sizes.end()));
    for (size_t i = 0; i < sizes.size(); ++i) {
      auto r = ch.recv(Timeout(10000));
      ASSERT_TRUE(r.ok()) << r.error().message;
      ASSERT_EQ(r->status, RecvStatus::message);
      ASSERT_EQ(r->bytes.size(), sizes[i]) << "message " << i;
      EXPECT_EQ(reinterpret_cast<uintptr_t>(r->bytes.data()) % 8, 0u);
      fill_pattern(want.data(), sizes[i], i);
      ASSERT_EQ(std::memcmp(r->bytes.data(), want.data(), sizes[i]), 0) << "message " << i;
    }
  }
};

void exchange_and_close(ChannelPair& p, Stream s) {
  std::thread sender([&] { s.send_all(*p.a); });
  s.recv_all(*p.b);
  sender.join();
  auto closing = std::async(std::launch::async, [&] { return p.a->close(Timeout(5000)); });
  auto end = p.b->recv(Timeout(5000));
  ASSERT_TRUE(end.ok()) << end.error().message;
  EXPECT_EQ(end->status, RecvStatus::closed);
  EXPECT_TRUE(p.b->close(Timeout(5000)).ok());
  EXPECT_TRUE(closing.get().ok());
}

TEST_P(TlsTest, LargeAndSmallMessagesArriveIntactThenCloseHandshake) {
  auto listener = listen(listen_address(), options());
  ASSERT_TRUE(listener.ok()) << listener.error().message;
  auto p = dial(**listener, options());
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ(p->a->name().rfind("tls ", 0), 0u) << p->a->name();
  Stream s;
  std::mt19937 rng(7);
  for (int i = 0; i < 6; ++i) s.sizes.push_back((size_t(3) << 20) + rng() % (2 << 20));  // 3-5 MiB
  for (int i = 0; i < 3000; ++i) s.sizes.push_back(rng() % 200);                          // small, some empty
  s.sizes.push_back(16384 - 8);                                                           // one full record
  s.sizes.push_back(16384 + 1);
  exchange_and_close(*p, s);
}

TEST_P(TlsTest, MessageOfTheLimitPassesAndLargerIsRefused) {
  ChannelOptions o = options();
  o.max_message = 1 << 20;
  auto listener = listen(listen_address(), o);
  ASSERT_TRUE(listener.ok()) << listener.error().message;
  auto p = dial(**listener, o);
  ASSERT_TRUE(p.ok()) << p.error().message;
  std::vector<std::byte> big((1 << 20) + 1);
  ConstBuffer over{big.data(), big.size()};
  auto refused = p->a->send(std::span(&over, 1), Timeout(5000));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, EMSGSIZE) << refused.error().message;
  exchange_and_close(*p, Stream{{1 << 20, 0, 1 << 20}});
}

TEST_P(TlsTest, TwoChannelsBothWaysAtOnce) {
  auto listener = listen(listen_address(), options());
  ASSERT_TRUE(listener.ok()) << listener.error().message;
  auto p1 = dial(**listener, options());
  ASSERT_TRUE(p1.ok()) << p1.error().message;
  auto p2 = dial(**listener, options());
  ASSERT_TRUE(p2.ok()) << p2.error().message;
  Stream s{{1 << 20, 100, 2 << 20, 0, 4096, 1 << 20}};
  // Channel 1 client->server, channel 2 server->client: each handshake is
  // started by a different side's first call (the receiver's on the other).
  ChannelPair reversed{std::move(p2->b), std::move(p2->a)};
  std::thread other([&] { exchange_and_close(reversed, s); });
  exchange_and_close(*p1, s);
  other.join();
}

INSTANTIATE_TEST_SUITE_P(Tls, TlsTest, ::testing::ValuesIn(params()),
                         [](const ::testing::TestParamInfo<Param>& i) { return i.param.backend + "_" + i.param.creds; });

// Runs a handshake by a send from the client and a recv on the server; both results.
struct Both {
  Result<uint64_t> client_send;
  Result<Received> server_recv;
  Result<Received> client_recv;
};
Both handshake_both(ChannelPair& p) {
  uint64_t word = 42;
  ConstBuffer piece{&word, sizeof word};
  auto server = std::async(std::launch::async, [&] { return p.b->recv(Timeout(5000)); });
  auto sent = p.a->send(std::span(&piece, 1), Timeout(5000));
  auto client_recv = sent ? p.a->recv(Timeout(5000)) : Result<Received>(sent.error());
  return Both{std::move(sent), server.get(), std::move(client_recv)};
}

TEST(TlsFailure, WrongPreSharedKeyFailsOnBothSidesNamingTls) {
  ChannelOptions server_opts, client_opts;
  server_opts.tls = make_config("psk", "", 1);
  client_opts.tls = make_config("psk", "", 2);
  auto p = tcp_pair(server_opts, client_opts);
  ASSERT_TRUE(p.ok()) << p.error().message;
  Both r = handshake_both(*p);
  ASSERT_FALSE(r.server_recv.ok());
  std::printf("wrong key, server: %s\n", r.server_recv.error().message.c_str());
  EXPECT_NE(r.server_recv.error().message.find("TLS handshake (server, psk) failed"), std::string::npos)
      << r.server_recv.error().message;
  EXPECT_NE(r.server_recv.error().message.find("tls tcp 127.0.0.1"), std::string::npos) << r.server_recv.error().message;
  EXPECT_NE(r.server_recv.error().message.find("same pre-shared key"), std::string::npos) << r.server_recv.error().message;
  const auto& client_error = r.client_send.ok() ? r.client_recv.error() : r.client_send.error();
  ASSERT_FALSE(r.client_send.ok() && r.client_recv.ok());
  std::printf("wrong key, client: %s\n", client_error.message.c_str());
  EXPECT_NE(client_error.message.find("TLS handshake (client, psk) failed"), std::string::npos) << client_error.message;
}

TEST(TlsFailure, CertificateOfAnotherCaIsRefusedSayingWhy) {
  ChannelOptions server_opts, client_opts;
  server_opts.tls = make_config("x509", TlsCreds::ca_a);
  client_opts.tls = make_config("x509", TlsCreds::ca_b);
  auto p = tcp_pair(server_opts, client_opts);
  ASSERT_TRUE(p.ok()) << p.error().message;
  Both r = handshake_both(*p);
  ASSERT_FALSE(r.client_send.ok() && r.client_recv.ok());
  const auto& client_error = r.client_send.ok() ? r.client_recv.error() : r.client_send.error();
  std::printf("other CA, client: %s\n", client_error.message.c_str());
  // The client checks the server's certificate first: its issuer is unknown.
  EXPECT_NE(client_error.message.find("issuer is unknown"), std::string::npos) << client_error.message;
  ASSERT_FALSE(r.server_recv.ok());
  std::printf("other CA, server: %s\n", r.server_recv.error().message.c_str());
  EXPECT_NE(r.server_recv.error().message.find("TLS handshake (server, x509"), std::string::npos)
      << r.server_recv.error().message;
}

TEST(TlsFailure, MissingCredentialFilesNameTheFile) {
  auto c = TlsConfig::x509(TlsCreds::root + "/nonexistent");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.error().message.find("nonexistent/ca.pem"), std::string::npos) << c.error().message;
  std::vector<std::byte> short_key(8);
  EXPECT_FALSE(TlsConfig::psk(short_key).ok());
}

TEST(TlsFailure, PlaintextPeerAgainstTlsListenerFailsClearlyNotHang) {
  ChannelOptions tls_opts, plain_opts;
  tls_opts.tls = make_config("psk");
  auto p = tcp_pair(tls_opts, plain_opts);
  ASSERT_TRUE(p.ok()) << p.error().message;
  Both r = handshake_both(*p);
  ASSERT_FALSE(r.server_recv.ok());
  std::printf("plaintext client, TLS server: %s\n", r.server_recv.error().message.c_str());
  EXPECT_NE(r.server_recv.error().message.find("does the peer use TLS"), std::string::npos)
      << r.server_recv.error().message;
  // The plaintext side gets the TLS alert as a message or the channel's end: not a timeout.
  if (!r.client_recv.ok()) {
    EXPECT_NE(r.client_recv.error().code, ETIMEDOUT) << r.client_recv.error().message;
  }
}

TEST(TlsFailure, TlsClientAgainstPlaintextListenerFailsClearly) {
  ChannelOptions tls_opts, plain_opts;
  tls_opts.tls = make_config("psk");
  auto p = tcp_pair(plain_opts, tls_opts);
  ASSERT_TRUE(p.ok()) << p.error().message;
  // The client's first recv starts the handshake; the plaintext side answers
  // the ClientHello with a message of its own.
  auto client = std::async(std::launch::async, [&] { return p->a->recv(Timeout(5000)); });
  auto got = p->b->recv(Timeout(5000));
  ASSERT_TRUE(got.ok()) << got.error().message;
  uint64_t word = 0x57494d4c;
  ConstBuffer piece{&word, sizeof word};
  ASSERT_TRUE(send_sync(*p->b, std::span(&piece, 1), Timeout(5000)).ok());
  auto r = client.get();
  ASSERT_FALSE(r.ok());
  std::printf("TLS client, plaintext server: %s\n", r.error().message.c_str());
  EXPECT_NE(r.error().message.find("TLS handshake (client, psk) failed"), std::string::npos) << r.error().message;
}

TEST(TlsFailure, HandshakeDeadlinePassingIsATimeoutAndRetrying) {
  ChannelOptions tls_opts, plain_opts;
  tls_opts.tls = make_config("x509");
  auto p = tcp_pair(plain_opts, tls_opts);  // the plaintext side never answers
  ASSERT_TRUE(p.ok()) << p.error().message;
  uint64_t t0 = now_ns();
  auto r = p->a->recv(Timeout(300));
  double ms = double(now_ns() - t0) * 1e-6;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ETIMEDOUT) << r.error().message;
  EXPECT_GE(ms, 250);
  EXPECT_LT(ms, 2000);
  // Still within the handshake: a second deadline passes the same way.
  auto again = p->a->recv(Timeout(100));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ETIMEDOUT) << again.error().message;
}

TEST(TlsFailure, StopTokenEndsABlockedHandshake) {
  ChannelOptions tls_opts, plain_opts;
  tls_opts.tls = make_config("psk");
  auto p = tcp_pair(plain_opts, tls_opts);  // the plaintext side never answers
  ASSERT_TRUE(p.ok()) << p.error().message;
  auto stopped = testing::wait_stopped_later([&](std::stop_token t) { return p->a->recv(kForever, t); });
  ASSERT_FALSE(stopped.result.ok());
  EXPECT_EQ(stopped.result.error().code, ECANCELED) << stopped.result.error().message;
  EXPECT_LT(stopped.ms_after_stop, 50);
}

TEST(TlsFailure, AcceptDoesNotWaitForAPeersHandshake) {
  ChannelOptions tls_opts, plain_opts;
  tls_opts.tls = make_config("psk");
  auto listener = listen("tcp:127.0.0.1:0", tls_opts);
  ASSERT_TRUE(listener.ok()) << listener.error().message;
  // A silent peer: connected, never says anything.
  auto silent = dial(**listener, plain_opts);
  ASSERT_TRUE(silent.ok()) << silent.error().message;
  // The next peer is accepted and served while the first one's handshake is pending.
  auto p = dial(**listener, tls_opts);
  ASSERT_TRUE(p.ok()) << p.error().message;
  exchange_and_close(*p, Stream{{10, 1 << 20}});
}

TEST(TlsFailure, DpdkRefusesTlsNamingTheBackend) {
  if (!find_backend("dpdk").ok()) GTEST_SKIP() << "this build has no dpdk backend";
  ChannelOptions o;
  o.tls = make_config("psk");
  auto l = listen("dpdk:memif:/tmp/lm-tls-test.sock", o);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message.find("dpdk does not encrypt"), std::string::npos) << l.error().message;
}

}  // namespace
}  // namespace lm::transport
