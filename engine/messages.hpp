// Typed protocol messages over one channel of a session. A Peer knows the
// session's negotiated version, the mapping table received addresses are
// checked against and the negotiated codecs, so a call site says only what
// it sends or which messages it expects:
//
//   peer.send(RoundEnd{.round = r, .flags = kRoundEndFinal});
//   auto d = LM_TRY(peer.expect<Digest>());
//   auto v = LM_TRY(peer.expect<Resumed, Ready>());     // std::variant
//
// Every receive goes through Peer::receive, which waits with a timeout and
// ends at once on a cancel or a caller's stop token.
// Decoding turns the peer's `error` message into an Error naming the channel
// and any type not asked for into "unexpected <type> message on <channel>".
// The wire format is transport/protocol.hpp's; nothing here changes it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <stop_token>
#include <tuple>
#include <variant>

#include "common/error.hpp"
#include "dirtytrack/ranges.hpp"
#include "engine/cancel.hpp"
#include "transport/protocol.hpp"
#include "transport/session.hpp"

namespace lm::engine {

using transport::kCloseDone;
using transport::kRoundEndFinal;

// One struct per message body the engine exchanges (hello, auth and accept
// belong to the session handshake). Received views point into the channel's
// receive buffer: valid until the next receive on that channel.
struct Mappings {
  transport::MappingTable table;
};
struct PageBatch {  // the compressor's batch as it is; sent without a copy
  uint64_t round = 0;
  std::span<const PageEntry> entries;
  std::span<const std::byte> payload;
  transport::PayloadCheck payload_check = transport::PayloadCheck::checksum;  // sending only
};
struct PageReply {  // as PageBatch; request_id 0: pushed, not requested
  uint64_t request_id = 0;
  std::span<const PageEntry> entries;
  std::span<const std::byte> payload;
};
using RoundEnd = transport::RoundEndBody;
using DirtyBitmap = transport::DirtyBitmapView;
using ExecState = transport::ExecStateView;
using PageRequest = transport::PageRequestView;
struct Ready {
  uint64_t time_ns = 0;  // sender's CLOCK_MONOTONIC
  uint64_t value = 0;    // pages held
  // Before round 0 (protocol version 2; 0 and empty from a version 1 peer):
  // how long the destination spent writing its memory, and what it is.
  uint64_t population_ns = 0;
  std::string memory;  // at most 15 characters go on the wire
};
struct Resumed {
  uint64_t time_ns = 0;
  uint64_t value = 0;
};
struct Digest {
  std::span<const transport::DigestEntry> entries;
};
struct Close {
  uint32_t reason = kCloseDone;
};

// What a received message is checked against.
struct Inbound {
  const transport::MappingTable* table = nullptr;
  uint32_t codecs = 0;
};

// The message type, encoder and decoder of each typed message (messages.cpp).
template <class T>
struct Wire;
#define LM_WIRE_MESSAGE(T, msg_type)                                              \
  template <>                                                                     \
  struct Wire<T> {                                                                \
    static constexpr transport::MsgType type = transport::MsgType::msg_type;      \
    static void encode(transport::OutMessage& m, uint16_t version, const T& msg); \
    static Result<T> decode(const transport::Message& m, const Inbound& in);      \
  }
LM_WIRE_MESSAGE(Mappings, mappings);
LM_WIRE_MESSAGE(PageBatch, page_batch);
LM_WIRE_MESSAGE(PageReply, page_reply);
LM_WIRE_MESSAGE(RoundEnd, round_end);
LM_WIRE_MESSAGE(DirtyBitmap, dirty_bitmap);
LM_WIRE_MESSAGE(ExecState, exec_state);
LM_WIRE_MESSAGE(PageRequest, page_request);
LM_WIRE_MESSAGE(Ready, ready);
LM_WIRE_MESSAGE(Resumed, resumed);
LM_WIRE_MESSAGE(Digest, digest);
LM_WIRE_MESSAGE(Close, close);
#undef LM_WIRE_MESSAGE

// expect<T>() gives a T, expect<T, U...>() a std::variant<T, U...>.
template <class... T>
using OneOf = std::conditional_t<sizeof...(T) == 1, std::tuple_element_t<0, std::tuple<T...>>, std::variant<T...>>;

// One channel of a session, as the engine talks on it. Cheap to make; make
// it again after the session is replaced (post-copy recovery).
class Peer {
 public:
  Peer(transport::Channel& channel, uint16_t version, Inbound in, transport::Timeout timeout,
       const Cancel* cancel = nullptr)
      : channel_(&channel), version_(version), in_(in), timeout_(timeout), cancel_(cancel) {}
  // The control, priority or bulk channel of `s`, checked against its table.
  static Peer control(transport::Session& s, transport::Timeout timeout, const Cancel* cancel = nullptr);
  static Peer priority(transport::Session& s, transport::Timeout timeout, const Cancel* cancel = nullptr);
  static Peer bulk(transport::Session& s, size_t i, transport::Timeout timeout, const Cancel* cancel = nullptr);

  transport::Channel& channel() const { return *channel_; }
  // Received addresses are checked against `table` from now on (a receiver
  // that follows the mapping announcements of its own stream).
  void check_against(const transport::MappingTable& table) { in_.table = &table; }

  // Into `m`, for a caller that sends it itself and keeps it alive (the bulk
  // senders' asynchronous sends).
  template <class T>
  void encode(transport::OutMessage& m, const T& msg) const {
    Wire<T>::encode(m, version_, msg);
  }
  template <class T>
  Result<void> send(const T& msg) const {
    return send(msg, timeout_);
  }
  template <class T>
  Result<void> send(const T& msg, transport::Timeout timeout) const {
    transport::OutMessage m;
    encode(m, msg);
    return transport::send_message(*channel_, m, timeout);
  }
  // A message encode() built, within the peer's timeout.
  Result<void> send_encoded(const transport::OutMessage& m) const {
    return transport::send_message(*channel_, m, timeout_);
  }
  // Tells the peer why we stop; best effort, at most one second.
  void send_error(const Error& e) const;

  // The next message within `timeout` (ETIMEDOUT when none came). A cancel
  // ends the wait at once with its error; `stopped` (another thread failed)
  // with "<channel>: receiving stopped: the migration failed elsewhere".
  // Errors here are the link's (closed, reset, corrupt, silent); what a
  // message means is decode's.
  Result<transport::Message> receive(transport::Timeout timeout, std::stop_token stopped = {}) const;

  // `m` as one of T...; the peer's error message becomes its Error, any
  // other type "unexpected <type> message on <channel>".
  template <class... T>
  Result<OneOf<T...>> decode(const transport::Message& m) const {
    std::optional<Result<OneOf<T...>>> out;
    (void)((m.type == Wire<T>::type ? (out.emplace(as_one_of<T...>(Wire<T>::decode(m, in_))), true) : false) || ...);
    if (out) return std::move(*out);
    return refuse(m);
  }
  // A message not asked for: the peer's error, or "unexpected <type> message on <channel>".
  Error refuse(const transport::Message& m) const;

  // receive() + decode(), within the peer's timeout or `timeout`.
  template <class... T>
  Result<OneOf<T...>> expect() const {
    return expect<T...>(timeout_);
  }
  template <class... T>
  Result<OneOf<T...>> expect(transport::Timeout timeout, std::stop_token stopped = {}) const {
    auto m = LM_TRY(receive(timeout, std::move(stopped)));
    return decode<T...>(m);
  }

  // The peer's error message, if one arrives within `wait` (a broken channel
  // is often only the echo of the peer's own failure).
  std::optional<Error> pending_error(transport::Timeout wait = transport::Timeout(300)) const;

  Error unexpected(transport::MsgType type) const;

 private:
  template <class... T, class U>
  static Result<OneOf<T...>> as_one_of(Result<U> r) {
    if (!r) return std::move(r).error();
    return OneOf<T...>(std::move(*r));
  }

  transport::Channel* channel_;
  uint16_t version_;
  Inbound in_;
  transport::Timeout timeout_;  // sends, and expect() without a timeout
  const Cancel* cancel_;        // may be null
};

// One dirty_bitmap message per mapping of `table`, a bit set for each page
// of `pages` (post-copy: the pages the destination still needs).
Result<void> send_page_bitmaps(const Peer& control, const transport::MappingTable& table, const dt::RangeList& pages);

}  // namespace lm::engine
