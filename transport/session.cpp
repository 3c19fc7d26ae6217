#include "transport/session.hpp"

#include "transport/stream.hpp"

#include <sodium.h>

#include <cstring>

namespace lm::transport {
namespace {

std::string codec_list(uint32_t mask) {
  std::string s;
  for (unsigned c = 0; c < kCodecCount; ++c)
    if (mask & (1u << c)) s += (s.empty() ? "" : ",") + std::string(codec_name(Codec(c)));
  return "{" + s + "}";
}

// libsodium's own setup (its random source); idempotent and thread-safe.
void init_sodium() {
  if (sodium_init() < 0) __builtin_trap();  // only fails without a random source: nothing works then
}

void random_bytes(void* out, size_t n) {
  init_sodium();
  randombytes_buf(out, n);
}

// --- authentication (docs/protocol.md, "Authentication") ---------------------------

enum class Prover { source, destination };

// HMAC-SHA256 under a key derived from the pre-shared key (the raw key is
// only ever a KDF input: TLS-PSK derives its own from it) over a direction
// label, both hellos as sent (nonces, session id, role, index, key flags)
// and what was negotiated from them. The labels keep one side's proof from
// serving as the other's; the fresh nonces keep a proof from serving twice.
AuthBody make_proof(const std::string& psk, Prover prover, const HelloBody& source, const HelloBody& dest,
                    const Negotiated& agreed) {
  static constexpr std::string_view kKeyLabel = "livemig v3 handshake key";
  const std::string_view label =
      prover == Prover::source ? "livemig v3 proof by source" : "livemig v3 proof by destination";
  auto bytes = [](const auto* p) { return reinterpret_cast<const unsigned char*>(p); };
  unsigned char key[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, bytes(psk.data()), psk.size());
  crypto_auth_hmacsha256_update(&st, bytes(kKeyLabel.data()), kKeyLabel.size());
  crypto_auth_hmacsha256_final(&st, key);
  const AcceptBody result{agreed.version, 0, agreed.codecs, agreed.features};
  crypto_auth_hmacsha256_init(&st, key, sizeof key);
  crypto_auth_hmacsha256_update(&st, bytes(label.data()), label.size());
  crypto_auth_hmacsha256_update(&st, bytes(&source), sizeof source);
  crypto_auth_hmacsha256_update(&st, bytes(&dest), sizeof dest);
  crypto_auth_hmacsha256_update(&st, bytes(&result), sizeof result);
  AuthBody proof{};
  static_assert(sizeof proof.proof == crypto_auth_hmacsha256_BYTES);
  crypto_auth_hmacsha256_final(&st, proof.proof.data());
  sodium_memzero(key, sizeof key);
  sodium_memzero(&st, sizeof st);
  return proof;
}

bool proof_matches(const AuthBody& got, const AuthBody& want) {
  return sodium_memcmp(got.proof.data(), want.proof.data(), want.proof.size()) == 0;
}

HelloBody make_hello(const SessionConfig& c, ChannelRole role, uint16_t index, uint16_t bulk, uint64_t session_id) {
  HelloBody h{};
  h.version_min = c.version_min;
  h.version_max = c.version_max;
  h.page_size = c.page_size;
  h.features = c.features;
  h.codecs = c.codecs;
  h.bulk_channels = bulk;
  h.role = uint8_t(role);
  h.psk = c.psk.empty() ? 0 : 1;
  h.index = index;
  h.session_id = session_id;
  random_bytes(h.nonce.data(), h.nonce.size());
  return h;
}

std::string slot_name(ChannelRole role, uint16_t index) {
  return role == ChannelRole::bulk ? strf("bulk%u", unsigned(index)) : std::string(role_name(role));
}

// Tells the peer why before failing (best effort: the error is what counts).
Error reject(Channel& ch, uint16_t version, Error e) {
  OutMessage m;
  encode_error(m, version, e.code, e.message);
  (void)send_message(ch, m, Timeout(1000));
  return e;
}

// A failed key proof: the peer gets the short reason (an error message's
// text is short), our error adds the channel (which names the peer) and a hint.
Error refuse_proof(Channel& ch, uint16_t version, std::string_view reason, std::string_view hint) {
  OutMessage m;
  encode_error(m, version, EACCES, reason);
  (void)send_message(ch, m, Timeout(1000));
  return Error{EACCES, strf("channel %s: %.*s (%.*s)", ch.name().c_str(), int(reason.size()), reason.data(),
                            int(hint.size()), hint.data())};
}

// Receives the next message; an error message from the peer becomes our error.
Result<Message> expect(Channel& ch, MsgType type, Timeout timeout, std::stop_token stop = {}) {
  Message m = LM_TRY(recv_message(ch, timeout, nullptr, std::move(stop)));
  if (m.type == MsgType::error) return peer_error(m, ch.name());
  if (m.type != type)
    return Error{EPROTO, strf("channel %s: expected %.*s, got %.*s", ch.name().c_str(),
                              int(msg_type_name(type).size()), msg_type_name(type).data(),
                              int(msg_type_name(m.type).size()), msg_type_name(m.type).data())};
  return m;
}

// A send that fails because the peer already rejected us and went away: the
// peer's error message, if it arrived, says why; prefer it.
Result<void> send_or_explain(Channel& ch, const OutMessage& m, Timeout t) {
  auto sent = send_message(ch, m, t);
  if (sent) return sent;
  auto reply = recv_message(ch, Timeout(500));
  if (reply && reply->type == MsgType::error) return peer_error(*reply, ch.name());
  return sent;
}

Result<Negotiated> client_handshake(Channel& ch, const SessionConfig& config, ChannelRole role, uint16_t index,
                                    uint64_t session_id, const MappingTable* mappings) {
  Timeout t = config.handshake_timeout;
  HelloBody mine = make_hello(config, role, index, config.bulk_channels, session_id);
  OutMessage out;
  encode_hello(out, mine);
  LM_TRY(send_message(ch, out, t));
  Message m = LM_TRY(expect(ch, MsgType::hello, t));
  HelloBody theirs = LM_TRY_CTX(decode_hello(m), "channel " + ch.name());
  auto neg = negotiate(mine, theirs);
  if (!neg) return reject(ch, mine.version_max, std::move(neg).error().context("channel " + ch.name()));
  if (neg->authenticated) {
    // The destination proves the key first: a destination that cannot is
    // told so and learns nothing more (no proof of ours, no mappings).
    Message dm = LM_TRY(expect(ch, MsgType::auth, t));
    AuthBody theirs_proof = LM_TRY_CTX(decode_auth(dm), "channel " + ch.name());
    if (!proof_matches(theirs_proof, make_proof(config.psk, Prover::destination, mine, theirs, *neg)))
      return refuse_proof(ch, neg->version, "pre-shared key mismatch: the destination's proof did not verify",
                          "a wrong key, or not a destination that holds ours");
    encode_auth(out, neg->version, make_proof(config.psk, Prover::source, mine, theirs, *neg));
    LM_TRY(send_or_explain(ch, out, t));
  }
  if (mappings) {
    encode_mappings(out, neg->version, *mappings);
    LM_TRY(send_or_explain(ch, out, t));
  }
  Message a = LM_TRY(expect(ch, MsgType::accept, t));
  AcceptBody acc = LM_TRY_CTX(decode_accept(a), "channel " + ch.name());
  if (acc.version != neg->version || acc.codecs != neg->codecs)
    return Error{EPROTO, strf("channel %s: destination accepted version %u codecs %s, negotiated %u %s",
                              ch.name().c_str(), unsigned(acc.version), codec_list(acc.codecs).c_str(),
                              unsigned(neg->version), codec_list(neg->codecs).c_str())};
  return *neg;
}

struct Joined {
  Negotiated negotiated;
  ChannelRole role;
  uint16_t index;
  std::optional<MappingTable> mappings;
};

Result<Joined> server_handshake(Channel& ch, const SessionConfig& config, std::stop_token stop) {
  Timeout t = config.handshake_timeout;
  Message m = LM_TRY(expect(ch, MsgType::hello, t, stop));
  auto theirs_r = decode_hello(m);
  if (!theirs_r) return reject(ch, config.version_max, std::move(theirs_r).error().context("channel " + ch.name()));
  HelloBody theirs = *theirs_r;
  ChannelRole role = ChannelRole(theirs.role);
  HelloBody mine = make_hello(config, role, theirs.index, theirs.bulk_channels, theirs.session_id);
  OutMessage out;
  encode_hello(out, mine);
  LM_TRY(send_message(ch, out, t));
  auto neg = negotiate(theirs, mine);
  if (!neg) return reject(ch, mine.version_max, std::move(neg).error().context("channel " + ch.name()));
  if (neg->authenticated) {
    encode_auth(out, neg->version, make_proof(config.psk, Prover::destination, theirs, mine, *neg));
    LM_TRY(send_message(ch, out, t));
    Message am = LM_TRY(expect(ch, MsgType::auth, t, stop));
    AuthBody auth = LM_TRY_CTX(decode_auth(am), "channel " + ch.name());
    if (!proof_matches(auth, make_proof(config.psk, Prover::source, theirs, mine, *neg)))
      return refuse_proof(ch, neg->version, "pre-shared key mismatch: the source's proof did not verify",
                          "a wrong key, or a replayed or altered handshake");
  }
  Joined j{*neg, role, theirs.index, std::nullopt};
  if (role == ChannelRole::control) {
    Message mm = LM_TRY(expect(ch, MsgType::mappings, t, stop));
    auto table = decode_mappings(mm);
    if (!table) return reject(ch, neg->version, std::move(table).error().context("channel " + ch.name()));
    j.mappings = std::move(*table);
  }
  encode_accept(out, neg->version, AcceptBody{neg->version, 0, neg->codecs, neg->features});
  LM_TRY(send_message(ch, out, t));
  return j;
}

}  // namespace

Result<Negotiated> negotiate(const HelloBody& s, const HelloBody& d) {
  if (s.page_size != d.page_size)
    return Error{EPROTO, strf("page size mismatch: source %u, destination %u", s.page_size, d.page_size)};
  uint16_t lo = std::max(s.version_min, d.version_min);
  uint16_t hi = std::min(s.version_max, d.version_max);
  if (lo > hi)
    return Error{EPROTO, strf("no common protocol version: source supports %u..%u, destination %u..%u",
                              unsigned(s.version_min), unsigned(s.version_max), unsigned(d.version_min),
                              unsigned(d.version_max))};
  uint32_t codecs = s.codecs & d.codecs;
  if (!(codecs & (1u << unsigned(Codec::raw))))
    return Error{EPROTO, strf("no common codecs including raw: source %s, destination %s",
                              codec_list(s.codecs).c_str(), codec_list(d.codecs).c_str())};
  if (s.bulk_channels == 0)
    return Error{EPROTO, "source announced 0 bulk channels"};
  if (bool(s.psk) != bool(d.psk))
    return Error{EACCES, s.psk ? "pre-shared key mismatch: the source has a key, the destination none"
                               : "pre-shared key mismatch: the destination has a key, the source none"};
  return Negotiated{hi, codecs, s.features & d.features, s.session_id, s.bulk_channels, bool(s.psk)};
}

namespace {
// Loopback, or a link that never leaves this host: every dpdk address but
// af_packet is a memif here ("dpdk:<ip>:<port>" too, docs/dpdk.md).
bool stays_on_host(std::string_view address) {
  if (address.starts_with("dpdk:")) return !address.starts_with("dpdk:af_packet:");
  return same_host_address(address);
}
}  // namespace

Result<void> check_key_for_address(std::string_view address, const SessionConfig& config, std::string_view what) {
  if (!config.psk.empty() || config.unauthenticated == Unauthenticated::allowed || stays_on_host(address))
    return ok();
  return Error{EACCES, strf("refusing to %.*s %.*s without a pre-shared key: it is not a loopback address; pass "
                            "--psk-file FILE (scenario: security.psk-file) on both sides, or --insecure "
                            "(security.insecure = true) to run unauthenticated",
                            int(what.size()), what.data(), int(address.size()), address.data())};
}

Result<Session> Session::connect(std::string_view address, const SessionConfig& config,
                                 const MappingTable& mappings) {
  LM_TRY(check_key_for_address(address, config, "connect to"));
  std::string addr(address);
  ChannelOptions options = config.channel;
  return connect_with(
      [addr, options](Timeout t) { return transport::connect(addr, options, t); }, config, mappings);
}

Result<Session> Session::connect_with(const Dialer& dial, const SessionConfig& config, const MappingTable& mappings,
                                      std::vector<uint16_t> order) {
  if (config.bulk_channels == 0) return Error::msg("session: at least one bulk channel is needed");
  if (order.empty())
    for (uint16_t i = 0; i < config.bulk_channels; ++i) order.push_back(i);
  Session s;
  if (config.session_id != 0) s.negotiated_.session_id = config.session_id;
  else random_bytes(&s.negotiated_.session_id, sizeof s.negotiated_.session_id);
  uint64_t id = s.negotiated_.session_id;
  auto open = [&](ChannelRole role, uint16_t index, const MappingTable* maps) -> Result<std::unique_ptr<Channel>> {
    std::string slot = slot_name(role, index);
    auto ch = LM_TRY_CTX(dial(config.handshake_timeout), strf("session %016llx: open %s channel",
                                                               (unsigned long long)id, slot.c_str()));
    ch->set_name(slot + " " + ch->name());
    Negotiated n = LM_TRY(client_handshake(*ch, config, role, index, id, maps));
    s.negotiated_ = n;
    return ch;
  };
  s.control_ = LM_TRY(open(ChannelRole::control, 0, &mappings));
  s.priority_ = LM_TRY(open(ChannelRole::priority, 0, nullptr));
  s.bulk_.resize(config.bulk_channels);
  for (uint16_t i : order) {
    if (i >= config.bulk_channels || s.bulk_[i])
      return Error::msg(strf("session: bulk order lists index %u twice or out of range", unsigned(i)));
    s.bulk_[i] = LM_TRY(open(ChannelRole::bulk, i, nullptr));
  }
  for (size_t i = 0; i < s.bulk_.size(); ++i)
    if (!s.bulk_[i]) return Error::msg(strf("session: bulk order misses index %zu", i));
  s.mappings_ = mappings;
  return s;
}

Result<void> Session::close(Timeout timeout) {
  Result<void> first;
  auto one = [&](std::unique_ptr<Channel>& ch) {
    if (!ch) return;
    auto r = ch->close(timeout);
    if (!r && first.ok()) first = std::move(r);
  };
  for (auto& b : bulk_) one(b);
  one(priority_);
  one(control_);
  return first;
}

Result<std::optional<Session>> SessionAcceptor::offer(std::unique_ptr<Channel> channel, std::stop_token stop) {
  Joined j = LM_TRY(server_handshake(*channel, config_, std::move(stop)));
  uint64_t id = j.negotiated.session_id;
  channel->set_name(slot_name(j.role, j.index) + " " + channel->name());
  auto [it, fresh] = pending_.try_emplace(id);
  if (!fresh && j.role == ChannelRole::control && it->second.have_control) {
    it->second = Pending{};  // a new attempt: drop the partial one's channels
    fresh = true;
  }
  Pending& p = it->second;
  if (fresh) {
    p.session.negotiated_ = j.negotiated;
    p.session.bulk_.resize(j.negotiated.bulk_channels);
    p.bulk_joined.assign(j.negotiated.bulk_channels, false);
  } else if (p.session.negotiated_.bulk_channels != j.negotiated.bulk_channels ||
             p.session.negotiated_.version != j.negotiated.version) {
    return Error{EPROTO, strf("session %016llx: channel %s announces %u bulk channels, the session has %u",
                              (unsigned long long)id, channel->name().c_str(), unsigned(j.negotiated.bulk_channels),
                              unsigned(p.session.negotiated_.bulk_channels))};
  }
  auto dup = [&] {
    return Error{EPROTO, strf("session %016llx: slot %s joined twice", (unsigned long long)id,
                              slot_name(j.role, j.index).c_str())};
  };
  switch (j.role) {
    case ChannelRole::control:
      if (p.have_control) return dup();
      p.session.control_ = std::move(channel);
      p.session.mappings_ = std::move(*j.mappings);
      p.have_control = true;
      break;
    case ChannelRole::priority:
      if (p.have_priority) return dup();
      p.session.priority_ = std::move(channel);
      p.have_priority = true;
      break;
    case ChannelRole::bulk:
      if (p.bulk_joined[j.index]) return dup();
      p.session.bulk_[j.index] = std::move(channel);
      p.bulk_joined[j.index] = true;
      break;
  }
  bool complete = p.have_control && p.have_priority;
  for (bool b : p.bulk_joined) complete = complete && b;
  if (!complete) return std::optional<Session>();
  Session s = std::move(p.session);
  pending_.erase(it);
  return std::optional<Session>(std::move(s));
}

Result<Session> accept_session(Listener& listener, const SessionConfig& config, Timeout timeout,
                               std::stop_token stop) {
  SessionAcceptor acceptor(config);
  Deadline deadline = Deadline::after(timeout);
  std::optional<Error> first_error;
  auto stopped = [&] { return Error{ECANCELED, strf("accept a session on %s: stopped", listener.address().c_str())}; };
  for (;;) {
    Timeout left = deadline.at_ns == UINT64_MAX ? kForever : Timeout(deadline.poll_ms());
    auto ch = listener.accept(left, stop);
    if (!ch && stop.stop_requested()) return stopped();
    if (!ch) {
      if (first_error) return std::move(*first_error).context(std::move(ch).error().message);
      return std::move(ch).error();
    }
    auto r = acceptor.offer(std::move(*ch), stop);
    if (!r && stop.stop_requested()) return stopped();
    if (!r) {
      if (!first_error) first_error = std::move(r).error();
      continue;
    }
    if (r->has_value()) return std::move(**r);
  }
}

}  // namespace lm::transport
