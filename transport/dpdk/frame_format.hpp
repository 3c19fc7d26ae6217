// Wire layout of one reliable-protocol frame (after the Ethernet/IPv4/UDP
// headers, which the port adds and strips). Little-endian, x86_64; fixed
// layout checked below. A frame is: FrameHeader, then payload_len bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace lm::dpdk {

inline constexpr uint32_t kFrameMagic = 0x4b444d4c;  // "LMDK"
inline constexpr uint8_t kProtocolVersion = 2;  // 2: acks on request (kFlagAckReq)
inline constexpr unsigned kSackBits = 256;

enum class FrameType : uint8_t {
  hello = 1,   // session open: carries my nonce and the peer nonce I have seen
  data = 2,    // carries seq, one fragment of a message (or a FIN)
  ack = 3,     // cumulative + selective ack, window edge, RTT echo
  bye = 4,     // session close: every flow is drained on my side
  bye_ack = 5, // answer to bye
  reset = 6,   // fatal error on the sender's side; the receiver fails too
};

// Flags of a data frame.
enum FrameFlag : uint16_t {
  kFlagFirst = 1 << 0,  // first fragment of a message; msg_len is valid
  kFlagLast = 1 << 1,   // last fragment of a message
  kFlagFin = 1 << 2,    // end of this flow's stream (no payload)
  kFlagOpen = 1 << 3,   // the sender opened this flow as a channel (no payload)
  kFlagNoPayloadSum = 1 << 4,  // payload_sum not computed (PayloadChecksum::off)
  kFlagFlowOnly = 1 << 5,      // reset: only this flow (its channel was abandoned)
  // The sender wants an ack now: half its window sent since it last asked, the
  // frame that fills its window, the end of what it has queued, a FIN/OPEN, or
  // a retransmission. On a lossless flow the receiver acks only on request.
  kFlagAckReq = 1 << 6,
};

struct FrameHeader {
  uint32_t magic;
  uint8_t version;
  FrameType type;
  uint16_t flow;          // channel index within the session
  uint32_t nonce;         // sender's session nonce
  uint32_t peer_nonce;    // receiver's nonce as the sender knows it (0 before hello)
  uint64_t seq;           // data: sequence number of this frame within its flow
  uint64_t ack;           // next in-order seq the sender expects from the peer on this flow
  uint64_t window_edge;   // the peer may send seqs < window_edge on this flow
  uint64_t tx_ns;         // sender clock at this (re)transmission
  uint64_t echo_ns;       // RTT echo: tx_ns of the last data frame received + hold time
  uint32_t msg_len;       // first fragment: total message length
  uint16_t payload_len;
  uint16_t flags;         // FrameFlag
  uint32_t payload_sum;   // xxh3 (low 32 bits) of the payload; computed once per frame
  uint32_t header_sum;    // xxh3 (low 32 bits) of this header with header_sum = 0
  uint64_t sack[kSackBits / 64];  // bit i set: seq ack + 1 + i was received
};
// An ack frame's payload, when present, continues the SACK bitmap: its bit j
// stands for seq ack + 1 + kSackBits + j (so the whole receive window is
// reported; data frames carry only the header's part).
static_assert(sizeof(FrameHeader) == 104);
static_assert(offsetof(FrameHeader, seq) == 16);
static_assert(offsetof(FrameHeader, sack) == 72);
static_assert(std::is_trivially_copyable_v<FrameHeader>);

uint32_t checksum32(const void* data, size_t len);
void seal_header(FrameHeader& h);               // sets header_sum
bool header_valid(const FrameHeader& h);        // magic, version, header_sum

}  // namespace lm::dpdk
