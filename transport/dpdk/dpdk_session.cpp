#include "transport/dpdk/dpdk_session.hpp"

#include <pthread.h>
#include <sched.h>
#include <sys/random.h>

#include <algorithm>

#include <rte_lcore.h>

#include "common/clock.hpp"

namespace lm::dpdk {

Result<std::unique_ptr<DpdkSession>> DpdkSession::open(const SessionConfig& cfg, OpenWait wait) {
  Eal* eal = LM_TRY_CTX(Eal::init(cfg.eal), "dpdk session");
  std::unique_ptr<DpdkSession> s(new DpdkSession());
  s->cfg_ = cfg;
  // memif zero-copy sends from the shared region only: no external buffers.
  if (cfg.port.zero_copy == ZeroCopy::on) s->cfg_.protocol.send_mode = SendMode::copy;
  if (wait == OpenWait::no) s->cfg_.port.link_wait = LinkWait::no;
  // Frames the protocol may hold: every flow's windows full at once would be
  // flows x (send + reorder) slots; cap it (memory without hugepages is
  // precious). Running short only slows a flow down (alloc failures are
  // counted; the PMD drops, the protocol resends).
  // Larger frames (frame=): as many bytes, not as many frames.
  uint32_t frame = cfg.port.frame_bytes ? cfg.port.frame_bytes : default_frame_bytes(cfg.port.kind);
  uint32_t cap = std::clamp<uint32_t>((80u << 20) / frame, 1024, 8192);
  s->cfg_.port.held_frames = std::min<uint32_t>(
      cap, std::max<uint32_t>(cfg.port.held_frames, uint32_t(cfg.protocol.flows) *
                                                         (cfg.protocol.send_slots + cfg.protocol.reorder_slots)));
  // Received messages are held in their frames (no reassembly copy) up to
  // half of what the pool holds for the protocol; larger backlogs are copied.
  s->cfg_.protocol.in_place_frames = s->cfg_.port.held_frames / 2;
  s->port_ = LM_TRY_CTX(EthFramePort::open(*eal, s->cfg_.port), "dpdk session");
  uint32_t nonce = 0;
  while (nonce == 0)
    if (getrandom(&nonce, sizeof(nonce), 0) != sizeof(nonce)) return Error::from_errno("getrandom");
  FramePort* fp = s->port_.get();
  if (cfg.inject.any()) {
    s->impaired_ = std::make_unique<ImpairedPort>(*s->port_, cfg.inject, nonce);
    fp = s->impaired_.get();
  }
  s->endpoint_ = LM_TRY_CTX(ReliableEndpoint::create(*fp, s->cfg_.protocol, nonce), "dpdk session");
  s->worker_ = std::thread([p = s.get()] { p->run_worker(); });
  if (wait == OpenWait::no) return s;
  auto r = s->endpoint_->wait_established(cfg.connect_timeout_ns);
  if (!r) {
    s->endpoint_->abort("open handshake failed");
    s->stop_worker();
    return std::move(r).error().context(strf("dpdk session over %s", s->port_->devargs().c_str()));
  }
  return s;
}

void DpdkSession::run_worker() {
  pthread_setname_np(pthread_self(), "lm-dpdk-poll");
  if (cfg_.worker_cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cfg_.worker_cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
  }
  // An lcore id of its own gives the mempool a per-thread cache.
  bool registered = rte_thread_register() == 0;
  uint64_t loops = 0;
  uint32_t idle = 0;
  uint64_t last_progress = now_ns();
  while (!stop_.load(std::memory_order_relaxed)) {
    uint64_t now = now_ns();
    if (endpoint_->poll(now)) {
      idle = 0;
      last_progress = now;
    } else if (cfg_.idle_spins && ++idle >= cfg_.idle_spins) {
      // Spin, then yield, then nap once idle for a while: a poller that never
      // sleeps starves its peer when the host has fewer cores than busy
      // threads, and napping during a transfer costs a wake-up each time.
      if (now - last_progress >= cfg_.idle_nap_after_ns)
        std::this_thread::sleep_for(std::chrono::microseconds(cfg_.idle_sleep_us));
      else
        sched_yield();
    }
    auto st = endpoint_->state();
    if (st == EndpointState::closed || st == EndpointState::failed) break;
    if ((++loops & 1023) == 0) poll_loops_.store(loops, std::memory_order_relaxed);
  }
  poll_loops_.store(loops, std::memory_order_relaxed);
  // The memif server stops its port as soon as both sides agreed to close
  // (it can crash handling its peer's disconnect otherwise); the client
  // stops later, in close(), after a linger.
  bool memif_client = cfg_.port.kind == DeviceKind::memif && cfg_.port.role == MemifRole::client;
  if (endpoint_->state() == EndpointState::closed && !memif_client) {
    port_counters_ = port_->counters();
    port_->stop();
  }
  if (registered) rte_thread_unregister();
}

void DpdkSession::stop_worker() {
  stop_.store(true);
  if (worker_.joinable()) worker_.join();
}

Result<void> DpdkSession::send(uint16_t channel, std::span<const std::span<const uint8_t>> bufs,
                               uint64_t timeout_ns) {
  uint64_t ticket = LM_TRY(endpoint_->submit(channel, bufs));
  return endpoint_->wait_sent(channel, ticket, timeout_ns);
}

Result<MessageBuffer> DpdkSession::receive(uint16_t channel, uint64_t timeout_ns) {
  return endpoint_->receive(channel, timeout_ns);
}

Result<void> DpdkSession::close() {
  endpoint_->close();
  auto r = endpoint_->wait_closed(cfg_.close_timeout_ns);
  stop_worker();
  if (port_->started()) port_counters_ = port_->counters();
  // The memif server may crash if the client goes away while it still polls:
  // the client leaves the server time to stop first.
  if (cfg_.port.kind == DeviceKind::memif && cfg_.port.role == MemifRole::client)
    std::this_thread::sleep_for(std::chrono::nanoseconds(cfg_.protocol.close_linger_ns) +
                                std::chrono::milliseconds(20));
  port_->stop();
  return r;
}

SessionStats DpdkSession::stats() const {
  SessionStats st;
  for (uint16_t f = 0; f < endpoint_->flows(); ++f) st.flows.push_back(endpoint_->flow_counters(f));
  st.endpoint = endpoint_->counters();
  st.port = worker_.joinable() ? PortCounters{} : port_counters_;
  st.poll_loops = poll_loops_.load();
  return st;
}

DpdkSession::~DpdkSession() {
  if (endpoint_ && worker_.joinable()) {
    auto s = endpoint_->state();
    if (s != EndpointState::closed && s != EndpointState::failed) endpoint_->abort("session destroyed");
  }
  stop_worker();
  endpoint_.reset();  // hands its mbufs back before the pool goes
  impaired_.reset();
  if (port_) port_->stop();
}

}  // namespace lm::dpdk
