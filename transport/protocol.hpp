// livemig wire protocol: every message is one Channel message laid out as
//   MsgHeader | type-specific fixed body | variable arrays...
// All integers little-endian (x86_64 native; static_asserts pin the layout).
// MsgHeader.checksum is XXH3-64 over the message with the checksum field
// zeroed, all of it but a page batch's payload when the end-to-end digest
// checks that instead (MsgHeader.unchecked, version 4). Every length, count
// and page address is validated before use; page addresses must lie in the
// MappingTable announced at handshake.
// See docs/protocol.md for the sequence diagrams.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/error.hpp"
#include "common/page.hpp"
#include "common/page_batch.hpp"
#include "transport/channel.hpp"

namespace lm::transport {

inline constexpr uint32_t kMsgMagic = 0x57494d4c;  // "LMIW"
// Version 2: `ready` carries ReadyBody (how the destination's memory was made ready).
// Version 3: the handshake authenticates both sides with an HMAC over the
// whole transcript (AuthBody of 32 bytes, both ways). Older peers are refused
// at negotiation: their keyed XXH3 proof is not a MAC, and falling back to it
// would be a downgrade.
// Version 4: MsgHeader.unchecked, the trailing bytes the checksum leaves out
// (0 in version 3: every byte checked).
inline constexpr uint16_t kProtocolVersionMin = 3;
inline constexpr uint16_t kProtocolVersionMax = 4;

enum class MsgType : uint8_t {
  hello = 1,         // HelloBody: versions, page size, features, codecs, session, role
  auth = 2,          // AuthBody: HMAC proof of the pre-shared key over the handshake transcript
  accept = 3,        // AcceptBody: the channel joined the session
  mappings = 4,      // MappingsBody + MappingEntry[count]
  page_batch = 5,    // PageBatchBody + PageEntry[count] + payload
  round_end = 6,     // RoundEndBody
  dirty_bitmap = 7,  // DirtyBitmapBody + bitmap bytes
  exec_state = 8,    // ExecStateBody + opaque bytes
  page_request = 9,  // PageRequestBody + uint64 addr[count]
  page_reply = 10,   // PageBatchBody (id = request id) + PageEntry[count] + payload
  ready = 11,        // EventBody: destination holds the image / is ready
  resumed = 12,      // EventBody: destination process runs
  digest = 13,       // DigestBody + DigestEntry[count]
  error = 14,        // ErrorBody + text
  close = 15,        // CloseBody
};
inline constexpr uint8_t kMsgTypeMax = 15;
std::string_view msg_type_name(MsgType t);

struct MsgHeader {
  uint32_t magic;
  uint16_t version;  // negotiated version (hello: the sender's highest)
  uint8_t type;      // MsgType
  uint8_t flags;     // reserved, 0
  uint32_t length;     // whole message, header included
  uint32_t unchecked;  // version >= 4: trailing bytes the checksum leaves out; else 0
  uint64_t checksum;   // XXH3-64 of the first length - unchecked bytes, this field zero
};
static_assert(sizeof(MsgHeader) == 24);
static_assert(std::is_trivially_copyable_v<MsgHeader>);

// --- handshake ------------------------------------------------------------

enum class ChannelRole : uint8_t { control = 0, priority = 1, bulk = 2 };
std::string_view role_name(ChannelRole r);

// Feature bits announced in hello; the session uses the common subset.
enum Feature : uint64_t {
  kFeatureDirtyBitmap = 1u << 0,
  kFeaturePostCopy = 1u << 1,
  kFeatureDigest = 1u << 2,
};

struct HelloBody {
  uint16_t version_min;
  uint16_t version_max;
  uint32_t page_size;
  uint64_t features;
  uint32_t codecs;  // bit (1 << Codec)
  uint16_t bulk_channels;
  uint8_t role;     // ChannelRole
  uint8_t psk;      // 1: the sender holds a pre-shared key and requires the peer's proof
  uint16_t index;   // bulk index (0 for control/priority)
  uint16_t reserved;
  uint32_t reserved2;
  uint64_t session_id;
  std::array<uint8_t, 16> nonce;  // fresh random challenge; both hellos are in both proofs
};
static_assert(sizeof(HelloBody) == 56);
static_assert(std::is_trivially_copyable_v<HelloBody>);

// Sent by both sides when both hold a key (docs/protocol.md, "Authentication").
struct AuthBody {
  std::array<uint8_t, 32> proof;  // HMAC-SHA256(handshake key, direction label, transcript)
};
static_assert(sizeof(AuthBody) == 32);
static_assert(std::is_trivially_copyable_v<AuthBody>);

struct AcceptBody {
  uint16_t version;  // negotiated
  uint16_t reserved;
  uint32_t codecs;   // common codecs
  uint64_t features;  // common features
};
static_assert(sizeof(AcceptBody) == 16);

// --- mapping table ---------------------------------------------------------

struct MappingEntry {
  uint64_t start;  // page aligned, [start, end)
  uint64_t end;
  uint32_t prot;   // PROT_* of the source mapping
  uint32_t flags;  // reserved
};
static_assert(sizeof(MappingEntry) == 24);
static_assert(std::is_trivially_copyable_v<MappingEntry>);

struct MappingsBody {
  uint32_t count;
  uint32_t generation;  // increases when the source re-announces its maps
};
static_assert(sizeof(MappingsBody) == 8);

inline constexpr uint32_t kMaxMappings = 1u << 16;

// Sorted, non-overlapping, page-aligned ranges; lookups are binary searches.
class MappingTable {
 public:
  // Validates (aligned, non-empty, sorted, disjoint) and builds.
  static Result<MappingTable> make(std::vector<MappingEntry> entries, uint32_t generation = 0);
  bool contains(uint64_t addr) const;                // page at addr lies in a mapping
  bool contains_range(uint64_t start, uint64_t end) const;  // [start,end) in ONE mapping
  const std::vector<MappingEntry>& entries() const { return entries_; }
  uint32_t generation() const { return generation_; }
  uint64_t total_bytes() const;

 private:
  std::vector<MappingEntry> entries_;
  uint32_t generation_ = 0;
};

// --- bulk data ---------------------------------------------------------------

struct PageBatchBody {
  uint64_t id;  // page_batch: round number; page_reply: the request id (0: pushed)
  uint32_t count;
  uint32_t flags;  // reserved
  uint64_t payload_bytes;
};
static_assert(sizeof(PageBatchBody) == 24);
static_assert(std::is_trivially_copyable_v<PageBatchBody>);

inline constexpr uint32_t kMaxBatchPages = 1u << 16;

// RoundEndBody::flags
inline constexpr uint32_t kRoundEndFinal = 1u << 0;  // the last round of pre-copy (or of the push)

struct RoundEndBody {
  uint32_t round;
  uint32_t flags;           // kRoundEndFinal
  uint64_t pages;           // pages sent this round
  uint64_t bytes;           // payload bytes sent this round
  uint64_t zero_pages;
  uint64_t dirty_pages;     // pages found dirty at the start of the round
  uint64_t duration_ns;
  uint64_t batches;         // page_batch messages sent this round, all channels
};
static_assert(sizeof(RoundEndBody) == 56);

struct DirtyBitmapBody {
  uint64_t start;   // page aligned
  uint64_t pages;   // bits that follow: ceil(pages / 8) bytes, bit i = page start + i*4K
};
static_assert(sizeof(DirtyBitmapBody) == 16);

struct ExecStateBody {
  uint32_t kind;  // 1: livemig-guest registers, 2: ptrace register set, ...
  uint32_t reserved;
  uint64_t bytes;  // opaque state that follows
};
static_assert(sizeof(ExecStateBody) == 16);

struct PageRequestBody {
  uint64_t request_id;
  uint32_t count;
  uint32_t reserved;
};
static_assert(sizeof(PageRequestBody) == 16);
inline constexpr uint32_t kMaxRequestPages = 4096;

struct EventBody {
  uint64_t time_ns;  // sender's CLOCK_MONOTONIC at the event
  uint64_t value;    // event-specific (e.g. pages held)
};
static_assert(sizeof(EventBody) == 16);

// `ready` from version 2 on (version 1: EventBody alone).
struct ReadyBody {
  EventBody event;
  uint64_t population_ns;       // the destination writing its memory before `ready` (0: none)
  std::array<char, 16> memory;  // what the memory is ("hugetlb", "anon-thp", "shmem"), NUL padded
};
static_assert(sizeof(ReadyBody) == 40);
static_assert(std::is_trivially_copyable_v<ReadyBody>);

struct DigestEntry {
  uint64_t start;  // page aligned range [start, end) inside one mapping
  uint64_t end;
  uint64_t hash;   // XXH3-64 of the range's bytes
};
static_assert(sizeof(DigestEntry) == 24);
// DigestBody::algorithm
inline constexpr uint32_t kDigestXxh3_64 = 1;
struct DigestBody {
  uint32_t count;
  uint32_t algorithm;  // kDigestXxh3_64
};
static_assert(sizeof(DigestBody) == 8);

struct ErrorBody {
  int32_t code;  // errno on the sender, or 0
  uint32_t text_bytes;
};
static_assert(sizeof(ErrorBody) == 8);

// CloseBody::reason
inline constexpr uint32_t kCloseDone = 0;     // the verdict: the destination keeps the VM
inline constexpr uint32_t kCloseAborted = 1;  // reserved; a failure is sent as an error message
struct CloseBody {
  uint32_t reason;  // kCloseDone, kCloseAborted
  uint32_t reserved;
};
static_assert(sizeof(CloseBody) == 8);

// --- checksums ---------------------------------------------------------------

uint64_t checksum64(std::span<const ConstBuffer> pieces);

// --- encoding ----------------------------------------------------------------

// An outgoing message: the header and fixed body in inline storage plus the
// caller's payload pieces (not copied). Keep it (and the payloads) alive until
// the channel completes the send; then it may be reused for the next message.
class OutMessage {
 public:
  static constexpr size_t kHeadCapacity = 128;
  static constexpr size_t kMaxPieces = 6;

  std::span<const ConstBuffer> pieces() const { return {pieces_.data(), npieces_}; }
  size_t size() const;
  MsgType type() const;

  // Starts a message: header + fixed body copied inline, then `extra` pieces.
  // The checksum leaves out the last `unchecked` bytes (version >= 4 only).
  void build(MsgType type, uint16_t version, const void* body, size_t body_bytes,
             std::initializer_list<ConstBuffer> extra = {}, size_t unchecked = 0);

 private:
  alignas(8) std::array<std::byte, kHeadCapacity> head_{};
  std::array<ConstBuffer, kMaxPieces> pieces_{};
  size_t npieces_ = 0;
};

void encode_hello(OutMessage& m, const HelloBody& hello);
void encode_auth(OutMessage& m, uint16_t version, const AuthBody& auth);
void encode_accept(OutMessage& m, uint16_t version, const AcceptBody& accept);
void encode_mappings(OutMessage& m, uint16_t version, const MappingTable& table);
// Who checks a page batch's payload: the message checksum, or (version >= 4)
// the end-to-end digest the destination's pages are verified against before
// the source is released; the checksum then covers header, body and entries.
// Hashing the payload on both sides cost ~2/3 of all hashing in a migration.
enum class PayloadCheck : uint8_t { checksum, digest };

// entries and payload are sent as separate pieces, not copied: the compressor's
// batch goes to the wire as it is.
void encode_page_batch(OutMessage& m, uint16_t version, uint64_t round, std::span<const PageEntry> entries,
                       std::span<const std::byte> payload, PayloadCheck check = PayloadCheck::checksum);
void encode_page_reply(OutMessage& m, uint16_t version, uint64_t request_id, std::span<const PageEntry> entries,
                       std::span<const std::byte> payload);
void encode_round_end(OutMessage& m, uint16_t version, const RoundEndBody& body);
void encode_dirty_bitmap(OutMessage& m, uint16_t version, uint64_t start, uint64_t pages,
                         std::span<const uint8_t> bitmap);
void encode_exec_state(OutMessage& m, uint16_t version, uint32_t kind, std::span<const std::byte> state);
void encode_page_request(OutMessage& m, uint16_t version, uint64_t request_id, std::span<const uint64_t> addrs);
void encode_event(OutMessage& m, uint16_t version, MsgType ready_or_resumed, const EventBody& body);
// `ready` in the layout of `version` (version 1 carries only the event).
void encode_ready(OutMessage& m, uint16_t version, const ReadyBody& body);
void encode_digest(OutMessage& m, uint16_t version, std::span<const DigestEntry> digests);
// `text` is copied inline up to the head capacity left (errors are short).
void encode_error(OutMessage& m, uint16_t version, int code, std::string_view text);
void encode_close(OutMessage& m, uint16_t version, uint32_t reason);

// --- decoding ------------------------------------------------------------------

// A received message whose header, length and checksum were verified. Views
// into the channel's receive buffer (valid until the channel's next recv).
struct Message {
  MsgType type{};
  uint16_t version = 0;
  std::span<const std::byte> body;  // after MsgHeader
};

// Verifies magic, length, the unchecked tail, type and checksum. Errors name
// `channel_name`.
Result<Message> parse_message(std::span<const std::byte> bytes, std::string_view channel_name);

// recv() + parse_message(); a clean close of the channel is an error here
// ("closed by peer") unless `closed` is given, which is then set instead.
// ECANCELED once `stop` is stopped (Channel::recv).
Result<Message> recv_message(Channel& channel, Timeout timeout, bool* closed = nullptr, std::stop_token stop = {});
// send + wait_sent of an OutMessage.
Result<void> send_message(Channel& channel, const OutMessage& m, Timeout timeout);

struct PageBatchView {
  uint64_t id = 0;  // round (page_batch) or request id (page_reply)
  std::span<const PageEntry> entries;
  std::span<const std::byte> payload;  // payloads concatenated in entry order
};

// Each decoder checks the type, the sizes against the body, every count
// against its limit, and (where given) every address against the table.
Result<HelloBody> decode_hello(const Message& m);
Result<AuthBody> decode_auth(const Message& m);
Result<AcceptBody> decode_accept(const Message& m);
Result<MappingTable> decode_mappings(const Message& m);
// codecs: bit mask of negotiated codecs; a page with another codec is rejected.
Result<PageBatchView> decode_page_batch(const Message& m, const MappingTable& table, uint32_t codecs);
Result<RoundEndBody> decode_round_end(const Message& m);
struct DirtyBitmapView {
  uint64_t start = 0;
  uint64_t pages = 0;
  std::span<const uint8_t> bits;
};
Result<DirtyBitmapView> decode_dirty_bitmap(const Message& m, const MappingTable& table);
struct ExecStateView {
  uint32_t kind = 0;
  std::span<const std::byte> state;
};
Result<ExecStateView> decode_exec_state(const Message& m);
struct PageRequestView {
  uint64_t request_id = 0;
  std::span<const uint64_t> addrs;
};
Result<PageRequestView> decode_page_request(const Message& m, const MappingTable& table);
Result<EventBody> decode_event(const Message& m);
// `ready` of any version (version 1: population_ns 0, memory empty).
Result<ReadyBody> decode_ready(const Message& m);
Result<std::span<const DigestEntry>> decode_digest(const Message& m, const MappingTable& table);
struct ErrorView {
  int code = 0;
  std::string text;
};
Result<ErrorView> decode_error(const Message& m);
Result<CloseBody> decode_close(const Message& m);

// Turns a received error message into an lm::Error naming the peer's text.
Error peer_error(const Message& m, std::string_view channel_name);

}  // namespace lm::transport
