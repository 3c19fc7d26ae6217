#include "transport/protocol.hpp"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <algorithm>
#include <cstring>

namespace lm::transport {

std::string_view msg_type_name(MsgType t) {
  switch (t) {
    case MsgType::hello: return "hello";
    case MsgType::auth: return "auth";
    case MsgType::accept: return "accept";
    case MsgType::mappings: return "mappings";
    case MsgType::page_batch: return "page_batch";
    case MsgType::round_end: return "round_end";
    case MsgType::dirty_bitmap: return "dirty_bitmap";
    case MsgType::exec_state: return "exec_state";
    case MsgType::page_request: return "page_request";
    case MsgType::page_reply: return "page_reply";
    case MsgType::ready: return "ready";
    case MsgType::resumed: return "resumed";
    case MsgType::digest: return "digest";
    case MsgType::error: return "error";
    case MsgType::close: return "close";
  }
  return "unknown";
}

std::string_view role_name(ChannelRole r) {
  switch (r) {
    case ChannelRole::control: return "control";
    case ChannelRole::priority: return "priority";
    case ChannelRole::bulk: return "bulk";
  }
  return "unknown";
}

// --- mapping table -------------------------------------------------------------

Result<MappingTable> MappingTable::make(std::vector<MappingEntry> entries, uint32_t generation) {
  if (entries.size() > kMaxMappings)
    return Error::msg(strf("mapping table: %zu entries exceed the limit %u", entries.size(), kMaxMappings));
  std::sort(entries.begin(), entries.end(),
            [](const MappingEntry& a, const MappingEntry& b) { return a.start < b.start; });
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    if (e.start % kPageSize || e.end % kPageSize || e.end <= e.start)
      return Error::msg(strf("mapping table: entry %zu [0x%llx, 0x%llx) is empty or not page aligned", i,
                             (unsigned long long)e.start, (unsigned long long)e.end));
    if (i > 0 && entries[i - 1].end > e.start)
      return Error::msg(strf("mapping table: entry [0x%llx, 0x%llx) overlaps [0x%llx, 0x%llx)",
                             (unsigned long long)e.start, (unsigned long long)e.end,
                             (unsigned long long)entries[i - 1].start, (unsigned long long)entries[i - 1].end));
  }
  MappingTable t;
  t.entries_ = std::move(entries);
  t.generation_ = generation;
  return t;
}

bool MappingTable::contains_range(uint64_t start, uint64_t end) const {
  if (end <= start) return false;
  // First entry whose end is above start.
  auto it = std::upper_bound(entries_.begin(), entries_.end(), start,
                             [](uint64_t a, const MappingEntry& e) { return a < e.end; });
  return it != entries_.end() && it->start <= start && end <= it->end;
}

bool MappingTable::contains(uint64_t addr) const {
  return addr % kPageSize == 0 && addr <= UINT64_MAX - kPageSize && contains_range(addr, addr + kPageSize);
}

uint64_t MappingTable::total_bytes() const {
  uint64_t n = 0;
  for (const auto& e : entries_) n += e.end - e.start;
  return n;
}

// --- checksum and encoding -------------------------------------------------------

uint64_t checksum64(std::span<const ConstBuffer> pieces) {
  if (pieces.size() == 1) return XXH3_64bits(pieces[0].data, pieces[0].size);
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (const auto& p : pieces) XXH3_64bits_update(&state, p.data, p.size);
  return XXH3_64bits_digest(&state);
}

size_t OutMessage::size() const {
  size_t n = 0;
  for (size_t i = 0; i < npieces_; ++i) n += pieces_[i].size;
  return n;
}

MsgType OutMessage::type() const {
  MsgHeader h;
  std::memcpy(&h, head_.data(), sizeof h);
  return MsgType(h.type);
}

void OutMessage::build(MsgType type, uint16_t version, const void* body, size_t body_bytes,
                       std::initializer_list<ConstBuffer> extra, size_t unchecked) {
  // Callers only pass the fixed bodies declared in protocol.hpp, all small.
  size_t head_bytes = sizeof(MsgHeader) + body_bytes;
  if (head_bytes > kHeadCapacity || extra.size() + 1 > kMaxPieces) __builtin_trap();
  npieces_ = 0;
  pieces_[npieces_++] = {head_.data(), head_bytes};
  size_t total = head_bytes;
  for (const auto& p : extra) {
    if (p.size == 0) continue;
    pieces_[npieces_++] = p;
    total += p.size;
  }
  MsgHeader h{};
  h.magic = kMsgMagic;
  h.version = version;
  h.type = uint8_t(type);
  h.length = uint32_t(total);
  if (version < 4 || unchecked > total - head_bytes) unchecked = 0;
  h.unchecked = uint32_t(unchecked);
  h.checksum = 0;
  std::memcpy(head_.data(), &h, sizeof h);
  if (body_bytes) std::memcpy(head_.data() + sizeof h, body, body_bytes);
  // The checked pieces: all of them, the last ones cut short by `unchecked`.
  std::array<ConstBuffer, kMaxPieces> checked = pieces_;
  size_t n = npieces_;
  for (size_t left = unchecked; left > 0 && n > 0;) {
    ConstBuffer& last = checked[n - 1];
    const size_t cut = std::min(left, last.size);
    last.size -= cut;
    left -= cut;
    if (last.size == 0) n--;
  }
  h.checksum = checksum64({checked.data(), n});
  std::memcpy(head_.data(), &h, sizeof h);
}

void encode_hello(OutMessage& m, const HelloBody& hello) {
  m.build(MsgType::hello, hello.version_max, &hello, sizeof hello);
}
void encode_auth(OutMessage& m, uint16_t version, const AuthBody& auth) {
  m.build(MsgType::auth, version, &auth, sizeof auth);
}
void encode_accept(OutMessage& m, uint16_t version, const AcceptBody& accept) {
  m.build(MsgType::accept, version, &accept, sizeof accept);
}
void encode_mappings(OutMessage& m, uint16_t version, const MappingTable& table) {
  MappingsBody b{uint32_t(table.entries().size()), table.generation()};
  m.build(MsgType::mappings, version, &b, sizeof b,
          {{table.entries().data(), table.entries().size() * sizeof(MappingEntry)}});
}

static void encode_batch(OutMessage& m, MsgType type, uint16_t version, uint64_t id,
                         std::span<const PageEntry> entries, std::span<const std::byte> payload,
                         PayloadCheck check) {
  PageBatchBody b{id, uint32_t(entries.size()), 0, payload.size()};
  m.build(type, version, &b, sizeof b, {{entries.data(), entries.size_bytes()}, {payload.data(), payload.size()}},
          check == PayloadCheck::digest ? payload.size() : 0);
}
void encode_page_batch(OutMessage& m, uint16_t version, uint64_t round, std::span<const PageEntry> entries,
                       std::span<const std::byte> payload, PayloadCheck check) {
  encode_batch(m, MsgType::page_batch, version, round, entries, payload, check);
}
void encode_page_reply(OutMessage& m, uint16_t version, uint64_t request_id, std::span<const PageEntry> entries,
                       std::span<const std::byte> payload) {
  encode_batch(m, MsgType::page_reply, version, request_id, entries, payload, PayloadCheck::checksum);
}
void encode_round_end(OutMessage& m, uint16_t version, const RoundEndBody& body) {
  m.build(MsgType::round_end, version, &body, sizeof body);
}
void encode_dirty_bitmap(OutMessage& m, uint16_t version, uint64_t start, uint64_t pages,
                         std::span<const uint8_t> bitmap) {
  DirtyBitmapBody b{start, pages};
  m.build(MsgType::dirty_bitmap, version, &b, sizeof b, {{bitmap.data(), bitmap.size()}});
}
void encode_exec_state(OutMessage& m, uint16_t version, uint32_t kind, std::span<const std::byte> state) {
  ExecStateBody b{kind, 0, state.size()};
  m.build(MsgType::exec_state, version, &b, sizeof b, {{state.data(), state.size()}});
}
void encode_page_request(OutMessage& m, uint16_t version, uint64_t request_id, std::span<const uint64_t> addrs) {
  PageRequestBody b{request_id, uint32_t(addrs.size()), 0};
  m.build(MsgType::page_request, version, &b, sizeof b, {{addrs.data(), addrs.size_bytes()}});
}
void encode_event(OutMessage& m, uint16_t version, MsgType ready_or_resumed, const EventBody& body) {
  m.build(ready_or_resumed, version, &body, sizeof body);
}
void encode_ready(OutMessage& m, uint16_t version, const ReadyBody& body) {
  if (version < 2) return encode_event(m, version, MsgType::ready, body.event);
  m.build(MsgType::ready, version, &body, sizeof body);
}
void encode_digest(OutMessage& m, uint16_t version, std::span<const DigestEntry> digests) {
  DigestBody b{uint32_t(digests.size()), kDigestXxh3_64};
  m.build(MsgType::digest, version, &b, sizeof b, {{digests.data(), digests.size_bytes()}});
}
void encode_error(OutMessage& m, uint16_t version, int code, std::string_view text) {
  constexpr size_t kRoom = OutMessage::kHeadCapacity - sizeof(MsgHeader) - sizeof(ErrorBody);
  text = text.substr(0, kRoom);
  std::array<std::byte, sizeof(ErrorBody) + kRoom> body{};
  ErrorBody b{code, uint32_t(text.size())};
  std::memcpy(body.data(), &b, sizeof b);
  std::memcpy(body.data() + sizeof b, text.data(), text.size());
  m.build(MsgType::error, version, body.data(), sizeof b + text.size());
}
void encode_close(OutMessage& m, uint16_t version, uint32_t reason) {
  CloseBody b{reason, 0};
  m.build(MsgType::close, version, &b, sizeof b);
}

// --- decoding ------------------------------------------------------------------------

Result<Message> parse_message(std::span<const std::byte> bytes, std::string_view channel_name) {
  auto fail = [&](std::string what) {
    return Error{EBADMSG, strf("channel %.*s: %s", int(channel_name.size()), channel_name.data(), what.c_str())};
  };
  if (bytes.size() < sizeof(MsgHeader))
    return fail(strf("truncated message: %zu bytes, header needs %zu", bytes.size(), sizeof(MsgHeader)));
  MsgHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (h.magic != kMsgMagic) return fail(strf("bad message magic 0x%08x", h.magic));
  if (h.length != bytes.size())
    return fail(strf("message length field %u does not match the %zu bytes received", h.length, bytes.size()));
  // Before version 4 the field is reserved, and checked like the rest.
  const size_t unchecked = h.version >= 4 ? h.unchecked : 0;
  if (unchecked > bytes.size() - sizeof h)
    return fail(strf("corrupt header: the checksum would leave out %zu bytes of a %zu-byte message", unchecked,
                     bytes.size()));
  // Checksum first: a flipped byte anywhere checked is reported as what it is.
  uint64_t want = h.checksum;
  MsgHeader zeroed = h;
  zeroed.checksum = 0;
  ConstBuffer pieces[2] = {{&zeroed, sizeof zeroed},
                           {bytes.data() + sizeof h, bytes.size() - sizeof h - unchecked}};
  uint64_t got = checksum64(pieces);
  if (got != want)
    return fail(strf("checksum mismatch on %zu-byte message (type %u): header says %016llx, computed %016llx",
                     bytes.size(), unsigned(h.type), (unsigned long long)want, (unsigned long long)got));
  if (h.type == 0 || h.type > kMsgTypeMax) return fail(strf("unknown message type %u", unsigned(h.type)));
  return Message{MsgType(h.type), h.version, bytes.subspan(sizeof h)};
}

Result<Message> recv_message(Channel& channel, Timeout timeout, bool* closed, std::stop_token stop) {
  Received r = LM_TRY(channel.recv(timeout, std::move(stop)));
  if (r.status == RecvStatus::closed) {
    if (closed) {
      *closed = true;
      return Message{MsgType::close, 0, {}};
    }
    return Error{ECONNRESET, strf("channel %s: closed by peer while a message was expected", channel.name().c_str())};
  }
  if (closed) *closed = false;
  return parse_message(r.bytes, channel.name());
}

Result<void> send_message(Channel& channel, const OutMessage& m, Timeout timeout) {
  return send_sync(channel, m.pieces(), timeout);
}

namespace {

Error bad(const Message& m, std::string what) {
  return Error{EBADMSG, strf("%.*s message: %s", int(msg_type_name(m.type).size()), msg_type_name(m.type).data(),
                             what.c_str())};
}

Result<void> expect_type(const Message& m, MsgType t) {
  if (m.type != t)
    return Error{EPROTO, strf("expected a %.*s message, got %.*s", int(msg_type_name(t).size()),
                              msg_type_name(t).data(), int(msg_type_name(m.type).size()),
                              msg_type_name(m.type).data())};
  return ok();
}

// Reads the fixed body T; `rest` gets the bytes after it.
template <class T>
Result<T> fixed(const Message& m, MsgType t, std::span<const std::byte>* rest = nullptr) {
  LM_TRY(expect_type(m, t));
  if (m.body.size() < sizeof(T)) return bad(m, strf("body %zu bytes, needs at least %zu", m.body.size(), sizeof(T)));
  if (!rest && m.body.size() != sizeof(T))
    return bad(m, strf("body %zu bytes, expected exactly %zu", m.body.size(), sizeof(T)));
  T v;
  std::memcpy(&v, m.body.data(), sizeof v);
  if (rest) *rest = m.body.subspan(sizeof(T));
  return v;
}

// A typed view of `count` elements that must fill `bytes` exactly from the start.
// The receive buffers are 8-aligned and every fixed body is a multiple of 8.
template <class T>
Result<std::span<const T>> array_view(const Message& m, std::span<const std::byte> bytes, uint64_t count,
                                      uint64_t limit, const char* what) {
  if (count > limit) return bad(m, strf("%s count %llu exceeds the limit %llu", what, (unsigned long long)count,
                                        (unsigned long long)limit));
  if (bytes.size() < count * sizeof(T))
    return bad(m, strf("%llu %s need %llu bytes, body has %zu", (unsigned long long)count, what,
                       (unsigned long long)(count * sizeof(T)), bytes.size()));
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(T))
    return bad(m, strf("%s array misaligned", what));
  return std::span<const T>(reinterpret_cast<const T*>(bytes.data()), count);
}

size_t max_codec_payload(Codec c) {
  switch (c) {
    case Codec::raw: return kPageSize;
    case Codec::zero: return 0;
    case Codec::uniform: return 8;
    default: return 2 * kPageSize;  // compressed formats may expand a little on bad input
  }
}

}  // namespace

Result<HelloBody> decode_hello(const Message& m) {
  HelloBody h = LM_TRY(fixed<HelloBody>(m, MsgType::hello));
  if (h.role > uint8_t(ChannelRole::bulk)) return bad(m, strf("unknown channel role %u", unsigned(h.role)));
  if (h.version_min > h.version_max)
    return bad(m, strf("version range %u..%u is empty", unsigned(h.version_min), unsigned(h.version_max)));
  if (h.role == uint8_t(ChannelRole::bulk) && h.index >= h.bulk_channels)
    return bad(m, strf("bulk index %u not below the %u bulk channels announced", unsigned(h.index),
                       unsigned(h.bulk_channels)));
  return h;
}

Result<AuthBody> decode_auth(const Message& m) { return fixed<AuthBody>(m, MsgType::auth); }
Result<AcceptBody> decode_accept(const Message& m) { return fixed<AcceptBody>(m, MsgType::accept); }

Result<MappingTable> decode_mappings(const Message& m) {
  std::span<const std::byte> rest;
  MappingsBody b = LM_TRY(fixed<MappingsBody>(m, MsgType::mappings, &rest));
  auto entries = LM_TRY(array_view<MappingEntry>(m, rest, b.count, kMaxMappings, "mapping entries"));
  if (rest.size() != entries.size_bytes()) return bad(m, strf("%zu trailing bytes", rest.size() - entries.size_bytes()));
  return MappingTable::make(std::vector<MappingEntry>(entries.begin(), entries.end()), b.generation);
}

Result<PageBatchView> decode_page_batch(const Message& m, const MappingTable& table, uint32_t codecs) {
  if (m.type != MsgType::page_batch && m.type != MsgType::page_reply) LM_TRY(expect_type(m, MsgType::page_batch));
  std::span<const std::byte> rest;
  PageBatchBody b = LM_TRY(fixed<PageBatchBody>(m, m.type, &rest));
  auto entries = LM_TRY(array_view<PageEntry>(m, rest, b.count, kMaxBatchPages, "page entries"));
  auto payload = rest.subspan(entries.size_bytes());
  if (payload.size() != b.payload_bytes)
    return bad(m, strf("payload_bytes %llu but %zu bytes follow the entries", (unsigned long long)b.payload_bytes,
                       payload.size()));
  uint64_t sum = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const PageEntry& e = entries[i];
    if (unsigned(e.codec) >= kCodecCount || !(codecs & (1u << unsigned(e.codec))))
      return bad(m, strf("page %zu at 0x%llx: codec %u not negotiated", i, (unsigned long long)e.addr,
                         unsigned(e.codec)));
    if (e.length > max_codec_payload(e.codec) || (e.codec == Codec::raw && e.length != kPageSize))
      return bad(m, strf("page %zu at 0x%llx: length %u invalid for codec %.*s", i, (unsigned long long)e.addr,
                         e.length, int(codec_name(e.codec).size()), codec_name(e.codec).data()));
    if (!table.contains(e.addr))
      return bad(m, strf("page %zu address 0x%llx is outside the announced mappings", i,
                         (unsigned long long)e.addr));
    sum += e.length;
  }
  if (sum != b.payload_bytes)
    return bad(m, strf("page lengths sum to %llu, payload_bytes says %llu", (unsigned long long)sum,
                       (unsigned long long)b.payload_bytes));
  return PageBatchView{b.id, entries, payload};
}

Result<RoundEndBody> decode_round_end(const Message& m) { return fixed<RoundEndBody>(m, MsgType::round_end); }

Result<DirtyBitmapView> decode_dirty_bitmap(const Message& m, const MappingTable& table) {
  std::span<const std::byte> rest;
  DirtyBitmapBody b = LM_TRY(fixed<DirtyBitmapBody>(m, MsgType::dirty_bitmap, &rest));
  if (b.pages > (uint64_t(1) << 36)) return bad(m, strf("%llu pages is implausible", (unsigned long long)b.pages));
  if (b.start % kPageSize) return bad(m, strf("start 0x%llx is not page aligned", (unsigned long long)b.start));
  if (rest.size() != (b.pages + 7) / 8)
    return bad(m, strf("%llu pages need %llu bitmap bytes, got %zu", (unsigned long long)b.pages,
                       (unsigned long long)((b.pages + 7) / 8), rest.size()));
  if (b.pages && !table.contains_range(b.start, b.start + b.pages * kPageSize))
    return bad(m, strf("range 0x%llx + %llu pages is outside the announced mappings", (unsigned long long)b.start,
                       (unsigned long long)b.pages));
  return DirtyBitmapView{b.start, b.pages,
                         std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(rest.data()), rest.size())};
}

Result<ExecStateView> decode_exec_state(const Message& m) {
  std::span<const std::byte> rest;
  ExecStateBody b = LM_TRY(fixed<ExecStateBody>(m, MsgType::exec_state, &rest));
  if (rest.size() != b.bytes)
    return bad(m, strf("state bytes %llu but %zu follow", (unsigned long long)b.bytes, rest.size()));
  return ExecStateView{b.kind, rest};
}

Result<PageRequestView> decode_page_request(const Message& m, const MappingTable& table) {
  std::span<const std::byte> rest;
  PageRequestBody b = LM_TRY(fixed<PageRequestBody>(m, MsgType::page_request, &rest));
  auto addrs = LM_TRY(array_view<uint64_t>(m, rest, b.count, kMaxRequestPages, "page addresses"));
  if (rest.size() != addrs.size_bytes()) return bad(m, strf("%zu trailing bytes", rest.size() - addrs.size_bytes()));
  for (size_t i = 0; i < addrs.size(); ++i)
    if (!table.contains(addrs[i]))
      return bad(m, strf("requested address 0x%llx is outside the announced mappings", (unsigned long long)addrs[i]));
  return PageRequestView{b.request_id, addrs};
}

Result<EventBody> decode_event(const Message& m) {
  if (m.type != MsgType::resumed) LM_TRY(expect_type(m, MsgType::ready));
  return fixed<EventBody>(m, m.type);
}

Result<ReadyBody> decode_ready(const Message& m) {
  if (m.version < 2) return ReadyBody{LM_TRY(fixed<EventBody>(m, MsgType::ready)), 0, {}};
  return fixed<ReadyBody>(m, MsgType::ready);
}

Result<std::span<const DigestEntry>> decode_digest(const Message& m, const MappingTable& table) {
  std::span<const std::byte> rest;
  DigestBody b = LM_TRY(fixed<DigestBody>(m, MsgType::digest, &rest));
  auto entries = LM_TRY(array_view<DigestEntry>(m, rest, b.count, kMaxMappings * 16ull, "digest entries"));
  if (rest.size() != entries.size_bytes()) return bad(m, strf("%zu trailing bytes", rest.size() - entries.size_bytes()));
  for (const auto& e : entries)
    if (e.start % kPageSize || e.end % kPageSize || !table.contains_range(e.start, e.end))
      return bad(m, strf("digest range [0x%llx, 0x%llx) is outside the announced mappings",
                         (unsigned long long)e.start, (unsigned long long)e.end));
  return entries;
}

Result<ErrorView> decode_error(const Message& m) {
  std::span<const std::byte> rest;
  ErrorBody b = LM_TRY(fixed<ErrorBody>(m, MsgType::error, &rest));
  if (rest.size() != b.text_bytes) return bad(m, strf("text_bytes %u but %zu follow", b.text_bytes, rest.size()));
  return ErrorView{b.code, std::string(reinterpret_cast<const char*>(rest.data()), rest.size())};
}

Result<CloseBody> decode_close(const Message& m) { return fixed<CloseBody>(m, MsgType::close); }

Error peer_error(const Message& m, std::string_view channel_name) {
  auto e = decode_error(m);
  if (!e) return std::move(e).error().context(strf("channel %.*s", int(channel_name.size()), channel_name.data()));
  return Error{e->code ? e->code : EPROTO,
               strf("channel %.*s: peer reported: %s", int(channel_name.size()), channel_name.data(), e->text.c_str())};
}

}  // namespace lm::transport
