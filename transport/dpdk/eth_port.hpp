// A FramePort over a DPDK ethdev: net_memif (two processes on one host,
// shared memory), net_af_packet (a kernel interface, e.g. a veth in a network
// namespace) or a PCI NIC. Frames are Ethernet/IPv4/UDP; the UDP port pair
// says which flow (channel) a frame belongs to, and flows map to queues where
// the device has several. Only the poller thread calls alloc/transmit/receive.
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>

#include "common/error.hpp"
#include "transport/dpdk/eal.hpp"
#include "transport/dpdk/frame_port.hpp"

struct rte_mempool;
struct rte_mbuf;

namespace lm::dpdk {

enum class DeviceKind { memif, af_packet, pci };
enum class MemifRole { server, client };
enum class ZeroCopy { off, on };
enum class LinkWait { until_up, no };

struct PortConfig {
  DeviceKind kind = DeviceKind::memif;
  // memif
  MemifRole role = MemifRole::server;
  std::string socket;            // memif control socket path
  ZeroCopy zero_copy = ZeroCopy::off;  // memif client only; EAL needs single_file_segments
  // af_packet: the kernel interface; pci: the device address (0000:01:00.0)
  std::string iface;
  std::string extra_devargs;     // appended to the generated devargs
  uint16_t queues = 1;
  uint16_t rx_desc = 1024, tx_desc = 1024;
  uint32_t frame_bytes = 0;      // largest L2 frame; 0: a default per kind
  uint32_t mbufs = 0;            // pool size; 0: from descriptors and windows
  uint32_t held_frames = 4096;   // frames the protocol may hold (send + reorder windows)
  uint16_t udp_port_base = 47000;
  uint64_t link_timeout_ns = 30'000'000'000ull;
  LinkWait link_wait = LinkWait::until_up;  // no: a listener; the handshake waits instead
};

struct PortCounters {
  uint64_t rx_frames = 0, tx_frames = 0, rx_bytes = 0, tx_bytes = 0;
  uint64_t rx_ignored = 0;       // not ours (other protocols, multi-segment)
  uint64_t tx_full = 0;          // bursts the device did not take entirely
};

class EthFramePort final : public FramePort {
 public:
  static Result<std::unique_ptr<EthFramePort>> open(Eal& eal, const PortConfig& cfg);
  ~EthFramePort() override;

  uint32_t frame_capacity() const override { return capacity_; }
  size_t alloc(Frame* out, size_t n) override;
  size_t transmit(Frame* frames, size_t n) override;
  size_t receive(Frame* out, size_t n) override;
  bool attach(Frame& f, const uint8_t* data, uint32_t len) override;
  void retain(Frame& f) override;
  void release(Frame* frames, size_t n) override;
  std::string peer_name() const override { return peer_name_; }

  // Stops and detaches the device. Call only after the protocol's close
  // handshake (the memif server can crash when the peer vanishes while it polls).
  void stop();
  bool started() const { return started_; }
  const PortCounters& counters() const { return counters_; }
  const std::string& devargs() const { return devargs_; }
  uint16_t port_id() const { return port_id_; }
  // The mempool driver in use ("stack", or "ring_mp_mc" when stack is missing).
  std::string pool_ops() const;

 private:
  EthFramePort() = default;
  // A memif burst's hold on the unmap gate (hold_memif_burst_gate); false:
  // skip the burst. Other devices: true, nothing held.
  bool enter_burst(std::shared_lock<std::shared_mutex>& gate) const;
  PortConfig cfg_;
  std::string devname_, devargs_, peer_name_;
  uint16_t port_id_ = 0;
  bool attached_ = false, started_ = false;
  rte_mempool* pool_ = nullptr;
  rte_mempool* ext_pool_ = nullptr;  // data-less mbufs for attached (external) buffers
  uint32_t capacity_ = 0;
  uint8_t src_mac_[6] = {}, dst_mac_[6] = {};
  uint16_t rx_queue_next_ = 0;
  PortCounters counters_;
};

// Held around every memif rx/tx burst: while any is held, an munmap on the
// EAL's interrupt thread (the memif PMD unmapping a vanished peer's rings)
// waits (eth_port.cpp). Not owned while such an unmap waits: skip the burst.
std::shared_lock<std::shared_mutex> hold_memif_burst_gate();

// Default largest L2 frame per device kind: memif buffers hold 9 KiB frames
// (two 4 KiB pages plus headers); af_packet frames must fit framesz=8192.
uint32_t default_frame_bytes(DeviceKind kind);

}  // namespace lm::dpdk
