#include "transport/dpdk/eth_port.hpp"

#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_udp.h>

#include "common/clock.hpp"

namespace lm::dpdk {

namespace {

constexpr uint32_t kL2L4 = sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr);
static_assert(kL2L4 == 42);
constexpr uint16_t kMaxFlows = 1024;
constexpr uint32_t kSrcIp = RTE_IPV4(10, 77, 0, 1), kDstIp = RTE_IPV4(10, 77, 0, 2);

Error eth_error(int rc, const std::string& what) { return Error::sys(rc < 0 ? -rc : rc, what); }

// The memif PMD (DPDK 22.11) unmaps a connection's shared regions, rings
// included, on the EAL's interrupt thread when the peer goes away
// (memif_disconnect), whatever a poll worker is doing: the survivor of a
// killed peer took a SIGSEGV inside librte_net_memif, reading a ring in
// rx_burst. The PMD clears its "connected" flag before it unmaps, and a burst
// begun after that returns without touching the rings. So every memif burst
// holds this gate shared, and munmap on the interrupt thread (below) takes
// it exclusively: it waits for the bursts in progress, and none reads an
// unmapped ring. Process-wide, as the EAL and its interrupt thread are.
// A waiting unmap turns new bursts away rather than wait for a moment
// without any (the lock prefers readers, and a poller bursts back to back).
std::shared_mutex& memif_burst_gate() {
  static std::shared_mutex gate;
  return gate;
}
std::atomic<int> memif_unmaps_waiting{0};

bool on_eal_interrupt_thread() {
  thread_local int known = -1;
  if (known < 0) {
    char name[16] = {};
    prctl(PR_GET_NAME, name);
    known = std::strcmp(name, "eal-intr-thread") == 0;
  }
  return known == 1;
}

}  // namespace

std::shared_lock<std::shared_mutex> hold_memif_burst_gate() {
  if (memif_unmaps_waiting.load(std::memory_order_acquire) > 0) return {};
  return std::shared_lock<std::shared_mutex>(memif_burst_gate());
}

uint32_t default_frame_bytes(DeviceKind kind) {
  switch (kind) {
    case DeviceKind::memif: return 9216;
    case DeviceKind::af_packet: return 8000;
    case DeviceKind::pci: return 9000;
  }
  return 1514;
}

Result<std::unique_ptr<EthFramePort>> EthFramePort::open(Eal& eal, const PortConfig& cfg) {
  (void)eal;  // proof that the EAL is up
  std::unique_ptr<EthFramePort> p(new EthFramePort());
  p->cfg_ = cfg;
  if (!p->cfg_.frame_bytes) p->cfg_.frame_bytes = default_frame_bytes(cfg.kind);
  const uint32_t frame = p->cfg_.frame_bytes;
  if (cfg.queues == 0 || cfg.queues > 64) return Error::msg(strf("dpdk port: %u queues", cfg.queues));
  // Device and pool names must be unique in the process for its lifetime
  // (an address can be reused by the next port): a random tag.
  uint64_t tag = 0;
  if (getrandom(&tag, sizeof tag, 0) != sizeof tag) tag = now_ns() ^ reinterpret_cast<uintptr_t>(p.get());
  tag &= 0xffffffffffffull;
  switch (cfg.kind) {
    case DeviceKind::memif:
      if (cfg.socket.empty()) return Error::msg("dpdk memif port: no socket path");
      p->devname_ = strf("net_memif_%lx", (unsigned long)tag);
      // bsize: a whole frame in one memif buffer (memif corrupts frames spanning buffers).
      p->devargs_ = strf("role=%s,socket=%s,bsize=%u,rsize=10%s",
                         cfg.role == MemifRole::server ? "server" : "client", cfg.socket.c_str(), frame,
                         cfg.zero_copy == ZeroCopy::on && cfg.role == MemifRole::client ? ",zero-copy=yes" : "");
      p->peer_name_ = strf("memif %s (%s side)", cfg.socket.c_str(),
                           cfg.role == MemifRole::server ? "client" : "server");
      break;
    case DeviceKind::af_packet: {
      if (cfg.iface.empty()) return Error::msg("dpdk af_packet port: no interface");
      p->devname_ = strf("net_af_packet_%lx", (unsigned long)tag);
      uint32_t framesz = 8192;
      while (framesz < frame + 128) framesz *= 2;
      p->devargs_ = strf("iface=%s,qpairs=%u,blocksz=%u,framesz=%u,framecnt=%u,qdisc_bypass=1",
                         cfg.iface.c_str(), cfg.queues, framesz, framesz, 2048u);
      p->peer_name_ = strf("af_packet peer via %s", cfg.iface.c_str());
      break;
    }
    case DeviceKind::pci:
      if (cfg.iface.empty()) return Error::msg("dpdk pci port: no device address");
      p->devname_ = cfg.iface;
      p->peer_name_ = strf("peer via %s", cfg.iface.c_str());
      break;
  }
  if (!cfg.extra_devargs.empty()) p->devargs_ += (p->devargs_.empty() ? "" : ",") + cfg.extra_devargs;

  if (cfg.kind != DeviceKind::pci) {
    int rc = rte_eal_hotplug_add("vdev", p->devname_.c_str(), p->devargs_.c_str());
    if (rc < 0) return eth_error(rc, strf("attach %s (%s)", p->devname_.c_str(), p->devargs_.c_str()));
    p->attached_ = true;
  }
  int rc = rte_eth_dev_get_port_by_name(p->devname_.c_str(), &p->port_id_);
  if (rc < 0) return eth_error(rc, strf("find ethdev %s", p->devname_.c_str()));

  // Data room: the largest frame (af_packet also wants room for its framesz).
  uint32_t room = std::max(frame, 8192u) + 128 + RTE_PKTMBUF_HEADROOM;
  uint32_t mbufs = cfg.mbufs ? cfg.mbufs
                             : cfg.held_frames + uint32_t(cfg.queues) * (cfg.rx_desc + cfg.tx_desc) + 2048;
  std::string pool_name = strf("lm%lx", (unsigned long)tag);
  // LIFO ("stack") so the hot mbufs are reused: a FIFO ring cycles through the
  // whole pool (hundreds of MB of 4 KiB pages without hugepages), paying TLB
  // misses and first-touch faults; measured ~30% slower on memif here.
  p->pool_ = rte_pktmbuf_pool_create_by_ops(pool_name.c_str(), mbufs, 256, 0, uint16_t(std::min(room, 65535u)),
                                            int(rte_socket_id()), "stack");
  if (!p->pool_)
    p->pool_ = rte_pktmbuf_pool_create(pool_name.c_str(), mbufs, 256, 0, uint16_t(std::min(room, 65535u)),
                                       int(rte_socket_id()));
  if (p->pool_) {
    // Attached payloads: an mbuf without data room whose private area holds
    // the external buffer's shared info.
    uint16_t priv = uint16_t(RTE_ALIGN(sizeof(rte_mbuf_ext_shared_info), RTE_MBUF_PRIV_ALIGN));
    p->ext_pool_ = rte_pktmbuf_pool_create_by_ops(("x" + pool_name).c_str(), mbufs, 256, priv, 0,
                                                  int(rte_socket_id()), "stack");
  }
  if (!p->pool_) return Error::sys(rte_errno, strf("mbuf pool of %u x %u bytes for %s", mbufs, room,
                                                  p->devname_.c_str()));

  rte_eth_dev_info info{};
  rc = rte_eth_dev_info_get(p->port_id_, &info);
  if (rc < 0) return eth_error(rc, strf("device info of %s", p->devname_.c_str()));
  rte_eth_conf conf{};
  uint32_t mtu = frame - sizeof(rte_ether_hdr);
  if (info.max_mtu && mtu > info.max_mtu) mtu = info.max_mtu;
  // memif reports a 1518-byte max frame but carries whatever fits its buffers
  // (bsize): the configured MTU is a formality there.
  if (info.max_rx_pktlen && mtu + RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN > info.max_rx_pktlen)
    mtu = info.max_rx_pktlen - RTE_ETHER_HDR_LEN - RTE_ETHER_CRC_LEN;
  conf.rxmode.mtu = mtu;
  if (cfg.queues > 1 && info.flow_type_rss_offloads) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_hf = RTE_ETH_RSS_UDP & info.flow_type_rss_offloads;
  }
  rc = rte_eth_dev_configure(p->port_id_, cfg.queues, cfg.queues, &conf);
  if (rc < 0) return eth_error(rc, strf("configure %s with %u queues, mtu %u", p->devname_.c_str(), cfg.queues, mtu));
  uint16_t rxd = cfg.rx_desc, txd = cfg.tx_desc;
  rte_eth_dev_adjust_nb_rx_tx_desc(p->port_id_, &rxd, &txd);
  int socket = rte_eth_dev_socket_id(p->port_id_);
  for (uint16_t q = 0; q < cfg.queues; ++q) {
    rc = rte_eth_rx_queue_setup(p->port_id_, q, rxd, socket < 0 ? 0 : unsigned(socket), nullptr, p->pool_);
    if (rc < 0) return eth_error(rc, strf("rx queue %u of %s", q, p->devname_.c_str()));
    rc = rte_eth_tx_queue_setup(p->port_id_, q, txd, socket < 0 ? 0 : unsigned(socket), nullptr);
    if (rc < 0) return eth_error(rc, strf("tx queue %u of %s", q, p->devname_.c_str()));
  }
  rc = rte_eth_dev_start(p->port_id_);
  // A memif client fails to start while its server's socket does not exist
  // yet: keep trying until the link timeout.
  for (uint64_t until = now_ns() + cfg.link_timeout_ns;
       rc < 0 && cfg.kind == DeviceKind::memif && cfg.role == MemifRole::client && now_ns() < until;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    rc = rte_eth_dev_start(p->port_id_);
  }
  if (rc < 0) return eth_error(rc, strf("start %s", p->devname_.c_str()));
  p->started_ = true;
  rte_eth_promiscuous_enable(p->port_id_);  // best effort: memif has no filter anyway
  rte_ether_addr mac{};
  rte_eth_macaddr_get(p->port_id_, &mac);
  std::memcpy(p->src_mac_, mac.addr_bytes, 6);
  std::memset(p->dst_mac_, 0xff, 6);
  p->capacity_ = frame - kL2L4;

  // memif: the link comes up when the peer process connects.
  uint64_t start = now_ns(), deadline = start + cfg.link_timeout_ns, next_retry = start + 2'000'000'000ull;
  while (cfg.link_wait == LinkWait::until_up) {
    rte_eth_link link{};
    rte_eth_link_get_nowait(p->port_id_, &link);
    if (link.link_status == RTE_ETH_LINK_UP) break;
    // A memif client connects once, in dev_start; seen here under heavy load:
    // the link never came up. Restarting the port connects again.
    if (cfg.kind == DeviceKind::memif && cfg.role == MemifRole::client && now_ns() > next_retry) {
      rte_eth_dev_stop(p->port_id_);
      rc = rte_eth_dev_start(p->port_id_);
      if (rc < 0) {
        p->started_ = false;
        return eth_error(rc, strf("restart %s", p->devname_.c_str()));
      }
      next_retry = now_ns() + 2'000'000'000ull;
    }
    if (now_ns() > deadline)
      return Error::sys(ETIMEDOUT, strf("link of %s (%s) did not come up", p->devname_.c_str(),
                                        p->devargs_.c_str()));
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return p;
}

EthFramePort::~EthFramePort() {
  stop();
  if (pool_) rte_mempool_free(pool_);
  if (ext_pool_) rte_mempool_free(ext_pool_);
}

namespace {
void keep_external(void*, void*) {}  // the caller owns attached memory
}  // namespace

bool EthFramePort::attach(Frame& f, const uint8_t* data, uint32_t len) {
  auto* head = static_cast<rte_mbuf*>(f.handle);
  if (!ext_pool_ || head->nb_segs != 1 || len > UINT16_MAX) return false;
  rte_mbuf* ext = rte_pktmbuf_alloc(ext_pool_);
  if (!ext) return false;
  auto* shinfo = static_cast<rte_mbuf_ext_shared_info*>(rte_mbuf_to_priv(ext));
  shinfo->free_cb = keep_external;
  shinfo->fcb_opaque = nullptr;
  rte_mbuf_ext_refcnt_set(shinfo, 1);
  // IOVA = VA: right for the copying PMDs (memif, af_packet); a PCI NIC would
  // need the memory registered for DMA (rte_extmem_register), not done here.
  void* addr = const_cast<uint8_t*>(data);
  rte_pktmbuf_attach_extbuf(ext, addr, rte_iova_t(reinterpret_cast<uintptr_t>(addr)), uint16_t(len), shinfo);
  ext->data_len = uint16_t(len);
  ext->pkt_len = len;
  head->next = ext;
  head->nb_segs = 2;
  f.len += len;
  return true;
}

void EthFramePort::stop() {
  if (started_) {
    rte_eth_dev_stop(port_id_);
    started_ = false;
    rte_eth_dev_close(port_id_);
  }
  if (attached_) {
    rte_eal_hotplug_remove("vdev", devname_.c_str());
    attached_ = false;
  }
}

bool EthFramePort::enter_burst(std::shared_lock<std::shared_mutex>& gate) const {
  if (cfg_.kind != DeviceKind::memif) return true;
  gate = hold_memif_burst_gate();
  return gate.owns_lock();
}

size_t EthFramePort::alloc(Frame* out, size_t n) {
  rte_mbuf* mb[64];
  size_t done = 0;
  while (done < n) {
    size_t k = std::min<size_t>(n - done, 64);
    if (rte_pktmbuf_alloc_bulk(pool_, mb, unsigned(k)) != 0) break;
    for (size_t i = 0; i < k; ++i) {
      out[done + i] = Frame{mb[i], rte_pktmbuf_mtod(mb[i], uint8_t*) + kL2L4, 0, 0};
    }
    done += k;
  }
  return done;
}

size_t EthFramePort::transmit(Frame* frames, size_t n) {
  rte_mbuf* mb[64];
  size_t sent = 0;
  while (sent < n) {
    // A run of frames for the same queue, in order.
    uint16_t q = frames[sent].flow % cfg_.queues;
    size_t k = 0;
    while (sent + k < n && k < 64 && frames[sent + k].flow % cfg_.queues == q) {
      const Frame& f = frames[sent + k];
      rte_mbuf* m = static_cast<rte_mbuf*>(f.handle);
      uint32_t total = kL2L4 + f.len;
      uint32_t attached = m->next ? m->next->data_len : 0;
      m->data_len = uint16_t(total - attached);
      m->pkt_len = total;
      auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
      std::memcpy(eth->dst_addr.addr_bytes, dst_mac_, 6);
      std::memcpy(eth->src_addr.addr_bytes, src_mac_, 6);
      eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
      auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
      ip->version_ihl = RTE_IPV4_VHL_DEF;
      ip->type_of_service = 0;
      ip->total_length = rte_cpu_to_be_16(uint16_t(total - sizeof(rte_ether_hdr)));
      ip->packet_id = 0;
      ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
      ip->time_to_live = 64;
      ip->next_proto_id = IPPROTO_UDP;
      ip->src_addr = rte_cpu_to_be_32(kSrcIp);
      ip->dst_addr = rte_cpu_to_be_32(kDstIp);
      ip->hdr_checksum = 0;
      ip->hdr_checksum = rte_ipv4_cksum(ip);
      auto* udp = reinterpret_cast<rte_udp_hdr*>(ip + 1);
      uint16_t port = uint16_t(cfg_.udp_port_base + (f.flow % kMaxFlows));
      udp->src_port = rte_cpu_to_be_16(port);
      udp->dst_port = rte_cpu_to_be_16(port);
      udp->dgram_len = rte_cpu_to_be_16(uint16_t(sizeof(rte_udp_hdr) + f.len));
      udp->dgram_cksum = 0;  // the protocol checksums every frame itself
      mb[k++] = m;
      counters_.tx_bytes += total;
    }
    uint16_t ok = 0;
    {
      std::shared_lock<std::shared_mutex> gate;
      if (enter_burst(gate)) ok = rte_eth_tx_burst(port_id_, q, mb, uint16_t(k));
    }
    sent += ok;
    counters_.tx_frames += ok;
    if (ok < k) {
      counters_.tx_full++;
      break;
    }
  }
  return sent;
}

size_t EthFramePort::receive(Frame* out, size_t n) {
  rte_mbuf* mb[64];
  size_t got = 0;
  for (uint16_t tries = 0; tries < cfg_.queues && got < n; ++tries) {
    uint16_t q = rx_queue_next_;
    rx_queue_next_ = uint16_t((rx_queue_next_ + 1) % cfg_.queues);
    uint16_t k = 0;
    {
      std::shared_lock<std::shared_mutex> gate;
      if (enter_burst(gate)) k = rte_eth_rx_burst(port_id_, q, mb, uint16_t(std::min<size_t>(n - got, 64)));
    }
    for (uint16_t i = 0; i < k; ++i) {
      rte_mbuf* m = mb[i];
      auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
      auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
      auto* udp = reinterpret_cast<rte_udp_hdr*>(ip + 1);
      bool ours = m->nb_segs == 1 && m->data_len >= kL2L4 &&
                  eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) &&
                  ip->version_ihl == RTE_IPV4_VHL_DEF && ip->next_proto_id == IPPROTO_UDP;
      uint16_t dport = ours ? rte_be_to_cpu_16(udp->dst_port) : 0;
      uint32_t len = ours ? uint32_t(rte_be_to_cpu_16(udp->dgram_len)) : 0;
      ours = ours && dport >= cfg_.udp_port_base && dport < cfg_.udp_port_base + kMaxFlows &&
             len >= sizeof(rte_udp_hdr) && kL2L4 + len - sizeof(rte_udp_hdr) <= m->data_len;
      if (!ours) {
        counters_.rx_ignored++;
        rte_pktmbuf_free(m);
        continue;
      }
      counters_.rx_frames++;
      counters_.rx_bytes += m->data_len;
      out[got++] = Frame{m, reinterpret_cast<uint8_t*>(udp + 1), uint32_t(len - sizeof(rte_udp_hdr)),
                         uint16_t(dport - cfg_.udp_port_base)};
    }
  }
  return got;
}

std::string EthFramePort::pool_ops() const {
  return pool_ ? rte_mempool_get_ops(pool_->ops_index)->name : "";
}

void EthFramePort::retain(Frame& f) {
  for (auto* m = static_cast<rte_mbuf*>(f.handle); m; m = m->next) rte_mbuf_refcnt_update(m, 1);
}

void EthFramePort::release(Frame* frames, size_t n) {
  rte_mbuf* mb[64];
  for (size_t done = 0; done < n;) {
    size_t k = std::min<size_t>(n - done, 64);
    for (size_t i = 0; i < k; ++i) mb[i] = static_cast<rte_mbuf*>(frames[done + i].handle);
    rte_pktmbuf_free_bulk(mb, unsigned(k));  // one pool operation per pool and batch
    done += k;
  }
}

}  // namespace lm::dpdk

// Every munmap of the process's libraries resolves here (the executable
// exports it: transport/dpdk/meson.build); glibc's own calls do not. Only
// the EAL's interrupt thread waits on the gate.
extern "C" int munmap(void* addr, size_t length) noexcept {
  if (!lm::dpdk::on_eal_interrupt_thread()) return int(syscall(SYS_munmap, addr, length));
  lm::dpdk::memif_unmaps_waiting.fetch_add(1, std::memory_order_acq_rel);
  int rc;
  {
    std::unique_lock<std::shared_mutex> gate(lm::dpdk::memif_burst_gate());
    rc = int(syscall(SYS_munmap, addr, length));
  }
  lm::dpdk::memif_unmaps_waiting.fetch_sub(1, std::memory_order_acq_rel);
  return rc;
}
