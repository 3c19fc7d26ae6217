#include "transport/dpdk/reliable_endpoint.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/clock.hpp"

namespace lm::dpdk {

namespace {

constexpr size_t kTxBatch = 32;
constexpr size_t kRxBurst = 32;
constexpr unsigned kRateSamples = 8;
constexpr uint64_t kRttFloorNs = 200'000;      // poll loops batch: RTT is never "free"
constexpr uint64_t kSnapshotEveryNs = 1'000'000;

bool is_pow2(uint32_t v) { return v && !(v & (v - 1)); }

std::chrono::steady_clock::time_point deadline_after(uint64_t timeout_ns) {
  return std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
}

}  // namespace

const char* endpoint_state_name(EndpointState s) {
  switch (s) {
    case EndpointState::connecting: return "connecting";
    case EndpointState::established: return "established";
    case EndpointState::closing: return "closing";
    case EndpointState::closed: return "closed";
    case EndpointState::failed: return "failed";
  }
  return "?";
}

struct SendJob {
  std::vector<std::span<const uint8_t>> bufs;
  uint64_t total = 0;
  uint64_t ticket = 0;
};

struct TxSlot {
  Frame frame;
  uint64_t last_tx_ns = 0;
  uint32_t tx_count = 0;
  bool delivered = true;
  bool queued_retx = false;
};

struct RxSlot {
  Frame frame;
  uint64_t seq = 0;
  bool filled = false;
};

struct ReliableEndpoint::Flow {
  uint16_t id = 0;

  // Shared with application threads (mu guards jobs/inbox/next_ticket/snapshot).
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<SendJob> jobs;
  uint64_t next_ticket = 1;
  std::atomic<uint64_t> completed_ticket{0};
  std::atomic<size_t> pending_jobs{0};
  std::deque<RxMessage> inbox;
  std::atomic<size_t> inbox_bytes{0};
  std::atomic<bool> peer_fin{false};
  std::atomic<bool> open_requested{false}, close_requested{false};
  std::atomic<bool> abort_requested{false}, peer_aborted{false};
  bool aborted_local = false;
  std::atomic<bool> fin_acked_shared{false};
  FlowCounters snapshot;

  // Poller-only: sender.
  std::vector<TxSlot> tx;
  uint64_t snd_una = 0, snd_next = 0;
  uint64_t high_delivered = 0;  // one past the highest seq acked or SACKed
  uint64_t next_ack_req = 0;    // ask for an ack no later than at this seq (kFlagAckReq)
  uint64_t peer_edge = 0;
  std::vector<uint64_t> retx_queue;
  std::deque<std::pair<uint64_t, uint64_t>> awaiting_ack;  // SendMode::attach: ticket, last seq
  std::optional<SendJob> job;
  size_t job_buf = 0, job_buf_off = 0;
  uint64_t job_off = 0;
  bool fin_queued = false, fin_acked = false, open_sent = false;
  uint64_t fin_seq = 0;
  uint64_t srtt = 0, rttvar = 0, rto = 0, min_rtt = 0;
  uint64_t last_echo = 0;
  uint64_t next_rto_check = 0;
  bool tail_probed = false;  // a probe is out and nothing was delivered since
  uint64_t last_data_tx_ns = 0;  // the last data frame sent, new or again
  uint32_t window = 0;
  uint64_t rate_start_ns = 0, rate_delivered = 0, rate_lost_mark = 0;
  double loss_cap = 1e9;  // frames; lowered on heavy loss
  double rate_samples[kRateSamples] = {};  // frames per ns
  unsigned rate_idx = 0;

  // Poller-only: receiver.
  std::vector<RxSlot> rx;
  uint64_t rcv_next = 0, rcv_deliver = 0;
  size_t ooo = 0;
  uint32_t unacked = 0;
  uint64_t first_unacked_ns = 0;
  bool ack_now = false;
  // The flow is lossless (acks on request only) once rcv_next reaches this:
  // reorder_slots frames past the last gap, duplicate or out-of-window frame.
  uint64_t calm_from = 0;
  uint64_t last_rx_tx_ns = 0, last_rx_local_ns = 0;
  uint64_t advertised_edge = 0;
  RxMessage reasm;  // frames of the message being received, held in place
  uint32_t reasm_len = 0, reasm_off = 0;
  bool in_msg = false;
  bool data_staged = false;  // an ack rode on a data frame this poll
  uint64_t last_tx_ns = 0;

  FlowCounters c;
};

ReliableEndpoint::ReliableEndpoint(FramePort& port, const ReliableConfig& cfg, uint32_t nonce)
    : port_(port), cfg_(cfg), nonce_(nonce) {}

Result<std::unique_ptr<ReliableEndpoint>> ReliableEndpoint::create(FramePort& port,
                                                                   const ReliableConfig& cfg,
                                                                   uint32_t nonce) {
  if (cfg.flows == 0) return Error::msg("reliable endpoint: at least one flow is needed");
  if (!is_pow2(cfg.reorder_slots) || !is_pow2(cfg.send_slots))
    return Error::msg(strf("reliable endpoint: reorder_slots %u and send_slots %u must be powers of 2",
                           cfg.reorder_slots, cfg.send_slots));
  if (nonce == 0) return Error::msg("reliable endpoint: nonce must not be 0");
  uint32_t cap = port.frame_capacity();
  if (cap <= sizeof(FrameHeader) + 64)
    return Error::msg(strf("reliable endpoint: frames of %u bytes are too small", cap));
  uint32_t payload = std::min<uint32_t>(cap - sizeof(FrameHeader), 0xffff);
  if (cfg.max_payload) payload = std::min(payload, cfg.max_payload);
  std::unique_ptr<ReliableEndpoint> ep(new ReliableEndpoint(port, cfg, nonce));
  ep->max_payload_ = payload;
  for (uint16_t i = 0; i < cfg.flows; ++i) {
    auto fl = std::make_unique<Flow>();
    fl->id = i;
    fl->tx.resize(cfg.send_slots);
    fl->rx.resize(cfg.reorder_slots);
    fl->peer_edge = cfg.initial_window;  // until the peer advertises its window
    fl->advertised_edge = cfg.reorder_slots;
    fl->rto = cfg.rto_initial_ns;
    fl->window = std::clamp(cfg.initial_window, cfg.min_window, cfg.send_slots);
    ep->flows_.push_back(std::move(fl));
  }
  ep->tx_batch_.reserve(4 * kTxBatch);
  ep->acked_frames_.reserve(cfg.send_slots);
  ep->rx_batch_.resize(kRxBurst);
  return ep;
}

ReliableEndpoint::~ReliableEndpoint() {
  // The port outlives the endpoint: hand every held frame back.
  if (!tx_batch_.empty()) port_.release(tx_batch_.data(), tx_batch_.size());
  for (auto& fl : flows_) {
    for (auto& s : fl->tx)
      if (!s.delivered) port_.release(&s.frame, 1);
    for (auto& s : fl->rx)
      if (s.filled) port_.release(&s.frame, 1);
    release_message(fl->reasm);
    for (auto& m : fl->inbox) release_message(m);
  }
  if (!returned_.empty()) port_.release(returned_.data(), returned_.size());
}

void RxMessage::to_contiguous(MessageBuffer& out) {
  if (frames.empty() && !pieces.empty() && pieces[0].data() == copied.data()) {
    out = std::move(copied);
    return;
  }
  out.resize(size);  // no zero-fill: see UninitAllocator
  size_t off = 0;
  for (auto p : pieces) {
    std::memcpy(out.data() + off, p.data(), p.size());
    off += p.size();
  }
}

// ---------------------------------------------------------------- any thread

Result<uint64_t> ReliableEndpoint::submit(uint16_t flow, std::span<const std::span<const uint8_t>> bufs) {
  if (flow >= flows_.size()) return Error::msg(strf("send on flow %u: only %zu flows", flow, flows_.size()));
  if (auto e = error()) return Error{e->code, e->message}.context(strf("send on flow %u", flow));
  if (close_requested_.load()) return Error::msg(strf("send on flow %u: endpoint is closing", flow));
  if (flow < flows_.size() && flows_[flow]->peer_aborted.load())
    return Error::sys(ECONNRESET, strf("send on flow %u: %s abandoned the channel", flow, port_.peer_name().c_str()));
  SendJob job;
  for (auto b : bufs) {
    job.total += b.size();
    if (!b.empty()) job.bufs.push_back(b);
  }
  if (job.total > cfg_.max_message)
    return Error::msg(strf("send on flow %u: message of %llu bytes exceeds the limit of %u", flow,
                           (unsigned long long)job.total, cfg_.max_message));
  Flow& fl = *flows_[flow];
  std::lock_guard lk(fl.mu);
  job.ticket = fl.next_ticket++;
  uint64_t t = job.ticket;
  fl.jobs.push_back(std::move(job));
  fl.pending_jobs.fetch_add(1, std::memory_order_release);
  return t;
}

bool ReliableEndpoint::send_complete(uint16_t flow, uint64_t ticket) const {
  return flows_[flow]->completed_ticket.load(std::memory_order_acquire) >= ticket;
}

Result<void> ReliableEndpoint::wait_sent(uint16_t flow, uint64_t ticket, uint64_t timeout_ns, std::stop_token stop) {
  Flow& fl = *flows_[flow];
  std::stop_callback wake(stop, [&fl] {
    std::lock_guard g(fl.mu);
    fl.cv.notify_all();
  });
  std::unique_lock lk(fl.mu);
  bool done = fl.cv.wait_until(lk, deadline_after(timeout_ns), [&] {
    return fl.completed_ticket.load() >= ticket || state() == EndpointState::failed || fl.peer_aborted.load() ||
           stop.stop_requested();
  });
  if (fl.completed_ticket.load() >= ticket) return ok();
  if (fl.peer_aborted.load())
    return Error::sys(ECONNRESET, strf("send on flow %u: %s abandoned the channel", flow, port_.peer_name().c_str()));
  if (auto e = error()) return Error{e->code, e->message}.context(strf("send on flow %u", flow));
  if (stop.stop_requested()) return Error{ECANCELED, strf("send on flow %u: stopped waiting for completion", flow)};
  if (!done) return Error::sys(ETIMEDOUT, strf("send on flow %u to %s", flow, port_.peer_name().c_str()));
  return Error::msg(strf("send on flow %u: endpoint stopped", flow));
}

void ReliableEndpoint::release_message(RxMessage& m) {
  if (m.reserved) in_place_held_.fetch_sub(m.reserved, std::memory_order_relaxed);
  m.reserved = 0;
  m.copied = {};
  if (!m.frames.empty()) {
    std::lock_guard lk(returned_mu_);
    returned_.insert(returned_.end(), m.frames.begin(), m.frames.end());
    any_returned_.store(true, std::memory_order_release);
  }
  m.frames.clear();
  m.pieces.clear();
  m.size = 0;
}

void ReliableEndpoint::release_returned() {
  if (!any_returned_.load(std::memory_order_acquire)) return;
  std::vector<Frame> frames;
  {
    std::lock_guard lk(returned_mu_);
    frames.swap(returned_);
    any_returned_.store(false, std::memory_order_relaxed);
  }
  port_.release(frames.data(), frames.size());
  std::lock_guard lk(returned_mu_);  // keep the capacity for the next batch
  if (returned_.empty()) {
    frames.clear();
    returned_.swap(frames);
  }
}

std::optional<RxMessage> ReliableEndpoint::try_receive_message(uint16_t flow) {
  Flow& fl = *flows_[flow];
  std::lock_guard lk(fl.mu);
  if (fl.inbox.empty()) return std::nullopt;
  RxMessage m = std::move(fl.inbox.front());
  fl.inbox.pop_front();
  fl.inbox_bytes.fetch_sub(m.size);
  return m;
}

Result<RxMessage> ReliableEndpoint::receive_message(uint16_t flow, uint64_t timeout_ns, std::stop_token stop) {
  Flow& fl = *flows_[flow];
  // Under the lock, so the notification cannot fall between a check and the wait.
  std::stop_callback wake(stop, [&fl] {
    std::lock_guard g(fl.mu);
    fl.cv.notify_all();
  });
  std::unique_lock lk(fl.mu);
  fl.cv.wait_until(lk, deadline_after(timeout_ns), [&] {
    return !fl.inbox.empty() || fl.peer_fin.load() || fl.peer_aborted.load() ||
           state() == EndpointState::failed || stop.stop_requested();
  });
  if (!fl.inbox.empty()) {
    RxMessage m = std::move(fl.inbox.front());
    fl.inbox.pop_front();
    fl.inbox_bytes.fetch_sub(m.size);
    return m;
  }
  if (auto e = error()) return Error{e->code, e->message}.context(strf("receive on flow %u", flow));
  if (fl.peer_aborted.load())
    return Error::sys(ECONNRESET, strf("receive on flow %u: %s abandoned the channel", flow, port_.peer_name().c_str()));
  if (fl.peer_fin.load()) return Error::msg(strf("receive on flow %u: peer closed the flow", flow));
  if (stop.stop_requested()) return Error{ECANCELED, strf("receive on flow %u: stopped", flow)};
  return Error::sys(ETIMEDOUT, strf("receive on flow %u from %s", flow, port_.peer_name().c_str()));
}

std::optional<MessageBuffer> ReliableEndpoint::try_receive(uint16_t flow) {
  auto m = try_receive_message(flow);
  if (!m) return std::nullopt;
  MessageBuffer out;
  m->to_contiguous(out);
  release_message(*m);
  return out;
}

Result<MessageBuffer> ReliableEndpoint::receive(uint16_t flow, uint64_t timeout_ns, std::stop_token stop) {
  RxMessage m = LM_TRY(receive_message(flow, timeout_ns, std::move(stop)));
  MessageBuffer out;
  m.to_contiguous(out);
  release_message(m);
  return out;
}

bool ReliableEndpoint::end_of_stream(uint16_t flow) const {
  const Flow& fl = *flows_[flow];
  std::lock_guard lk(fl.mu);
  return fl.peer_fin.load() && fl.inbox.empty();
}

void ReliableEndpoint::close() { close_requested_.store(true, std::memory_order_release); }

Result<void> ReliableEndpoint::open_flow(uint16_t flow) {
  if (flow >= flows_.size()) return Error::msg(strf("open flow %u: only %zu flows", flow, flows_.size()));
  if (auto e = error()) return Error{e->code, e->message}.context(strf("open flow %u", flow));
  flows_[flow]->open_requested.store(true, std::memory_order_release);
  return ok();
}

Result<uint16_t> ReliableEndpoint::accept_flow(uint64_t timeout_ns, std::stop_token stop) {
  std::stop_callback wake(stop, [this] {
    std::lock_guard g(state_mu_);
    state_cv_.notify_all();
  });
  std::unique_lock lk(state_mu_);
  state_cv_.wait_until(lk, deadline_after(timeout_ns), [&] {
    return !opened_by_peer_.empty() || state() == EndpointState::failed || state() == EndpointState::closed ||
           stop.stop_requested();
  });
  if (!opened_by_peer_.empty()) {
    uint16_t f = opened_by_peer_.front();
    opened_by_peer_.pop_front();
    return f;
  }
  if (error_) return Error{error_->code, error_->message}.context("accept");
  if (state() == EndpointState::closed) return Error::msg("accept: session closed");
  if (stop.stop_requested()) return Error{ECANCELED, "accept: stopped"};
  return Error::sys(ETIMEDOUT, strf("accept a channel from %s", port_.peer_name().c_str()));
}

void ReliableEndpoint::abort_flow(uint16_t flow) {
  flows_[flow]->abort_requested.store(true, std::memory_order_release);
}

void ReliableEndpoint::close_flow(uint16_t flow) {
  flows_[flow]->close_requested.store(true, std::memory_order_release);
}

Result<void> ReliableEndpoint::wait_flow_closed(uint16_t flow, uint64_t timeout_ns) {
  Flow& fl = *flows_[flow];
  std::unique_lock lk(fl.mu);
  auto done = [&] { return (fl.fin_acked_shared.load() && fl.peer_fin.load()) || fl.peer_aborted.load(); };
  auto deadline = deadline_after(timeout_ns);
  for (;;) {
    while (!fl.inbox.empty()) {  // data still arriving while closing is dropped
      fl.inbox_bytes.fetch_sub(fl.inbox.front().size);
      release_message(fl.inbox.front());
      fl.inbox.pop_front();
    }
    if (fl.peer_aborted.load())
      return Error::sys(ECONNRESET, strf("close of flow %u: %s abandoned the channel", flow, port_.peer_name().c_str()));
    if (done()) return ok();
    if (state() == EndpointState::failed || state() == EndpointState::closed) break;
    if (fl.cv.wait_until(lk, deadline) == std::cv_status::timeout && !done() && fl.inbox.empty()) {
      return Error::sys(ETIMEDOUT, strf("close of flow %u with %s", flow, port_.peer_name().c_str()));
    }
  }
  if (done()) return ok();
  if (auto e = error()) return Error{e->code, e->message}.context(strf("close of flow %u", flow));
  return ok();  // the whole session closed: so is the flow
}

Result<void> ReliableEndpoint::wait_closed(uint64_t timeout_ns) {
  std::unique_lock lk(state_mu_);
  state_cv_.wait_until(lk, deadline_after(timeout_ns), [&] {
    auto s = state();
    return s == EndpointState::closed || s == EndpointState::failed;
  });
  if (state() == EndpointState::closed) return ok();
  if (error_) return Error{error_->code, error_->message}.context("close");
  return Error::sys(ETIMEDOUT, strf("close handshake with %s", port_.peer_name().c_str()));
}

Result<void> ReliableEndpoint::wait_established(uint64_t timeout_ns) {
  std::unique_lock lk(state_mu_);
  state_cv_.wait_until(lk, deadline_after(timeout_ns),
                       [&] { return state() != EndpointState::connecting; });
  if (error_) return Error{error_->code, error_->message}.context("open");
  if (state() == EndpointState::connecting)
    return Error::sys(ETIMEDOUT, strf("open handshake with %s", port_.peer_name().c_str()));
  return ok();
}

std::optional<Error> ReliableEndpoint::error() const {
  std::lock_guard lk(state_mu_);
  return error_;
}

void ReliableEndpoint::abort(std::string why) { fail(Error::msg(std::move(why))); }

void ReliableEndpoint::fail(Error e) {
  {
    std::lock_guard lk(state_mu_);
    auto s = state();
    if (s == EndpointState::failed || s == EndpointState::closed) return;
    error_ = std::move(e);
    state_.store(EndpointState::failed, std::memory_order_release);
  }
  notify_all();
}

void ReliableEndpoint::notify_all() {
  state_cv_.notify_all();
  for (auto& fl : flows_) {
    std::lock_guard lk(fl->mu);
    fl->cv.notify_all();
  }
}

FlowCounters ReliableEndpoint::flow_counters(uint16_t flow) const {
  const Flow& fl = *flows_[flow];
  std::lock_guard lk(fl.mu);
  return fl.snapshot;
}

EndpointCounters ReliableEndpoint::counters() const {
  std::lock_guard lk(counters_mu_);
  return counters_snapshot_;
}

// ---------------------------------------------------------------- poller

bool ReliableEndpoint::poll(uint64_t now) {
  auto st = state();
  if (st == EndpointState::failed || st == EndpointState::closed) return false;
  if (!started_) {
    started_ = true;
    last_rx_ns_ = now;
  }
  release_returned();
  bool did = false;
  size_t n = port_.receive(rx_batch_.data(), rx_batch_.size());
  if (n) did = true;
  for (size_t i = 0; i < n; ++i) handle_frame(rx_batch_[i], now);

  st = state();
  if (st == EndpointState::established || st == EndpointState::closing) {
    for (auto& flp : flows_) {
      Flow& fl = *flp;
      fl.data_staged = false;
      if (fl.abort_requested.load(std::memory_order_acquire) && !fl.aborted_local) abandon(fl, now);
      if (fl.aborted_local) continue;
      deliver_in_order(fl);
      if (!fl.retx_queue.empty()) {
        for (uint64_t seq : fl.retx_queue) {
          TxSlot& s = fl.tx[seq & (cfg_.send_slots - 1)];
          s.queued_retx = false;
          if (seq < fl.snd_una || s.delivered) continue;
          stage_data(fl, seq, now, true);  // the receiver acks the filled hole at once
          fl.c.retransmits++;
        }
        fl.retx_queue.clear();
        did = true;
      }
      if (tx_batch_.size() < kTxBatch && segment(fl, now)) did = true;
      check_tail_probe(fl, now);
      check_rto(fl, now);
      bool edge_moved = fl.rcv_deliver + cfg_.reorder_slots >= fl.advertised_edge + cfg_.reorder_slots / 4;
      bool lossless = fl.ooo == 0 && fl.rcv_next >= fl.calm_from;
      bool delayed = fl.unacked && now - fl.first_unacked_ns >= (lossless ? cfg_.lossless_ack_delay_ns
                                                                            : cfg_.ack_delay_ns);
      bool due = fl.ack_now || edge_moved || delayed || (!lossless && fl.unacked >= cfg_.ack_every) ||
                 now - fl.last_tx_ns >= cfg_.keepalive_ns;
      if (due && !fl.data_staged) queue_control(FrameType::ack, fl.id, now);
    }
  }
  session_timers(now);
  // A device that takes nothing is no progress: the caller may let the peer run.
  if (!tx_batch_.empty() && flush_tx() == 0 && n == 0) did = false;
  if (now - last_snapshot_ns_ >= kSnapshotEveryNs || state() != st) {
    last_snapshot_ns_ = now;
    for (auto& fl : flows_) {
      fl->c.srtt_ns = fl->srtt;
      fl->c.min_rtt_ns = fl->min_rtt;
      fl->c.window = fl->window;
      std::lock_guard lk(fl->mu);
      fl->snapshot = fl->c;
    }
    std::lock_guard lk(counters_mu_);
    counters_snapshot_ = counters_;
  }
  return did;
}

void ReliableEndpoint::handle_frame(Frame& f, uint64_t now) {
  counters_.frames_rx++;
  FrameHeader h;
  bool keep = false;
  if (f.len < sizeof(FrameHeader)) {
    counters_.bad_frames++;
    port_.release(&f, 1);
    return;
  }
  std::memcpy(&h, f.data, sizeof(h));
  if (!header_valid(h) || sizeof(FrameHeader) + h.payload_len > f.len || h.flow >= flows_.size()) {
    counters_.bad_frames++;
    port_.release(&f, 1);
    return;
  }
  auto st = state();
  if (h.type == FrameType::hello) {
    if (peer_nonce_ != 0 && h.nonce != peer_nonce_) {
      if (st == EndpointState::connecting) {
        peer_nonce_ = h.nonce;  // the peer restarted before we got going
      } else {
        counters_.stale_frames++;
        port_.release(&f, 1);
        return;
      }
    }
    peer_nonce_ = h.nonce;
    last_rx_ns_ = now;
    if (h.peer_nonce != nonce_) queue_control(FrameType::hello, 0, now);  // tell it who we are
    if (h.peer_nonce == nonce_ && st == EndpointState::connecting) {
      {
        std::lock_guard lk(state_mu_);
        state_.store(EndpointState::established, std::memory_order_release);
      }
      state_cv_.notify_all();
    }
    port_.release(&f, 1);
    return;
  }
  if (h.peer_nonce != nonce_ || (peer_nonce_ != 0 && h.nonce != peer_nonce_)) {
    counters_.stale_frames++;
    port_.release(&f, 1);
    return;
  }
  if (st == EndpointState::connecting) {
    peer_nonce_ = h.nonce;  // the peer saw our hello and moved on: so do we
    {
      std::lock_guard lk(state_mu_);
      state_.store(EndpointState::established, std::memory_order_release);
    }
    state_cv_.notify_all();
  }
  last_rx_ns_ = now;
  Flow& fl = *flows_[h.flow];
  switch (h.type) {
    case FrameType::data:
      if (fl.aborted_local) {  // tell the peer again, in case our reset was lost
        queue_control(FrameType::reset, fl.id, now, kFlagFlowOnly);
        break;
      }
      if (!(h.flags & kFlagNoPayloadSum) &&
          checksum32(f.data + sizeof(FrameHeader), h.payload_len) != h.payload_sum) {
        counters_.bad_frames++;
        break;
      }
      handle_ack_fields(fl, h, now);
      fl.c.frames_rx++;
      handle_data(fl, h, f, now);
      keep = true;  // handle_data took the frame (kept or released)
      break;
    case FrameType::ack:
      if (h.payload_len && checksum32(f.data + sizeof(FrameHeader), h.payload_len) != h.payload_sum) {
        counters_.bad_frames++;
        break;
      }
      fl.c.acks_rx++;
      handle_ack_fields(fl, h, now, std::span<const uint8_t>(f.data + sizeof(FrameHeader), h.payload_len));
      break;
    case FrameType::bye:
      peer_drained_ = true;
      if (!bye_received_ns_) bye_received_ns_ = now;
      if (last_bye_ns_) queue_control(FrameType::bye_ack, 0, now);  // we are drained too
      break;
    case FrameType::bye_ack:
      if (last_bye_ns_) {
        {
          std::lock_guard lk(state_mu_);
          state_.store(EndpointState::closed, std::memory_order_release);
        }
        notify_all();
      }
      break;
    case FrameType::reset:
      if (h.flags & kFlagFlowOnly) {
        fl.peer_aborted.store(true);
        std::lock_guard lk(fl.mu);
        fl.cv.notify_all();
      } else {
        fail(Error::msg(strf("peer %s reset the session", port_.peer_name().c_str())));
      }
      break;
    default:
      counters_.bad_frames++;
      break;
  }
  if (!keep) port_.release(&f, 1);
}

void ReliableEndpoint::handle_data(Flow& fl, const FrameHeader& h, Frame& f, uint64_t now) {
  fl.last_rx_tx_ns = h.tx_ns;
  fl.last_rx_local_ns = now;
  if (!fl.unacked++) fl.first_unacked_ns = now;
  if (h.flags & kFlagAckReq) fl.ack_now = true;
  uint64_t seq = h.seq;
  if (fl.ooo == 0 && fl.rcv_next >= fl.calm_from) fl.c.fast_path_rx++;
  auto irregular = [&] {
    fl.ack_now = true;
    fl.calm_from = std::max(fl.rcv_next, seq) + cfg_.reorder_slots;
  };
  if (seq < fl.rcv_next) {
    fl.c.duplicates++;
    irregular();
    port_.release(&f, 1);
    return;
  }
  if (seq >= fl.rcv_deliver + cfg_.reorder_slots) {
    fl.c.out_of_window++;
    irregular();
    port_.release(&f, 1);
    return;
  }
  RxSlot& s = fl.rx[seq & (cfg_.reorder_slots - 1)];
  if (s.filled) {
    fl.c.duplicates++;
    irregular();
    port_.release(&f, 1);
    return;
  }
  s.frame = f;
  s.seq = seq;
  s.filled = true;
  fl.c.payload_bytes_rx += h.payload_len;
  if (seq == fl.rcv_next) {
    fl.rcv_next++;
    while (fl.ooo && fl.rx[fl.rcv_next & (cfg_.reorder_slots - 1)].filled) {
      fl.rcv_next++;
      fl.ooo--;
    }
  } else {
    fl.ooo++;
    irregular();  // a gap: tell the sender at once
  }
}

void ReliableEndpoint::deliver_in_order(Flow& fl) {
  while (fl.rcv_deliver < fl.rcv_next) {
    if (fl.inbox_bytes.load(std::memory_order_relaxed) >= cfg_.rx_queue_bytes) return;  // app is behind
    RxSlot& s = fl.rx[fl.rcv_deliver & (cfg_.reorder_slots - 1)];
    FrameHeader h;
    std::memcpy(&h, s.frame.data, sizeof(h));
    const uint8_t* payload = s.frame.data + sizeof(FrameHeader);
    std::string bad;
    bool kept = false;
    if (h.flags & kFlagOpen) {
      if (fl.in_msg) bad = "OPEN inside a message";
      else {
        {
          std::lock_guard lk(state_mu_);
          opened_by_peer_.push_back(fl.id);
        }
        state_cv_.notify_all();
      }
    } else if (h.flags & kFlagFin) {
      if (fl.in_msg) bad = "FIN inside a message";
      else {
        fl.peer_fin.store(true);
        std::lock_guard lk(fl.mu);
        fl.cv.notify_all();
      }
    } else {
      if (h.flags & kFlagFirst) {
        if (fl.in_msg) bad = "new message before the last one ended";
        else if (h.msg_len > cfg_.max_message) bad = strf("message of %u bytes exceeds the limit", h.msg_len);
        else {
          fl.reasm_len = h.msg_len;
          fl.reasm_off = 0;
          fl.in_msg = true;
          uint32_t frames = uint32_t((uint64_t(h.msg_len) + max_payload_ - 1) / max_payload_);
          uint32_t held = in_place_held_.load(std::memory_order_relaxed);
          if (held + frames <= cfg_.in_place_frames) {
            in_place_held_.fetch_add(frames, std::memory_order_relaxed);
            fl.reasm.reserved = frames;
          } else {
            fl.reasm.copied.resize(h.msg_len);  // no zero-fill: see UninitAllocator
          }
        }
      } else if (!fl.in_msg) {
        bad = "fragment outside a message";
      }
      if (bad.empty()) {
        if (uint64_t(fl.reasm_off) + h.payload_len > fl.reasm_len) {
          bad = "fragment overruns its message";
        } else {
          if (h.payload_len && !fl.reasm.reserved) {
            std::memcpy(fl.reasm.copied.data() + fl.reasm_off, payload, h.payload_len);
          } else if (h.payload_len) {  // the payload stays in its frame until the message is released
            fl.reasm.frames.push_back(s.frame);
            fl.reasm.pieces.emplace_back(payload, h.payload_len);
            kept = true;
          }
          fl.reasm.size += h.payload_len;
          fl.reasm_off += h.payload_len;
          if (h.flags & kFlagLast) {
            if (fl.reasm_off != fl.reasm_len) bad = "message ends short of its length";
            else {
              fl.in_msg = false;
              fl.c.messages_rx++;
              if (!fl.reasm.reserved && fl.reasm.size) fl.reasm.pieces.emplace_back(fl.reasm.copied.data(), fl.reasm.size);
              size_t sz = fl.reasm.size;
              std::lock_guard lk(fl.mu);
              fl.inbox.push_back(std::move(fl.reasm));
              fl.inbox_bytes.fetch_add(sz);
              fl.reasm = {};
              fl.cv.notify_one();
            }
          }
        }
      }
    }
    if (!kept) port_.release(&s.frame, 1);
    s.filled = false;
    fl.rcv_deliver++;
    if (!bad.empty()) {
      fail(Error::msg(strf("protocol error from %s on flow %u seq %llu: %s", port_.peer_name().c_str(),
                           fl.id, (unsigned long long)h.seq, bad.c_str())));
      queue_control(FrameType::reset, fl.id, 0);
      return;
    }
  }
}

void ReliableEndpoint::handle_ack_fields(Flow& fl, const FrameHeader& h, uint64_t now,
                                         std::span<const uint8_t> ext) {
  const uint64_t mask = cfg_.send_slots - 1;
  if (h.window_edge > fl.peer_edge) fl.peer_edge = h.window_edge;
  if (h.ack > fl.snd_next) {
    counters_.bad_frames++;  // acks something never sent: ignore the frame's ack part
    return;
  }
  uint64_t rack_ts = 0, delivered = 0;
  auto deliver = [&](uint64_t seq) {
    TxSlot& s = fl.tx[seq & mask];
    fl.high_delivered = std::max(fl.high_delivered, seq + 1);
    if (s.delivered) return;
    s.delivered = true;
    // A resent frame acked sooner than a min RTT after the resend was the
    // original arriving late (spurious resend): its resend time says nothing
    // about the frames sent before it.
    if (s.tx_count == 1 || now - s.last_tx_ns >= fl.min_rtt) rack_ts = std::max(rack_ts, s.last_tx_ns);
    delivered++;
    acked_frames_.push_back(s.frame);  // released in one batch below
  };
  for (uint64_t seq = fl.snd_una; seq < h.ack; ++seq) deliver(seq);
  if (h.ack > fl.snd_una) {
    fl.snd_una = h.ack;
    if (!fl.awaiting_ack.empty() && fl.awaiting_ack.front().second < fl.snd_una) {
      while (!fl.awaiting_ack.empty() && fl.awaiting_ack.front().second < fl.snd_una) {
        fl.completed_ticket.store(fl.awaiting_ack.front().first, std::memory_order_release);
        fl.awaiting_ack.pop_front();
      }
      std::lock_guard lk(fl.mu);
      fl.cv.notify_all();
    }
  }
  for (unsigned w = 0; w < kSackBits / 64; ++w) {
    uint64_t bits = h.sack[w];
    while (bits) {
      unsigned b = unsigned(__builtin_ctzll(bits));
      bits &= bits - 1;
      uint64_t seq = h.ack + 1 + w * 64 + b;
      if (seq >= fl.snd_una && seq < fl.snd_next) deliver(seq);
    }
  }
  for (size_t i = 0; i < ext.size(); ++i) {
    for (uint8_t bits = ext[i]; bits; bits &= uint8_t(bits - 1)) {
      uint64_t seq = h.ack + 1 + kSackBits + i * 8 + unsigned(__builtin_ctz(bits));
      if (seq >= fl.snd_una && seq < fl.snd_next) deliver(seq);
    }
  }
  if (!acked_frames_.empty()) {
    port_.release(acked_frames_.data(), acked_frames_.size());
    acked_frames_.clear();
  }
  if (h.echo_ns && h.echo_ns > fl.last_echo && h.echo_ns <= now) {
    fl.last_echo = h.echo_ns;
    uint64_t sample = now - h.echo_ns;
    if (!fl.c.rtt_samples++) {
      fl.srtt = sample;
      fl.rttvar = sample / 2;
      fl.min_rtt = sample;
    } else {
      uint64_t dev = sample > fl.srtt ? sample - fl.srtt : fl.srtt - sample;
      fl.rttvar = (3 * fl.rttvar + dev) / 4;
      fl.srtt = (7 * fl.srtt + sample) / 8;
      fl.min_rtt = std::min(fl.min_rtt, sample);
    }
    fl.rto = std::clamp(fl.srtt + 4 * fl.rttvar, cfg_.rto_min_ns, cfg_.rto_max_ns);
  }
  if (fl.fin_queued && !fl.fin_acked && fl.snd_una > fl.fin_seq) {
    fl.fin_acked = true;
    fl.fin_acked_shared.store(true);
    std::lock_guard lk(fl.mu);
    fl.cv.notify_all();
  }
  if (delivered) {
    fl.tail_probed = false;
    fl.rate_delivered += delivered;
    detect_losses(fl, rack_ts, now);
    update_window(fl, now);
  }
}

void ReliableEndpoint::detect_losses(Flow& fl, uint64_t rack_ts, uint64_t now) {
  (void)now;
  // RACK: anything sent more than a reordering window before a frame that has
  // now been delivered is lost. The window is a quarter of the minimum RTT.
  uint64_t reo = std::max<uint64_t>(fl.min_rtt / 4, 10'000);
  if (rack_ts <= reo) return;
  uint64_t limit = rack_ts - reo;
  const uint64_t mask = cfg_.send_slots - 1;
  // Only below the highest frame known delivered: frames beyond the SACK
  // bitmap's reach may have arrived unreported, and a late resend's time
  // would otherwise condemn them all.
  uint64_t end = std::min(fl.snd_next, fl.high_delivered);
  for (uint64_t seq = fl.snd_una; seq < end; ++seq) {
    TxSlot& s = fl.tx[seq & mask];
    if (s.delivered || s.queued_retx || s.last_tx_ns >= limit) continue;
    s.queued_retx = true;
    fl.retx_queue.push_back(seq);
    fl.c.losses_detected++;
  }
}

void ReliableEndpoint::update_window(Flow& fl, uint64_t now) {
  // Window from the measured delivery rate: 2 x (max recent rate) x SRTT.
  // While the window limits the rate this doubles it every interval, up to
  // the slots and the peer's window. SRTT, not the minimum RTT: in a poll
  // loop on a shared host the RTT is mostly scheduling, not queueing. A
  // loss cap brakes only on heavy loss (an overrun receiver, e.g. af_packet
  // without back-pressure, drops a third of the frames); random loss of a few
  // percent does not shrink the window.
  if (!fl.rate_start_ns) {
    fl.rate_start_ns = now;
    fl.rate_delivered = 0;
    fl.rate_lost_mark = fl.c.losses_detected;
    return;
  }
  uint64_t srtt = std::max(fl.srtt, kRttFloorNs);
  if (now - fl.rate_start_ns < srtt) return;
  double rate = double(fl.rate_delivered) / double(now - fl.rate_start_ns);
  uint64_t lost = fl.c.losses_detected - fl.rate_lost_mark;
  double loss_frac = double(lost) / double(lost + fl.rate_delivered);
  fl.rate_samples[fl.rate_idx++ % kRateSamples] = rate;
  fl.rate_start_ns = now;
  fl.rate_delivered = 0;
  fl.rate_lost_mark = fl.c.losses_detected;
  if (loss_frac > 0.15)
    fl.loss_cap = std::max<double>(cfg_.min_window, 0.7 * fl.window);
  else
    fl.loss_cap = std::min<double>(cfg_.send_slots, fl.loss_cap * 1.25 + 1);
  double max_rate = 0;
  for (double r : fl.rate_samples) max_rate = std::max(max_rate, r);
  double w = std::min(2.0 * max_rate * double(srtt), fl.loss_cap);
  fl.window = uint32_t(std::clamp(w, double(cfg_.min_window), double(cfg_.send_slots)));
}

void ReliableEndpoint::check_rto(Flow& fl, uint64_t now) {
  if (fl.snd_una == fl.snd_next || now < fl.next_rto_check) return;
  fl.next_rto_check = now + std::max<uint64_t>(fl.rto / 4, 50'000);
  // Like TCP, an expiry resends only the oldest outstanding frame: if the
  // timeout was spurious (a descheduled peer) that costs one frame; if frames
  // were really lost, the ack of the resent one lets RACK find the others.
  const uint64_t mask = cfg_.send_slots - 1;
  for (uint64_t seq = fl.snd_una; seq < fl.snd_next; ++seq) {
    TxSlot& s = fl.tx[seq & mask];
    if (s.delivered || s.queued_retx) continue;
    if (now - s.last_tx_ns < fl.rto) return;
    s.queued_retx = true;
    fl.retx_queue.push_back(seq);
    fl.c.losses_detected++;
    fl.c.timeouts++;
    fl.rto = std::min(fl.rto * 2, cfg_.rto_max_ns);
    fl.window = std::max(cfg_.min_window, fl.window / 2);
    return;
  }
}

// TCP's tail-loss probe (RFC 8985): a frame is found lost when a later one
// arrives, so the last frames of a burst, and resends lost again at its
// end, have no such witness and wait for the RTO, whose floor (10 ms) is
// there for descheduled peers. At 5% loss the RTOs took a third of a 1 GiB
// stream's time. Instead, once no data frame was sent for
// max(SRTT, tail_probe_min_ns) and frames are still undelivered, the newest
// of them is sent again (once, until something is delivered): its ack lets
// RACK condemn the lost frames before it. One SRTT, not TCP's two: the last
// frame before the sender falls idle asks for an ack, which the receiver
// sends at once (docs/dpdk.md has both measured). Not a loss signal: the
// window stays. A needless probe costs one duplicate frame (on lossless
// memif: 0-1 probes per 2 GiB).
void ReliableEndpoint::check_tail_probe(Flow& fl, uint64_t now) {
  if (fl.tail_probed || fl.snd_una == fl.snd_next) return;
  if (now - fl.last_data_tx_ns < std::max<uint64_t>(fl.srtt, cfg_.tail_probe_min_ns)) return;
  for (uint64_t seq = fl.snd_next; seq-- > fl.snd_una;) {
    TxSlot& s = fl.tx[seq & (cfg_.send_slots - 1)];
    if (s.delivered) continue;
    if (s.queued_retx) return;
    s.queued_retx = true;
    fl.retx_queue.push_back(seq);
    fl.tail_probed = true;
    fl.c.tail_probes++;
    return;
  }
}

bool ReliableEndpoint::segment(Flow& fl, uint64_t now) {
  bool did = false;
  while (tx_batch_.size() < kTxBatch) {
    uint64_t inflight = fl.snd_next - fl.snd_una;
    if (inflight >= fl.window || inflight >= cfg_.send_slots || fl.snd_next >= fl.peer_edge) break;
    bool fin = false, open = false;
    if (!fl.open_sent && fl.open_requested.load(std::memory_order_acquire)) {
      open = true;  // before the flow's first message
    } else if (!fl.job) {
      if (fl.pending_jobs.load(std::memory_order_acquire)) {
        std::lock_guard lk(fl.mu);
        fl.job = std::move(fl.jobs.front());
        fl.jobs.pop_front();
        fl.pending_jobs.fetch_sub(1);
        fl.job_buf = fl.job_buf_off = 0;
        fl.job_off = 0;
      } else if ((close_requested_.load(std::memory_order_acquire) ||
                  fl.close_requested.load(std::memory_order_acquire)) &&
                 !fl.fin_queued) {
        fin = true;
      } else {
        break;
      }
    }
    Frame f;
    if (port_.alloc(&f, 1) != 1) {
      counters_.alloc_failures++;
      break;
    }
    FrameHeader h{};
    h.seq = fl.snd_next;
    uint8_t* payload = f.data + sizeof(FrameHeader);
    if (open) {
      h.flags = kFlagOpen;
      fl.open_sent = true;
    } else if (fin) {
      h.flags = kFlagFin;
      fl.fin_queued = true;
      fl.fin_seq = fl.snd_next;
    } else {
      SendJob& job = *fl.job;
      if (fl.job_off == 0) {
        h.flags |= kFlagFirst;
        h.msg_len = uint32_t(job.total);
      }
      uint32_t len = uint32_t(std::min<uint64_t>(max_payload_, job.total - fl.job_off));
      uint32_t done = 0;
      f.len = sizeof(FrameHeader);
      const uint8_t* src = nullptr;  // the payload bytes, wherever they are
      if (cfg_.send_mode == SendMode::attach && len) {
        auto b = job.bufs[fl.job_buf];
        // Attach when the fragment lies in one piece; copy when it spans two.
        if (b.size() - fl.job_buf_off >= len && port_.attach(f, b.data() + fl.job_buf_off, len)) {
          src = b.data() + fl.job_buf_off;
          done = len;
          fl.job_buf_off += len;
          if (fl.job_buf_off == b.size()) {
            fl.job_buf++;
            fl.job_buf_off = 0;
          }
          fl.c.attached_frames++;
        }
      }
      while (done < len) {
        auto b = job.bufs[fl.job_buf];
        size_t take = std::min<size_t>(len - done, b.size() - fl.job_buf_off);
        std::memcpy(payload + done, b.data() + fl.job_buf_off, take);
        done += uint32_t(take);
        fl.job_buf_off += take;
        if (fl.job_buf_off == b.size()) {
          fl.job_buf++;
          fl.job_buf_off = 0;
        }
      }
      fl.job_off += len;
      h.payload_len = uint16_t(len);
      // The end of what is queued: ask for the ack that completes it.
      if (fl.job_off == job.total && !fl.pending_jobs.load(std::memory_order_acquire)) h.flags |= kFlagAckReq;
      if (!src) src = payload;
      if (cfg_.payload_checksum == PayloadChecksum::on) h.payload_sum = checksum32(src, len);
      else h.flags |= kFlagNoPayloadSum;
      if (fl.job_off == job.total) {
        h.flags |= kFlagLast;
        fl.c.messages_tx++;
        if (cfg_.send_mode == SendMode::attach) {
          fl.awaiting_ack.emplace_back(job.ticket, fl.snd_next);  // this frame's seq
          fl.job.reset();
        } else {
          fl.completed_ticket.store(job.ticket, std::memory_order_release);
          fl.job.reset();
          std::lock_guard lk(fl.mu);
          fl.cv.notify_all();
        }
      }
    }
    if (fin || open) h.payload_sum = checksum32(payload, 0);
    // Half a window since the last request, or the frame that fills the window.
    if (fin || open || fl.snd_next >= fl.next_ack_req || inflight + 1 >= fl.window || fl.snd_next + 1 >= fl.peer_edge)
      h.flags |= kFlagAckReq;
    if (h.flags & kFlagAckReq) fl.next_ack_req = fl.snd_next + std::max<uint32_t>(1, fl.window / 2);
    std::memcpy(f.data, &h, sizeof(h));
    f.len = uint32_t(sizeof(FrameHeader) + h.payload_len);  // total, attached or copied
    f.flow = fl.id;
    TxSlot& s = fl.tx[fl.snd_next & (cfg_.send_slots - 1)];
    s.frame = f;
    s.delivered = false;
    s.queued_retx = false;
    s.tx_count = 0;
    fl.snd_next++;
    stage_data(fl, h.seq, now, false);
    did = true;
  }
  return did;
}

void ReliableEndpoint::fill_ack_fields(Flow& fl, FrameHeader& h, uint64_t now) {
  h.ack = fl.rcv_next;
  h.window_edge = fl.rcv_deliver + cfg_.reorder_slots;
  fl.advertised_edge = h.window_edge;
  h.echo_ns = fl.last_rx_tx_ns ? fl.last_rx_tx_ns + (now - fl.last_rx_local_ns) : 0;
  std::memset(h.sack, 0, sizeof(h.sack));
  if (fl.ooo) {
    uint64_t end = std::min<uint64_t>(fl.rcv_next + 1 + kSackBits, fl.rcv_deliver + cfg_.reorder_slots);
    for (uint64_t seq = fl.rcv_next + 1; seq < end; ++seq) {
      const RxSlot& s = fl.rx[seq & (cfg_.reorder_slots - 1)];
      if (s.filled && s.seq == seq) {
        uint64_t i = seq - fl.rcv_next - 1;
        h.sack[i / 64] |= 1ull << (i % 64);
      }
    }
  }
  fl.unacked = 0;
  fl.ack_now = false;
  fl.last_tx_ns = now;
}

void ReliableEndpoint::stage_data(Flow& fl, uint64_t seq, uint64_t now, bool ack_req) {
  TxSlot& s = fl.tx[seq & (cfg_.send_slots - 1)];
  FrameHeader h;
  std::memcpy(&h, s.frame.data, sizeof(h));
  if (ack_req) h.flags |= kFlagAckReq;
  if (h.flags & kFlagAckReq) fl.c.ack_requests_tx++;
  h.magic = kFrameMagic;
  h.version = kProtocolVersion;
  h.type = FrameType::data;
  h.flow = fl.id;
  h.nonce = nonce_;
  h.peer_nonce = peer_nonce_;
  h.tx_ns = now;
  fill_ack_fields(fl, h, now);
  seal_header(h);
  std::memcpy(s.frame.data, &h, sizeof(h));
  s.last_tx_ns = now;
  s.tx_count++;
  fl.last_data_tx_ns = now;
  port_.retain(s.frame);  // the slot keeps its reference for retransmission
  tx_batch_.push_back(s.frame);
  fl.c.frames_tx++;
  fl.c.payload_bytes_tx += h.payload_len;
  fl.data_staged = true;
}

void ReliableEndpoint::abandon(Flow& fl, uint64_t now) {
  fl.aborted_local = true;
  // Never read the caller's memory again: release every frame kept for
  // resending (devices that copy, memif and af_packet, are done with them).
  const uint64_t mask = cfg_.send_slots - 1;
  for (uint64_t seq = fl.snd_una; seq < fl.snd_next; ++seq) {
    TxSlot& s = fl.tx[seq & mask];
    if (!s.delivered) {
      s.delivered = true;
      port_.release(&s.frame, 1);
    }
  }
  fl.snd_una = fl.snd_next;
  fl.retx_queue.clear();
  // Frames of this flow still waiting for the device.
  size_t keep = 0;
  for (Frame& f : tx_batch_) {
    if (f.flow == fl.id) port_.release(&f, 1);
    else tx_batch_[keep++] = f;
  }
  tx_batch_.resize(keep);
  fl.job.reset();
  {
    std::lock_guard lk(fl.mu);
    fl.jobs.clear();
    fl.pending_jobs.store(0);
  }
  for (int i = 0; i < 3; ++i) queue_control(FrameType::reset, fl.id, now, kFlagFlowOnly);
}

void ReliableEndpoint::queue_control(FrameType type, uint16_t flow, uint64_t now, uint16_t flags) {
  Frame f;
  if (port_.alloc(&f, 1) != 1) {
    counters_.alloc_failures++;
    return;
  }
  FrameHeader h{};
  h.magic = kFrameMagic;
  h.version = kProtocolVersion;
  h.type = type;
  h.flow = flow;
  h.nonce = nonce_;
  h.peer_nonce = peer_nonce_;
  h.tx_ns = now;
  h.flags = flags;
  h.payload_sum = checksum32(f.data, 0);
  if (type == FrameType::ack) {
    Flow& fl = *flows_[flow];
    bool gaps = fl.ooo > 0;
    fill_ack_fields(fl, h, now);
    fl.c.acks_tx++;
    if (gaps) {
      // Report the rest of the receive window too (see frame_format.hpp).
      uint8_t* ext = f.data + sizeof(FrameHeader);
      uint64_t first = fl.rcv_next + 1 + kSackBits;
      uint64_t end = fl.rcv_deliver + cfg_.reorder_slots;
      size_t max_bytes = port_.frame_capacity() - sizeof(FrameHeader);
      size_t bytes = end > first ? std::min<size_t>((end - first + 7) / 8, max_bytes) : 0;
      std::memset(ext, 0, bytes);
      for (uint64_t seq = first; seq < first + bytes * 8 && seq < end; ++seq) {
        const RxSlot& s = fl.rx[seq & (cfg_.reorder_slots - 1)];
        if (s.filled && s.seq == seq) ext[(seq - first) / 8] |= uint8_t(1u << ((seq - first) % 8));
      }
      while (bytes && ext[bytes - 1] == 0) --bytes;
      h.payload_len = uint16_t(bytes);
      h.payload_sum = checksum32(ext, bytes);
    }
  }
  seal_header(h);
  std::memcpy(f.data, &h, sizeof(h));
  f.len = uint32_t(sizeof(FrameHeader) + h.payload_len);
  f.flow = flow;
  tx_batch_.push_back(f);
}

size_t ReliableEndpoint::flush_tx() {
  size_t sent = port_.transmit(tx_batch_.data(), tx_batch_.size());
  counters_.frames_tx += sent;
  if (sent < tx_batch_.size()) counters_.tx_stalls++;
  // What the port did not take waits for the next poll (the device's ring is full).
  tx_batch_.erase(tx_batch_.begin(), tx_batch_.begin() + ptrdiff_t(sent));
  return sent;
}

void ReliableEndpoint::session_timers(uint64_t now) {
  auto st = state();
  if (st == EndpointState::connecting) {
    // While the link is down (memif peer not there yet) the device takes
    // nothing: do not pile up hellos.
    if ((!last_hello_ns_ || now - last_hello_ns_ >= cfg_.hello_interval_ns) && tx_batch_.empty()) {
      last_hello_ns_ = now;
      queue_control(FrameType::hello, 0, now);
    }
    return;
  }
  if (st != EndpointState::established && st != EndpointState::closing) return;
  if (now - last_rx_ns_ > cfg_.peer_timeout_ns) {
    fail(Error::sys(ETIMEDOUT, strf("peer %s silent for %llu ms", port_.peer_name().c_str(),
                                    (unsigned long long)((now - last_rx_ns_) / 1'000'000))));
    return;
  }
  if (!close_requested_.load(std::memory_order_acquire)) return;
  if (st == EndpointState::established) {
    std::lock_guard lk(state_mu_);
    state_.store(EndpointState::closing, std::memory_order_release);
  }
  bool drained = true;
  for (auto& fl : flows_) {
    if (fl->aborted_local || fl->peer_aborted.load()) continue;
    if (!fl->fin_acked || !fl->peer_fin.load() || fl->rcv_deliver < fl->rcv_next) {
      drained = false;
      break;
    }
  }
  if (!drained) return;
  if (!last_bye_ns_ || now - last_bye_ns_ >= cfg_.hello_interval_ns) {
    last_bye_ns_ = now;
    queue_control(FrameType::bye, 0, now);
  }
  // The peer said bye (it is drained) but our bye_ack may never come if it
  // already stopped: after a linger, agree anyway.
  if (peer_drained_ && now - bye_received_ns_ >= cfg_.close_linger_ns) {
    {
      std::lock_guard lk(state_mu_);
      state_.store(EndpointState::closed, std::memory_order_release);
    }
    notify_all();
  }
}

}  // namespace lm::dpdk
