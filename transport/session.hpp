// A session bundles the channels of one migration: one control channel, one
// priority channel (post-copy requests/replies, never behind bulk data) and N
// bulk channels. Each channel says in its hello which session (id) and which
// slot (role, index) it belongs to; the destination places channels by that,
// not by arrival order, so several sessions can share one listener.
//
// Handshake per channel (docs/protocol.md):
//   source → dest   hello  (versions, page size, features, codecs, N, session id, role, index, key flag, nonce)
//   dest   → source hello  (its own values and nonce)
//   both   negotiate: version = min(max_s, max_d) if >= max(min_s, min_d); codecs =
//          common set (must include raw); page sizes equal; N equal; both or
//          neither hold a key; else error naming both.
//   dest   → source auth   (both hold a key: HMAC proof over both hellos and the result)
//   source → dest   auth   (the same with the source's label), after checking the dest's
//   source → dest   mappings (control channel only)
//   dest   → source accept  or  error
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "transport/channel.hpp"
#include "transport/protocol.hpp"

namespace lm::transport {

// Whether a session may run without a pre-shared key off loopback.
enum class Unauthenticated {
  loopback_only,  // default: no key is fine on 127.0.0.0/8, ::1 or a dpdk memif only
  allowed,        // --insecure / security.insecure
};

struct Negotiated {
  uint16_t version = 0;
  uint32_t codecs = 0;
  uint64_t features = 0;
  uint64_t session_id = 0;
  uint16_t bulk_channels = 0;
  bool authenticated = false;  // both sides proved the pre-shared key
};

// How the source opens the channels after its control channel: one after
// another (a dialer that is not thread-safe, a scripted peer), or all at
// once, each dial and handshake on a thread of its own (the engine: a uring
// channel sets up two rings and registers a buffer, ms each under load).
enum class Dialing { serial, concurrent };

struct SessionConfig {
  uint16_t version_min = kProtocolVersionMin;
  uint16_t version_max = kProtocolVersionMax;
  uint32_t page_size = uint32_t(kPageSize);
  uint64_t features = kFeatureDirtyBitmap | kFeaturePostCopy | kFeatureDigest;
  uint32_t codecs = (1u << kCodecCount) - 1;
  uint16_t bulk_channels = 1;  // source side: how many to open; dest: ignored (taken from hello)
  // The pre-shared key as read from its file (common/secret.hpp); empty: none.
  // Both sides hold one or neither; the handshake derives its own key from it.
  std::string psk;
  Unauthenticated unauthenticated = Unauthenticated::loopback_only;
  ChannelOptions channel;
  Timeout handshake_timeout = Timeout(10000);
  // Source side: 0 draws a fresh random id. A post-copy recovery dials again
  // with the interrupted session's id, so the destination knows it.
  uint64_t session_id = 0;
  // Source side. The control channel is always dialled first, alone: the
  // destination admits the session by the table it carries.
  Dialing dialing = Dialing::serial;

  // Destination side (accept_session): the whole handshake of one channel
  // must end within handshake_deadline; at most max_pending_handshakes run at
  // once, and a new connection beyond that drops the oldest one still in its
  // handshake (told why). Idle or slow peers so delay no one else.
  Timeout handshake_deadline = Timeout(3000);
  unsigned max_pending_handshakes = 32;
  // Destination side: what it accepts, checked on every channel before its
  // accept (the control channel's with the mapping table, before any memory
  // is made for it). An error refuses the channel; its message, sent to the
  // source, names the limit and the value.
  std::function<Result<void>(const Negotiated&, const MappingTable* mappings)> admit;
  // Destination side: each channel whose handshake failed (its peer was told
  // why), e.g. to log it; called on accept_session's thread.
  std::function<void(const Error&)> on_refused;
};

class Session {
 public:
  using Dialer = std::function<Result<std::unique_ptr<Channel>>(Timeout)>;

  // Source side: opens control, priority and N bulk channels to `address`
  // ("tcp:127.0.0.1:7000"), handshakes each and announces `mappings`.
  static Result<Session> connect(std::string_view address, const SessionConfig& config,
                                 const MappingTable& mappings);
  // Same with a caller-supplied way to open a channel (tests, in-process pairs).
  // `order` lists the bulk indices in the order to dial them (default 0..N-1;
  // with Dialing::concurrent the dialer is called from several threads).
  static Result<Session> connect_with(const Dialer& dial, const SessionConfig& config,
                                      const MappingTable& mappings, std::vector<uint16_t> order = {});

  Channel& control() { return *control_; }
  Channel& priority() { return *priority_; }
  Channel& bulk(size_t i) { return *bulk_.at(i); }
  size_t bulk_count() const { return bulk_.size(); }
  const Negotiated& negotiated() const { return negotiated_; }
  // The mapping table announced at handshake; page addresses are checked against it.
  // Not synchronised: when the source re-announces its maps (a mappings message
  // with a higher generation on control), replace it while no thread decodes
  // with it, or give each receiving thread its own copy.
  const MappingTable& mappings() const { return mappings_; }
  void set_mappings(MappingTable table) { mappings_ = std::move(table); }

  // Close handshake on every channel (bulk, priority, control last).
  Result<void> close(Timeout timeout);

 private:
  friend class SessionAcceptor;
  std::unique_ptr<Channel> control_;
  std::unique_ptr<Channel> priority_;
  std::vector<std::unique_ptr<Channel>> bulk_;
  Negotiated negotiated_;
  MappingTable mappings_;
};

// Destination side: hand it every accepted channel; it runs the channel's
// handshake and returns the Session once all of its channels have joined.
class AcceptLoop;
class SessionAcceptor {
 public:
  explicit SessionAcceptor(SessionConfig config) : config_(std::move(config)) {}
  // nullopt: the channel joined a session that is still incomplete. A second
  // control channel for an incomplete session starts its joining over (the
  // source dialled again after a partial attempt).
  // Error: this channel's handshake failed (it was told why and dropped);
  // other sessions are unaffected.
  Result<std::optional<Session>> offer(std::unique_ptr<Channel> channel, std::stop_token stop = {});
  // Tells every channel of the incomplete sessions `why` and drops them. At
  // most config.max_pending_handshakes sessions wait incomplete: beyond, the
  // oldest is told and dropped.
  void drop_pending(std::string_view why);
  ~SessionAcceptor() { drop_pending("the destination stopped accepting this session"); }
  SessionAcceptor(SessionAcceptor&&) = default;

 private:
  friend class AcceptLoop;
  struct Joining;  // a channel whose handshake passed (session.cpp)
  Result<std::optional<Session>> join(Joining joining);

  struct Pending {
    Session session;
    std::vector<bool> bulk_joined;
    bool have_control = false;
    bool have_priority = false;
    uint64_t order = 0;  // when the session's first channel joined
  };
  void tell_channels(Pending& p, std::string_view why);
  SessionConfig config_;
  std::map<uint64_t, Pending> pending_;
  uint64_t joined_ = 0;
};

// listener.accept() + SessionAcceptor until one session is complete. Each
// accepted channel's handshake runs on its own thread (config: deadline, cap
// on pending handshakes); a channel whose handshake fails is told why,
// dropped and counted, and the first such error is returned if the deadline
// passes. Stopping `stop` ends the wait at once (accept or a channel's
// handshake) with ECANCELED. Channels of other, incomplete sessions are told
// why and dropped on return.
Result<Session> accept_session(Listener& listener, const SessionConfig& config, Timeout timeout,
                               std::stop_token stop = {});

// Destination side, several sessions on one listener (livemig dest
// --sessions): one accept loop, handshakes with `config`, that runs until the
// server is destroyed. next() returns the next complete session that
// `wanted` takes (by session id; empty: any); a session that completes while
// nobody wants it waits for a caller that does, and no session is dropped
// because another completed. Several threads may wait in next() at once.
// ETIMEDOUT after `timeout`; ECANCELED once `stop` is stopped.
class SessionServer {
 public:
  SessionServer(Listener& listener, SessionConfig config);
  ~SessionServer();
  Result<Session> next(Timeout timeout, std::stop_token stop = {}, std::function<bool(uint64_t)> wanted = {});
  std::string address() const;

 private:
  Listener& listener_;
  SessionConfig config_;
  std::unique_ptr<AcceptLoop> loop_;
};

// Refuses a session without a pre-shared key on an address that is not
// loopback (0.0.0.0 and :: are not; a dpdk memif is), unless config.unauthenticated allows it.
// `what` is "listen on" or "connect to"; the error says what to pass.
Result<void> check_key_for_address(std::string_view address, const SessionConfig& config, std::string_view what);

// Negotiation rule shared by both sides (exposed for tests).
Result<Negotiated> negotiate(const HelloBody& source, const HelloBody& dest);

}  // namespace lm::transport
