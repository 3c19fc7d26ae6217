// A DPDK transport session: the EAL (once per process), one ethdev port, the
// reliable endpoint and its poll-mode worker thread (registered with DPDK as
// an lcore of its own). Channels of the session are the endpoint's flows.
// Application threads call send/receive; only the worker touches the device.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <span>
#include <thread>
#include <vector>

#include "common/error.hpp"
#include "transport/dpdk/eal.hpp"
#include "transport/dpdk/eth_port.hpp"
#include "transport/dpdk/impaired_port.hpp"
#include "transport/dpdk/reliable_endpoint.hpp"

namespace lm::dpdk {

struct SessionConfig {
  EalConfig eal;
  PortConfig port;
  ReliableConfig protocol;
  Impairment inject;                           // injected on transmit (benchmarks, tests)
  // Poll-mode workers spin; on a shared or oversubscribed host (two peers on
  // two cores) a spinning poller starves its peer, so after idle_spins polls
  // without progress it yields the CPU, and after idle_nap_after_ns without
  // progress it sleeps idle_sleep_us per loop (0 spins: pure busy polling,
  // for dedicated cores).
  uint32_t idle_spins = 64;
  uint64_t idle_nap_after_ns = 2'000'000;
  uint32_t idle_sleep_us = 50;
  int worker_cpu = -1;                         // pin the poller; -1: leave to the scheduler
  uint64_t connect_timeout_ns = 30'000'000'000ull;
  uint64_t close_timeout_ns = 10'000'000'000ull;
};

struct SessionStats {
  std::vector<FlowCounters> flows;
  EndpointCounters endpoint;
  PortCounters port;
  uint64_t poll_loops = 0;
};

enum class OpenWait { established, no };

class DpdkSession {
 public:
  // EAL init (first session of the process), port attach, link up, worker
  // start, open handshake with the peer. OpenWait::no returns at once (a
  // listener): the link comes up and the handshake runs in the background.
  static Result<std::unique_ptr<DpdkSession>> open(const SessionConfig& cfg,
                                                   OpenWait wait = OpenWait::established);
  ~DpdkSession();

  // Copies the buffers into frames; returns once they may be reused.
  Result<void> send(uint16_t channel, std::span<const std::span<const uint8_t>> bufs,
                    uint64_t timeout_ns = 60'000'000'000ull);
  Result<MessageBuffer> receive(uint16_t channel, uint64_t timeout_ns = 60'000'000'000ull);
  bool end_of_stream(uint16_t channel) const { return endpoint_->end_of_stream(channel); }
  // Close handshake (both sides agree), then the worker stops, then the port.
  Result<void> close();

  uint16_t channels() const { return endpoint_->flows(); }
  uint32_t max_payload() const { return endpoint_->max_payload(); }
  ReliableEndpoint& endpoint() { return *endpoint_; }
  SessionStats stats() const;
  const std::string& devargs() const { return port_->devargs(); }
  std::string pool_ops() const { return port_->pool_ops(); }

 private:
  DpdkSession() = default;
  void run_worker();
  void stop_worker();

  SessionConfig cfg_;
  std::unique_ptr<EthFramePort> port_;
  std::unique_ptr<ImpairedPort> impaired_;
  std::unique_ptr<ReliableEndpoint> endpoint_;
  std::thread worker_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> poll_loops_{0};
  PortCounters port_counters_;  // final copy once the worker stopped
};

}  // namespace lm::dpdk
