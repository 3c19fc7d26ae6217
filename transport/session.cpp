#include "transport/session.hpp"

#include "transport/stream.hpp"

#include "common/background.hpp"
#include "common/secret.hpp"

#include <sodium.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <list>
#include <mutex>
#include <thread>

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
  const std::string_view label =
      prover == Prover::source ? "livemig v3 proof by source" : "livemig v3 proof by destination";
  auto bytes = [](const auto* p) { return reinterpret_cast<const unsigned char*>(p); };
  std::string key = derive_key(psk, "livemig v3 handshake key");
  const AcceptBody result{agreed.version, 0, agreed.codecs, agreed.features};
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, bytes(key.data()), key.size());
  crypto_auth_hmacsha256_update(&st, bytes(label.data()), label.size());
  crypto_auth_hmacsha256_update(&st, bytes(&source), sizeof source);
  crypto_auth_hmacsha256_update(&st, bytes(&dest), sizeof dest);
  crypto_auth_hmacsha256_update(&st, bytes(&result), sizeof result);
  AuthBody proof{};
  static_assert(sizeof proof.proof == crypto_auth_hmacsha256_BYTES);
  crypto_auth_hmacsha256_final(&st, proof.proof.data());
  wipe_key(key);
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

// `told`: set once the peer was sent an error message saying why.
Result<Joined> server_handshake(Channel& ch, const SessionConfig& config, std::stop_token stop, bool& told) {
  auto tell = [&](uint16_t version, Error e) {
    told = true;
    return reject(ch, version, std::move(e));
  };
  Timeout t = config.handshake_timeout;
  Message m = LM_TRY(expect(ch, MsgType::hello, t, stop));
  auto theirs_r = decode_hello(m);
  if (!theirs_r) return tell(config.version_max, std::move(theirs_r).error().context("channel " + ch.name()));
  HelloBody theirs = *theirs_r;
  ChannelRole role = ChannelRole(theirs.role);
  HelloBody mine = make_hello(config, role, theirs.index, theirs.bulk_channels, theirs.session_id);
  OutMessage out;
  encode_hello(out, mine);
  LM_TRY(send_message(ch, out, t));
  auto neg = negotiate(theirs, mine);
  if (!neg) return tell(mine.version_max, std::move(neg).error().context("channel " + ch.name()));
  if (neg->authenticated) {
    encode_auth(out, neg->version, make_proof(config.psk, Prover::destination, theirs, mine, *neg));
    LM_TRY(send_message(ch, out, t));
    Message am = LM_TRY(expect(ch, MsgType::auth, t, stop));
    AuthBody auth = LM_TRY_CTX(decode_auth(am), "channel " + ch.name());
    if (!proof_matches(auth, make_proof(config.psk, Prover::source, theirs, mine, *neg))) {
      told = true;
      return refuse_proof(ch, neg->version, "pre-shared key mismatch: the source's proof did not verify",
                          "a wrong key, or a replayed or altered handshake");
    }
  }
  Joined j{*neg, role, theirs.index, std::nullopt};
  if (role == ChannelRole::control) {
    Message mm = LM_TRY(expect(ch, MsgType::mappings, t, stop));
    auto table = decode_mappings(mm);
    if (!table) return tell(neg->version, std::move(table).error().context("channel " + ch.name()));
    j.mappings = std::move(*table);
  }
  if (config.admit)  // the destination's limits, before any memory is made for the session
    if (auto admitted = config.admit(*neg, j.mappings ? &*j.mappings : nullptr); !admitted) {
      Error e = std::move(admitted).error();
      (void)tell(neg->version, e);  // the peer hears the limit itself, not our channel name
      return std::move(e).context("channel " + ch.name());
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
  // Mutual X.509 (--tls --tls-creds) authenticates the peers as a key does.
  if (!config.psk.empty() || config.channel.tls || config.unauthenticated == Unauthenticated::allowed ||
      stays_on_host(address))
    return ok();
  return Error{EACCES, strf("refusing to %.*s %.*s without a pre-shared key: it is not a loopback address; pass "
                            "--psk-file FILE (scenario: security.psk-file) or --tls --tls-creds DIR on both sides, or --insecure "
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
  for (size_t k = 0; k < order.size(); ++k)
    if (order[k] >= config.bulk_channels || std::count(order.begin(), order.begin() + k, order[k]))
      return Error::msg(strf("session: bulk order lists index %u twice or out of range", unsigned(order[k])));
  Session s;
  if (config.session_id != 0) s.negotiated_.session_id = config.session_id;
  else random_bytes(&s.negotiated_.session_id, sizeof s.negotiated_.session_id);
  uint64_t id = s.negotiated_.session_id;
  // Every channel negotiates the same from the same config; the control
  // channel's result is the session's.
  auto open = [&](ChannelRole role, uint16_t index, const MappingTable* maps,
                  Negotiated* negotiated) -> Result<std::unique_ptr<Channel>> {
    std::string slot = slot_name(role, index);
    auto ch = LM_TRY_CTX(dial(config.handshake_timeout), strf("session %016llx: open %s channel",
                                                               (unsigned long long)id, slot.c_str()));
    ch->set_name(slot + " " + ch->name());
    Negotiated n = LM_TRY(client_handshake(*ch, config, role, index, id, maps));
    if (negotiated) *negotiated = n;
    return ch;
  };
  s.control_ = LM_TRY(open(ChannelRole::control, 0, &mappings, &s.negotiated_));
  s.bulk_.resize(config.bulk_channels);
  if (config.dialing == Dialing::concurrent) {
    using Opening = Background<std::unique_ptr<Channel>>;
    Opening priority([&] { return open(ChannelRole::priority, 0, nullptr, nullptr); });
    std::vector<std::unique_ptr<Opening>> bulk;
    for (uint16_t i : order) bulk.push_back(std::make_unique<Opening>([&open, i] {
      return open(ChannelRole::bulk, i, nullptr, nullptr);
    }));
    // Every one is waited for (the first error, in slot order, is returned).
    Result<void> first = ok();
    auto take = [&](Opening& o, std::unique_ptr<Channel>& slot) {
      auto ch = o.wait();
      if (ch) slot = std::move(*ch);
      else if (first.ok()) first = std::move(ch).error();
    };
    take(priority, s.priority_);
    for (size_t k = 0; k < order.size(); ++k) take(*bulk[k], s.bulk_[order[k]]);
    LM_TRY(std::move(first));
  } else {
    s.priority_ = LM_TRY(open(ChannelRole::priority, 0, nullptr, nullptr));
    for (uint16_t i : order) s.bulk_[i] = LM_TRY(open(ChannelRole::bulk, i, nullptr, nullptr));
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

namespace {

// The server handshake; a failure is told to the peer (once) with `why` when
// given (the accept loop stopped the handshake), else with the error itself.
Result<Joined> handshake_or_tell(Channel& ch, const SessionConfig& config, std::stop_token stop,
                                 const std::function<std::optional<Error>()>& why_stopped = {}) {
  bool told = false;  // server_handshake already said why
  auto joined = server_handshake(ch, config, std::move(stop), told);
  if (joined) return joined;
  Error e = std::move(joined).error();
  if (why_stopped && e.code == ECANCELED)  // the stop ended a wait; a refusal of its own stays what it is
    if (auto why = why_stopped()) {
      if (!told) (void)reject(ch, config.version_max, *why);  // short: the peer's message has 96 bytes
      return std::move(*why).context("channel " + ch.name());
    }
  if (!told) (void)reject(ch, config.version_max, e);
  return e;
}

}  // namespace

struct SessionAcceptor::Joining {
  Joined joined;
  std::unique_ptr<Channel> channel;
};

Result<std::optional<Session>> SessionAcceptor::offer(std::unique_ptr<Channel> channel, std::stop_token stop) {
  Joined j = LM_TRY(handshake_or_tell(*channel, config_, std::move(stop)));
  return join(Joining{std::move(j), std::move(channel)});
}

void SessionAcceptor::tell_channels(Pending& p, std::string_view why) {
  auto tell = [&](std::unique_ptr<Channel>& ch) {
    if (ch) (void)reject(*ch, config_.version_max, Error{ECONNABORTED, std::string(why)});
    ch.reset();
  };
  tell(p.session.control_);
  tell(p.session.priority_);
  for (auto& b : p.session.bulk_) tell(b);
}

void SessionAcceptor::drop_pending(std::string_view why) {
  for (auto& [id, p] : pending_) tell_channels(p, why);
  pending_.clear();
}

Result<std::optional<Session>> SessionAcceptor::join(Joining joining) {
  Joined& j = joining.joined;
  std::unique_ptr<Channel> channel = std::move(joining.channel);
  uint64_t id = j.negotiated.session_id;
  channel->set_name(slot_name(j.role, j.index) + " " + channel->name());
  // Refused channels of a joining session hear why, as handshake failures do.
  auto refuse = [&](Error e) { return reject(*channel, j.negotiated.version, std::move(e)); };
  auto [it, fresh] = pending_.try_emplace(id);
  if (!fresh && j.role == ChannelRole::control && it->second.have_control) {
    // A new attempt: the partial one's channels are told and dropped.
    tell_channels(it->second, strf("session %016llx: a new control channel replaced this attempt",
                                   (unsigned long long)id));
    it->second = Pending{};
    fresh = true;
  }
  Pending& p = it->second;
  if (fresh) {
    p.order = ++joined_;
    // Incomplete sessions hold their channels: beyond the cap the oldest goes.
    if (pending_.size() > std::max(1u, config_.max_pending_handshakes)) {
      auto oldest = pending_.end();
      for (auto o = pending_.begin(); o != pending_.end(); ++o)
        if (o != it && (oldest == pending_.end() || o->second.order < oldest->second.order)) oldest = o;
      tell_channels(oldest->second, strf("destination: over %u sessions incomplete; the oldest (this one) is dropped",
                                         config_.max_pending_handshakes));
      pending_.erase(oldest);
    }
    p.session.negotiated_ = j.negotiated;
    p.session.bulk_.resize(j.negotiated.bulk_channels);
    p.bulk_joined.assign(j.negotiated.bulk_channels, false);
  } else if (p.session.negotiated_.bulk_channels != j.negotiated.bulk_channels ||
             p.session.negotiated_.version != j.negotiated.version) {
    return refuse(Error{EPROTO, strf("session %016llx: channel %s announces %u bulk channels, the session has %u",
                                     (unsigned long long)id, channel->name().c_str(),
                                     unsigned(j.negotiated.bulk_channels),
                                     unsigned(p.session.negotiated_.bulk_channels))});
  }
  auto dup = [&] {
    return refuse(Error{EPROTO, strf("session %016llx: slot %s joined twice", (unsigned long long)id,
                                     slot_name(j.role, j.index).c_str())});
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

// The accept loop of accept_session and SessionServer. The listener accepts
// on its own thread; each channel's handshake runs on a thread of its own
// with its own deadline, so an idle or slow peer delays no one; channels
// whose handshake passed join their session in next(), on the caller's
// thread. Beyond max_pending_handshakes, a new connection drops the oldest
// one still in its handshake (a flood of idle connections ages out; a source
// that connects among them finishes its handshake in milliseconds).
class AcceptLoop {
 public:
  // The listener's accept ends after `listen_timeout` (accept_session's
  // timeout; a server accepts until it is destroyed).
  AcceptLoop(Listener& listener, const SessionConfig& config, Timeout listen_timeout)
      : listener_(listener), config_(config), acceptor_(config) {
    accepter_ = std::thread([this, listen_timeout] { accept_all(listen_timeout); });
  }
  ~AcceptLoop() { shut_down(); }

  // The next complete session that `wanted` takes (empty: any); one it does
  // not take waits in ready_ for a later call that does. Several callers may
  // wait at once.
  Result<Session> next(Timeout timeout, std::stop_token stop, const std::function<bool(uint64_t)>& wanted) {
    bool stopped = false;
    std::stop_callback on_stop(stop, [&] {
      std::lock_guard g(lock_);
      stopped = true;
      changed_.notify_all();
    });
    const Deadline deadline = Deadline::after(timeout);
    auto takes = [&](const Session& s) { return !wanted || wanted(s.negotiated().session_id); };
    std::optional<Error> first_error;
    std::unique_lock g(lock_);
    for (;;) {
      if (stopped) return Error{ECANCELED, strf("accept a session on %s: stopped", listener_.address().c_str())};
      for (auto it = ready_.begin(); it != ready_.end(); ++it)
        if (takes(*it)) {
          Session s = std::move(*it);
          ready_.erase(it);
          return s;
        }
      for (auto it = handshakes_.begin(); it != handshakes_.end();) {
        if (!it->result) {
          ++it;
          continue;
        }
        auto done = std::move(*it->result);
        std::unique_ptr<Channel> channel = std::move(it->channel);
        it->thread.join();
        it = handshakes_.erase(it);
        auto joined = done ? acceptor_.join({std::move(*done), std::move(channel)})
                           : Result<std::optional<Session>>(std::move(done).error());
        if (!joined) {
          if (config_.on_refused) config_.on_refused(joined.error());
          if (!first_error) first_error = std::move(joined).error();
          continue;
        }
        if (!joined->has_value()) continue;
        if (takes(**joined)) return std::move(**joined);
        ready_.push_back(std::move(**joined));
      }
      if (listener_error_) {
        Error e = *listener_error_;
        if (first_error) return std::move(*first_error).context(e.message);
        return e;
      }
      if (deadline.passed()) {
        Error e{ETIMEDOUT, strf("accept a session on %s: none within %lld ms", listener_.address().c_str(),
                                (long long)timeout.count())};
        if (first_error) return std::move(*first_error).context(e.message);
        return e;
      }
      uint64_t next_deadline = deadline.at_ns;
      for (auto& h : handshakes_) {
        if (h.why_stopped) continue;
        if (h.deadline.passed())
          stop_handshake(h, Error{ETIMEDOUT, strf("destination: handshake deadline of %lld ms passed",
                                                  (long long)config_.handshake_deadline.count())});
        else
          next_deadline = std::min(next_deadline, h.deadline.at_ns);
      }
      if (next_deadline == UINT64_MAX) changed_.wait(g);
      else changed_.wait_for(g, std::chrono::nanoseconds(next_deadline - std::min(next_deadline, now_ns())));
    }
  }

 private:
  struct Handshake {
    std::unique_ptr<Channel> channel;
    Deadline deadline;
    std::stop_source stop;
    std::optional<Error> why_stopped;      // set before `stop` is requested
    std::optional<Result<Joined>> result;  // set by its thread when it ends
    std::thread thread;
  };

  static Error stopped_accepting() { return Error{ECONNABORTED, "destination: stopped accepting sessions"}; }

  // Under lock_.
  void stop_handshake(Handshake& h, Error why) {
    if (h.why_stopped || h.result) return;
    h.why_stopped = std::move(why);
    h.stop.request_stop();
  }

  void accept_all(Timeout timeout) {
    Deadline deadline = Deadline::after(timeout);
    for (;;) {
      Timeout left = deadline.at_ns == UINT64_MAX ? kForever : Timeout(deadline.poll_ms());
      auto ch = listener_.accept(left, quit_.get_token());
      std::lock_guard g(lock_);
      if (!ch) {
        if (!quit_.stop_requested()) listener_error_ = std::move(ch).error();
        changed_.notify_all();
        return;
      }
      size_t running = 0;
      for (auto& h : handshakes_) running += !h.result && !h.why_stopped;
      if (running >= std::max(1u, config_.max_pending_handshakes))
        for (auto& h : handshakes_)
          if (!h.result && !h.why_stopped) {
            stop_handshake(h, Error{EBUSY, strf("destination: %u handshakes pending; the oldest (this one) is "
                                                "dropped", config_.max_pending_handshakes)});
            break;
          }
      Handshake& h = handshakes_.emplace_back();
      h.channel = std::move(*ch);
      h.deadline = Deadline::after(config_.handshake_deadline);
      h.thread = std::thread([this, &h] { run_handshake(h); });
      changed_.notify_all();
    }
  }

  void run_handshake(Handshake& h) {
    auto joined = handshake_or_tell(*h.channel, config_, h.stop.get_token(), [&]() -> std::optional<Error> {
      std::lock_guard g(lock_);
      if (!h.why_stopped) return std::nullopt;
      return *h.why_stopped;
    });
    std::lock_guard g(lock_);
    h.result = std::move(joined);
    changed_.notify_all();
  }

  void shut_down() {
    quit_.request_stop();
    if (accepter_.joinable()) accepter_.join();
    {
      std::lock_guard g(lock_);
      for (auto& h : handshakes_) stop_handshake(h, stopped_accepting());
    }
    for (auto& h : handshakes_) {
      if (h.thread.joinable()) h.thread.join();
      // Ended before a caller saw it (it stopped meanwhile): a refusal is
      // still reported, a handshake that passed is told it came too late.
      if (!h.result) continue;
      if (!*h.result && config_.on_refused) config_.on_refused(h.result->error());
      if (*h.result) (void)reject(*h.channel, config_.version_max, stopped_accepting());
    }
    handshakes_.clear();
    // Complete sessions nobody took: their channels close with them.
    ready_.clear();
  }

  Listener& listener_;
  const SessionConfig& config_;
  SessionAcceptor acceptor_;  // incomplete sessions; under lock_
  std::stop_source quit_;  // ends the accepting thread
  std::thread accepter_;
  std::mutex lock_;  // guards what follows
  std::condition_variable changed_;
  std::list<Handshake> handshakes_;  // oldest first; stable addresses for their threads
  std::list<Session> ready_;         // complete, waiting for a caller that takes them
  std::optional<Error> listener_error_;
};

SessionServer::SessionServer(Listener& listener, SessionConfig config)
    : listener_(listener), config_(std::move(config)),
      loop_(std::make_unique<AcceptLoop>(listener, config_, kForever)) {}
SessionServer::~SessionServer() = default;

Result<Session> SessionServer::next(Timeout timeout, std::stop_token stop, std::function<bool(uint64_t)> wanted) {
  return loop_->next(timeout, std::move(stop), wanted);
}

std::string SessionServer::address() const { return listener_.address(); }

Result<Session> accept_session(Listener& listener, const SessionConfig& config, Timeout timeout,
                               std::stop_token stop) {
  return AcceptLoop(listener, config, timeout).next(kForever, std::move(stop), {});
}

}  // namespace lm::transport
