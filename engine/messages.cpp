#include "engine/messages.hpp"

#include <algorithm>
#include <cstring>
#include <optional>

namespace lm::engine {

using transport::Message;
using transport::OutMessage;
using transport::Timeout;

// --- encoders and decoders: the protocol's own, with the version and checks supplied ---

void Wire<Mappings>::encode(OutMessage& m, uint16_t version, const Mappings& msg) {
  transport::encode_mappings(m, version, msg.table);
}
Result<Mappings> Wire<Mappings>::decode(const Message& m, const Inbound&) {
  return Mappings{LM_TRY(transport::decode_mappings(m))};
}

void Wire<PageBatch>::encode(OutMessage& m, uint16_t version, const PageBatch& msg) {
  transport::encode_page_batch(m, version, msg.round, msg.entries, msg.payload, msg.payload_check);
}
Result<PageBatch> Wire<PageBatch>::decode(const Message& m, const Inbound& in) {
  auto v = LM_TRY(transport::decode_page_batch(m, *in.table, in.codecs));
  return PageBatch{v.id, v.entries, v.payload};
}

void Wire<PageReply>::encode(OutMessage& m, uint16_t version, const PageReply& msg) {
  transport::encode_page_reply(m, version, msg.request_id, msg.entries, msg.payload);
}
Result<PageReply> Wire<PageReply>::decode(const Message& m, const Inbound& in) {
  auto v = LM_TRY(transport::decode_page_batch(m, *in.table, in.codecs));
  return PageReply{v.id, v.entries, v.payload};
}

void Wire<RoundEnd>::encode(OutMessage& m, uint16_t version, const RoundEnd& msg) {
  transport::encode_round_end(m, version, msg);
}
Result<RoundEnd> Wire<RoundEnd>::decode(const Message& m, const Inbound&) { return transport::decode_round_end(m); }

void Wire<DirtyBitmap>::encode(OutMessage& m, uint16_t version, const DirtyBitmap& msg) {
  transport::encode_dirty_bitmap(m, version, msg.start, msg.pages, msg.bits);
}
Result<DirtyBitmap> Wire<DirtyBitmap>::decode(const Message& m, const Inbound& in) {
  return transport::decode_dirty_bitmap(m, *in.table);
}

void Wire<ExecState>::encode(OutMessage& m, uint16_t version, const ExecState& msg) {
  transport::encode_exec_state(m, version, msg.kind, msg.state);
}
Result<ExecState> Wire<ExecState>::decode(const Message& m, const Inbound&) {
  return transport::decode_exec_state(m);
}

void Wire<PageRequest>::encode(OutMessage& m, uint16_t version, const PageRequest& msg) {
  transport::encode_page_request(m, version, msg.request_id, msg.addrs);
}
Result<PageRequest> Wire<PageRequest>::decode(const Message& m, const Inbound& in) {
  return transport::decode_page_request(m, *in.table);
}

void Wire<Ready>::encode(OutMessage& m, uint16_t version, const Ready& msg) {
  transport::ReadyBody b{{msg.time_ns, msg.value}, msg.population_ns, {}};
  msg.memory.copy(b.memory.data(), std::min(msg.memory.size(), b.memory.size() - 1));
  transport::encode_ready(m, version, b);
}
Result<Ready> Wire<Ready>::decode(const Message& m, const Inbound&) {
  auto b = LM_TRY(transport::decode_ready(m));
  return Ready{b.event.time_ns, b.event.value, b.population_ns,
               std::string(b.memory.data(), strnlen(b.memory.data(), b.memory.size()))};
}

void Wire<Resumed>::encode(OutMessage& m, uint16_t version, const Resumed& msg) {
  transport::encode_event(m, version, type, {msg.time_ns, msg.value});
}
Result<Resumed> Wire<Resumed>::decode(const Message& m, const Inbound&) {
  auto e = LM_TRY(transport::decode_event(m));
  return Resumed{e.time_ns, e.value};
}

void Wire<Digest>::encode(OutMessage& m, uint16_t version, const Digest& msg) {
  transport::encode_digest(m, version, msg.entries);
}
Result<Digest> Wire<Digest>::decode(const Message& m, const Inbound& in) {
  return Digest{LM_TRY(transport::decode_digest(m, *in.table))};
}

void Wire<Close>::encode(OutMessage& m, uint16_t version, const Close& msg) {
  transport::encode_close(m, version, msg.reason);
}
Result<Close> Wire<Close>::decode(const Message& m, const Inbound&) {
  auto c = LM_TRY(transport::decode_close(m));
  return Close{c.reason};
}

// --- Peer --------------------------------------------------------------------------------

namespace {

Inbound inbound(const transport::Session& s) { return {&s.mappings(), s.negotiated().codecs}; }

}  // namespace

Peer Peer::control(transport::Session& s, Timeout timeout, const Cancel* cancel) {
  return Peer(s.control(), s.negotiated().version, inbound(s), timeout, cancel);
}
Peer Peer::priority(transport::Session& s, Timeout timeout, const Cancel* cancel) {
  return Peer(s.priority(), s.negotiated().version, inbound(s), timeout, cancel);
}
Peer Peer::bulk(transport::Session& s, size_t i, Timeout timeout, const Cancel* cancel) {
  return Peer(s.bulk(i), s.negotiated().version, inbound(s), timeout, cancel);
}

void Peer::send_error(const Error& e) const {
  OutMessage m;
  transport::encode_error(m, version_, e.code, e.message);
  (void)transport::send_message(*channel_, m, Timeout(1000));
}

Result<Message> Peer::receive(Timeout timeout, std::stop_token stopped) const {
  const std::stop_token cancelled = cancel_ ? cancel_->token() : std::stop_token();
  if (cancelled.stop_requested()) return cancel_->error();
  // The channel's wait ends on either token: one of them, or both joined
  // (a shared state is allocated only then).
  std::stop_source either(std::nostopstate);
  auto forward = [&either] { either.request_stop(); };
  std::optional<std::stop_callback<decltype(forward)>> on_cancel, on_stopped;
  std::stop_token wait_token = stopped.stop_possible() ? stopped : cancelled;
  if (stopped.stop_possible() && cancelled.stop_possible()) {
    either = std::stop_source();
    on_cancel.emplace(cancelled, forward);
    on_stopped.emplace(stopped, forward);
    wait_token = either.get_token();
  }
  auto m = transport::recv_message(*channel_, timeout, nullptr, wait_token);
  if (m || !wait_token.stop_requested()) return m;
  if (cancelled.stop_requested()) return cancel_->error();
  return Error::msg(strf("%s: receiving stopped: the migration failed elsewhere", channel_->name().c_str()));
}

std::optional<Error> Peer::pending_error(Timeout wait) const {
  auto m = transport::recv_message(*channel_, wait);
  if (m && m->type == transport::MsgType::error) return transport::peer_error(*m, channel_->name());
  return std::nullopt;
}

Error Peer::refuse(const Message& m) const {
  if (m.type == transport::MsgType::error) return transport::peer_error(m, channel_->name());
  return unexpected(m.type);
}

Error Peer::unexpected(transport::MsgType type) const {
  return Error::msg(strf("unexpected %s message on %s", std::string(transport::msg_type_name(type)).c_str(),
                         channel_->name().c_str()));
}

Result<void> send_page_bitmaps(const Peer& control, const transport::MappingTable& table, const dt::RangeList& pages) {
  for (const auto& e : table.entries()) {
    uint64_t count = (e.end - e.start) / kPageSize;
    const std::vector<uint8_t> bits = dt::to_page_bitmap(pages, e.start, count);  // the message points into it
    LM_TRY(control.send(DirtyBitmap{e.start, count, bits}));
  }
  return ok();
}

}  // namespace lm::engine
