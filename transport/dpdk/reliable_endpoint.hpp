// The reliable, ordered, message-oriented protocol over a FramePort.
// Independent of DPDK: it is driven by poll(now_ns) from one thread (the
// poll-mode worker, or a test loop with a simulated clock) while any number
// of application threads submit messages and take received ones.
//
// Per flow: 64-bit sequence numbers, cumulative + selective (256-bit bitmap)
// acks piggybacked on every frame, loss detection by time order (RACK: a frame
// sent before one that was delivered, by more than a reordering window, is
// lost) and by retransmission timeout (RTO from SRTT/RTTVAR, exponential
// backoff), duplicate suppression, a receive window (reorder slots) and a send
// window sized from the measured delivery rate (2 x rate x min RTT).
// Messages larger than a frame are split into fragments and reassembled.
// Session: hello handshake with nonces (stale frames from an earlier session
// are dropped), FIN per flow, bye/bye_ack so that ports stop only after both
// sides are drained, keepalives and a peer timeout so a vanished peer turns
// into an error instead of a hang.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <vector>

#include "common/error.hpp"
#include "transport/dpdk/frame_format.hpp"
#include "transport/dpdk/frame_port.hpp"

namespace lm::dpdk {

// A contiguous copy of a received message (receive(), try_receive()): written
// once, so its buffer skips the zero-fill a std::vector would do.
template <class T>
struct UninitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) {}
  template <class U>
  void construct(U* p) {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};
using MessageBuffer = std::vector<uint8_t, UninitAllocator<uint8_t>>;

// A received message in place: the frames that carried it (one reference
// each, held until release_message()) and their payloads in order. The poller
// does not copy payloads; whoever takes the message reads them where the port
// put them (an mbuf), or copies them once into a buffer of its own.
struct RxMessage {
  std::vector<Frame> frames;
  std::vector<std::span<const uint8_t>> pieces;  // no empty pieces
  size_t size = 0;                               // sum of the pieces
  // Beyond ReliableConfig::in_place_frames the payloads are copied into this
  // buffer instead (its one piece), as frames arrive.
  MessageBuffer copied;
  uint32_t reserved = 0;  // of in_place_frames
  // The message as one buffer: `copied` moved, or the pieces copied into `out`.
  void to_contiguous(MessageBuffer& out);
};

enum class PayloadChecksum { on, off };
// copy: payloads are copied into frames and a send completes once copied.
// attach: payloads are attached to frames without copying where the port can
// (FramePort::attach) and a send completes once the peer acknowledged it.
enum class SendMode { copy, attach };

struct ReliableConfig {
  uint16_t flows = 1;
  // Every header is checksummed; payloads too unless off (memif is shared
  // memory with no wire to corrupt it; off saves a pass over the data per side).
  PayloadChecksum payload_checksum = PayloadChecksum::on;
  SendMode send_mode = SendMode::copy;
  uint32_t max_message = 64u << 20;   // larger messages are refused / a protocol error
  uint32_t reorder_slots = 1024;      // receive window per flow, frames (power of 2)
  uint32_t send_slots = 1024;         // frames in flight per flow, at most (power of 2)
  uint32_t initial_window = 128;      // frames
  uint32_t min_window = 32;
  uint32_t max_payload = 0;           // 0: as much as the port's frames hold
  uint64_t rto_initial_ns = 20'000'000;
  uint64_t rto_min_ns = 10'000'000;      // a descheduled peer on a shared host looks like loss below this
  uint64_t rto_max_ns = 500'000'000;
  // Tail-loss probe: once no data frame was sent for max(SRTT, this) and
  // frames are undelivered, the newest is sent again, so a lost tail is found
  // by the probe's ack in about an RTT instead of by an RTO (10 ms at least).
  uint64_t tail_probe_min_ns = 50'000;
  // Acks on a flow that saw a gap, duplicate or out-of-window frame within its
  // last reorder_slots frames: every ack_every frames or ack_delay_ns after
  // the first unacked one. A lossless flow (the fast path) acks when the
  // sender asks (kFlagAckReq), when its window edge moved by a quarter, or
  // lossless_ack_delay_ns after the first unacked frame (a safety net).
  uint64_t ack_delay_ns = 50'000;
  uint32_t ack_every = 16;
  uint64_t lossless_ack_delay_ns = 1'000'000;
  uint64_t hello_interval_ns = 2'000'000;
  uint64_t keepalive_ns = 10'000'000;
  uint64_t peer_timeout_ns = 2'000'000'000;
  uint64_t close_linger_ns = 50'000'000;  // after bye answered without bye_ack
  size_t rx_queue_bytes = 256u << 20;     // received, not yet taken by the application
  // Frames that received messages may hold in place (being reassembled or not
  // yet released by the application), all flows together; a message that
  // would exceed it is copied into a buffer as it arrives. Keeps a port's
  // frame pool from running dry with messages no one takes yet (then nothing,
  // the message someone waits for included, could be received).
  uint32_t in_place_frames = 2048;
};

struct FlowCounters {
  uint64_t frames_tx = 0, frames_rx = 0;        // data frames (incl. retransmissions)
  uint64_t payload_bytes_tx = 0, payload_bytes_rx = 0;
  uint64_t acks_tx = 0, acks_rx = 0;
  uint64_t ack_requests_tx = 0;                 // data frames sent with kFlagAckReq
  uint64_t fast_path_rx = 0;                    // data frames received while the flow was lossless
  uint64_t messages_tx = 0, messages_rx = 0;
  uint64_t retransmits = 0;                     // frames sent again
  uint64_t attached_frames = 0;                 // payload attached, not copied (SendMode::attach)
  uint64_t timeouts = 0;                        // RTO expiries
  uint64_t tail_probes = 0;                     // newest frames sent again by the tail-loss probe
  uint64_t losses_detected = 0;                 // frames judged lost (gap or timeout)
  uint64_t duplicates = 0;                      // data frames received twice
  uint64_t out_of_window = 0;
  uint64_t srtt_ns = 0, min_rtt_ns = 0, rtt_samples = 0;
  uint32_t window = 0;                          // current send window, frames
};

struct EndpointCounters {
  uint64_t frames_tx = 0, frames_rx = 0;        // every frame, all types
  uint64_t bad_frames = 0;                      // checksum, magic, length
  uint64_t stale_frames = 0;                    // wrong nonce (earlier session)
  uint64_t tx_stalls = 0;                       // port accepted fewer than offered
  uint64_t alloc_failures = 0;
};

enum class EndpointState { connecting, established, closing, closed, failed };

class ReliableEndpoint {
 public:
  static Result<std::unique_ptr<ReliableEndpoint>> create(FramePort& port, const ReliableConfig& cfg,
                                                          uint32_t nonce);
  ~ReliableEndpoint();
  ReliableEndpoint(const ReliableEndpoint&) = delete;
  ReliableEndpoint& operator=(const ReliableEndpoint&) = delete;

  // --- poller thread only ---
  // Does one round of work: receive, deliver, segment, (re)transmit, timers.
  // Returns true when it made progress (a hint for back-off in idle loops;
  // a device that takes nothing is no progress).
  bool poll(uint64_t now_ns);

  // --- any thread ---
  // Queues a message made of several buffers; they must stay valid until
  // send_complete(flow, ticket) (the poller has copied them into frames).
  Result<uint64_t> submit(uint16_t flow, std::span<const std::span<const uint8_t>> bufs);
  bool send_complete(uint16_t flow, uint64_t ticket) const;
  // Blocks until the ticket's buffers are copied, the endpoint fails, or the deadline.
  Result<void> wait_sent(uint16_t flow, uint64_t ticket, uint64_t timeout_ns, std::stop_token stop = {});
  // Next received message of a flow in place, if any. An empty optional means
  // nothing yet; end_of_stream(flow) says the peer closed the flow.
  std::optional<RxMessage> try_receive_message(uint16_t flow);
  // Blocks for the next message in place; error on failure, timeout, end of
  // stream or (ECANCELED) `stop` stopped.
  Result<RxMessage> receive_message(uint16_t flow, uint64_t timeout_ns, std::stop_token stop = {});
  // Hands a message's frames back (the poller releases them); `m` is left
  // empty. Every message taken must be released before the endpoint goes.
  void release_message(RxMessage& m);
  // The same as one contiguous copy (the frames are handed back at once).
  std::optional<MessageBuffer> try_receive(uint16_t flow);
  Result<MessageBuffer> receive(uint16_t flow, uint64_t timeout_ns, std::stop_token stop = {});
  bool end_of_stream(uint16_t flow) const;
  // Channels over flows: open_flow marks a flow opened (an in-order mark the
  // peer sees before the flow's first message); accept_flow returns the next
  // flow the peer opened.
  Result<void> open_flow(uint16_t flow);
  Result<uint16_t> accept_flow(uint64_t timeout_ns, std::stop_token stop = {});
  // Per-flow close: FIN after what is queued; wait_flow_closed waits until our
  // FIN is acknowledged and the peer's FIN arrived (messages still arriving
  // are dropped).
  void close_flow(uint16_t flow);
  // Abandons a flow without the handshake (its channel was destroyed unclosed):
  // queued sends are dropped, nothing of the caller's memory is read again,
  // and the peer's calls on the flow fail ("abandoned"), as TCP's reset.
  void abort_flow(uint16_t flow);
  Result<void> wait_flow_closed(uint16_t flow, uint64_t timeout_ns);
  // Starts the close handshake: FIN on every flow after what is queued, then bye.
  void close();
  // Blocks until the handshake finished (closed) or failed.
  Result<void> wait_closed(uint64_t timeout_ns);
  Result<void> wait_established(uint64_t timeout_ns);

  EndpointState state() const { return state_.load(std::memory_order_acquire); }
  std::optional<Error> error() const;
  // Test hook: fail as if the peer vanished (no more polling either).
  void abort(std::string why);

  // Snapshots; safe from any thread (values may be slightly stale).
  FlowCounters flow_counters(uint16_t flow) const;
  EndpointCounters counters() const;
  uint16_t flows() const { return uint16_t(flows_.size()); }
  uint32_t max_payload() const { return max_payload_; }

 private:
  struct Flow;
  ReliableEndpoint(FramePort& port, const ReliableConfig& cfg, uint32_t nonce);

  void handle_frame(Frame& f, uint64_t now);
  void handle_data(Flow& fl, const FrameHeader& h, Frame& f, uint64_t now);
  // ext: an ack frame's payload, the SACK bitmap beyond the header's 256 bits.
  void handle_ack_fields(Flow& fl, const FrameHeader& h, uint64_t now, std::span<const uint8_t> ext = {});
  void deliver_in_order(Flow& fl);
  bool segment(Flow& fl, uint64_t now);
  void detect_losses(Flow& fl, uint64_t rack_ts, uint64_t now);
  void check_rto(Flow& fl, uint64_t now);
  void check_tail_probe(Flow& fl, uint64_t now);
  void update_window(Flow& fl, uint64_t now);
  void queue_control(FrameType type, uint16_t flow, uint64_t now, uint16_t flags = 0);
  void abandon(Flow& fl, uint64_t now);
  void fill_ack_fields(Flow& fl, FrameHeader& h, uint64_t now);
  void stage_data(Flow& fl, uint64_t seq, uint64_t now, bool ack_req);
  size_t flush_tx();
  void session_timers(uint64_t now);
  void fail(Error e);
  void notify_all();
  void release_returned();

  FramePort& port_;
  ReliableConfig cfg_;
  uint32_t max_payload_;
  uint32_t nonce_;
  uint32_t peer_nonce_ = 0;
  std::vector<std::unique_ptr<Flow>> flows_;

  std::atomic<EndpointState> state_{EndpointState::connecting};
  mutable std::mutex state_mu_;
  std::condition_variable state_cv_;
  std::optional<Error> error_;
  std::atomic<bool> close_requested_{false};
  std::deque<uint16_t> opened_by_peer_;  // guarded by state_mu_
  // Frames of messages the application is done with; the poller releases
  // them (a port is called from the poller thread only).
  std::mutex returned_mu_;
  std::vector<Frame> returned_;  // guarded by returned_mu_
  std::atomic<bool> any_returned_{false};
  std::atomic<uint32_t> in_place_held_{0};  // reserved by messages held in place

  // Poller-only state.
  std::vector<Frame> tx_batch_;
  std::vector<Frame> rx_batch_;
  std::vector<Frame> acked_frames_;  // handle_ack_fields: released together
  uint64_t last_rx_ns_ = 0;
  uint64_t last_hello_ns_ = 0;
  uint64_t last_bye_ns_ = 0;
  uint64_t bye_received_ns_ = 0;
  bool peer_drained_ = false;
  bool started_ = false;
  EndpointCounters counters_;
  mutable std::mutex counters_mu_;
  EndpointCounters counters_snapshot_;
  uint64_t last_snapshot_ns_ = 0;
};

const char* endpoint_state_name(EndpointState s);

}  // namespace lm::dpdk
