// dpdk: the registry entry. Addresses after "dpdk:" are
//   memif:<socket path>     two processes on one host (listen = memif server)
//   af_packet:<interface>   a kernel interface, e.g. a veth in a namespace
//   <ip>:<port>             memif on this host, socket /tmp/livemig-dpdk-<port>.sock
//                           (port 0: a fresh one; the listener's address() names it)
// Every channel to one address shares one link: one DPDK port, one reliable
// endpoint and its poll-mode worker; a channel is one flow of the endpoint.
// ChannelOptions::extra takes "flows=N,mem=MB,cpu=N,peer_timeout_ms=N,
// loss=P,dup=P,reorder=P,zero_copy=1,attach=1,checksum=payload|header,frame=BYTES"
// (cpu=any: the poller unpinned).
//
// Links are looked up by address in a table local to this file: DPDK's own
// device list is process-global (one memif interface per socket and id), so
// the table mirrors it instead of pretending several independent devices.
#include <algorithm>
#include <deque>
#include <map>
#include <mutex>

#include <sched.h>
#include <sys/random.h>
#include <unistd.h>

#include <rte_version.h>

#include "common/clock.hpp"

#include "common/args.hpp"
#include "transport/backends.hpp"
#include "transport/scatter.hpp"
#include "transport/dpdk/dpdk_session.hpp"

namespace lm::transport {
namespace {

using dpdk::DpdkSession;

uint64_t to_ns(Timeout t) {
  if (t == kForever) return uint64_t(365) * 24 * 3600 * 1'000'000'000ull;
  return uint64_t(t.count()) * 1'000'000ull;
}

// The highest-numbered CPU this thread may run on (-1: unknown).
int last_allowed_cpu() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
  for (int cpu = CPU_SETSIZE - 1; cpu >= 0; --cpu)
    if (CPU_ISSET(cpu, &set)) return cpu;
  return -1;
}

Result<dpdk::SessionConfig> session_config(std::string_view address, const ChannelOptions& options,
                                           dpdk::MemifRole role) {
  dpdk::SessionConfig cfg;
  size_t colon = address.find(':');
  std::string kind(address.substr(0, colon));
  std::string where(colon == std::string_view::npos ? "" : address.substr(colon + 1));
  if (where.empty())
    return Error::msg(strf("dpdk address '%.*s': expected memif:<socket> or af_packet:<interface>",
                           int(address.size()), address.data()));
  if (kind.find('.') != std::string::npos || kind == "localhost") {
    // An IP-style address ("127.0.0.1:7000", as generic tools write for every
    // backend) means a memif link on this host named after the port; port 0
    // picks a fresh socket (listener->address() then says which).
    cfg.port.kind = dpdk::DeviceKind::memif;
    uint32_t nonce = 0;
    if (getrandom(&nonce, sizeof nonce, 0) != sizeof nonce) nonce = uint32_t(now_ns());
    cfg.port.socket = where == "0" ? strf("/tmp/livemig-dpdk-%d-%08x.sock", int(getpid()), nonce)
                                   : strf("/tmp/livemig-dpdk-%s.sock", where.c_str());
    cfg.port.role = role;
  } else if (kind == "memif") {
    cfg.port.kind = dpdk::DeviceKind::memif;
    cfg.port.socket = where;
    cfg.port.role = role;
  } else if (kind == "af_packet") {
    cfg.port.kind = dpdk::DeviceKind::af_packet;
    cfg.port.iface = where;
  } else {
    return Error::msg(strf("dpdk address '%.*s': unknown device kind '%s' (memif, af_packet)",
                           int(address.size()), address.data(), kind.c_str()));
  }
  cfg.protocol.flows = 8;
  // memif is shared memory: no wire to corrupt a payload, so only headers are
  // checksummed there (hashing every payload cost a fifth of the sender's
  // poller, docs/dpdk.md); af_packet and NICs checksum payloads too.
  if (cfg.port.kind == dpdk::DeviceKind::memif) cfg.protocol.payload_checksum = dpdk::PayloadChecksum::off;
  // Payloads ride as external buffers (no copy on the sender; memif and
  // af_packet copy once into their rings); sends complete when acknowledged.
  // attach=0 copies into frames instead; zero_copy=1 forces copying.
  cfg.protocol.send_mode = dpdk::SendMode::attach;
  cfg.protocol.max_message = uint32_t(std::min<size_t>(options.max_message, 0xffffffffu));
  // What a slow receiver holds before its window stops the sender.
  cfg.protocol.rx_queue_bytes = std::max<size_t>(options.send_window, size_t(1) << 20);
  // Both sides live: the close handshake takes milliseconds; a peer that
  // never closes its end must not hold a destructor for long.
  cfg.close_timeout_ns = 2'000'000'000ull;
  // memif: both ends' pollers on one CPU, the same in both processes (the
  // last this process may use), unless cpu= says otherwise. On two cores,
  // unpinned pollers each spun on a core of their own and the application's
  // threads waited behind them (memif 21-52 Gbit/s); sharing one, each
  // poller's yield hands the CPU to the other, the frame one copies into the
  // ring is still in that core's cache when the other copies it out, and
  // the other core is left to the application (32-68 Gbit/s in the same
  // alternated runs, docs/dpdk.md "Placement").
  if (cfg.port.kind == dpdk::DeviceKind::memif) cfg.worker_cpu = last_allowed_cpu();
  // "k=v,k=v"
  std::string_view extra = options.extra;
  while (!extra.empty()) {
    size_t comma = extra.find(',');
    std::string_view kv = extra.substr(0, comma);
    extra = comma == std::string_view::npos ? std::string_view() : extra.substr(comma + 1);
    size_t eq = kv.find('=');
    std::string key(kv.substr(0, eq));
    std::string val(eq == std::string_view::npos ? "1" : kv.substr(eq + 1));
    auto bad = [&] { return Error::msg(strf("dpdk option '%s=%s'", key.c_str(), val.c_str())); };
    if (key == "cpu" && val == "any") {
      cfg.worker_cpu = -1;
    } else if (key == "flows" || key == "mem" || key == "cpu" || key == "peer_timeout_ms" || key == "frame") {
      auto v = parse_u64(val);
      if (!v) return bad();
      if (key == "flows") cfg.protocol.flows = uint16_t(std::clamp<uint64_t>(*v, 1, 64));
      if (key == "mem") cfg.eal.memory_mb = unsigned(*v);
      if (key == "cpu") cfg.worker_cpu = int(*v);
      if (key == "peer_timeout_ms") cfg.protocol.peer_timeout_ns = *v * 1'000'000;
      if (key == "frame") {  // largest L2 frame; the protocol's payload length and mbufs are 16-bit
        if (*v < 1024 || *v > 65000) return bad();
        cfg.port.frame_bytes = uint32_t(*v);
      }
    } else if (key == "loss" || key == "dup" || key == "reorder") {
      auto v = parse_double(val);
      if (!v || *v < 0 || *v >= 1) return bad();
      (key == "loss" ? cfg.inject.loss : key == "dup" ? cfg.inject.duplicate : cfg.inject.reorder) = *v;
    } else if (key == "attach") {
      cfg.protocol.send_mode = val == "1" ? dpdk::SendMode::attach : dpdk::SendMode::copy;
    } else if (key == "checksum") {
      if (val != "payload" && val != "header") return bad();
      cfg.protocol.payload_checksum = val == "payload" ? dpdk::PayloadChecksum::on : dpdk::PayloadChecksum::off;
    } else if (key == "zero_copy") {
      cfg.port.zero_copy = val == "1" ? dpdk::ZeroCopy::on : dpdk::ZeroCopy::off;
      cfg.eal.single_file_segments = val == "1";
    } else if (!key.empty()) {
      return Error::msg(strf("dpdk option '%s': unknown (flows, mem, cpu=N|any, peer_timeout_ms, loss, dup, "
                             "reorder, zero_copy, attach, checksum=payload|header, frame)", key.c_str()));
    }
  }
  return cfg;
}

// One DPDK session shared by the channels of this process to one address.
class Link {
 public:
  Link(std::unique_ptr<DpdkSession> s, std::string name) : session(std::move(s)), name(std::move(name)) {
    used.assign(session->channels(), false);
  }
  ~Link() {
    // Both sides agree before the ports stop (the memif server can crash when
    // its peer vanishes while it polls); a never-connected link just stops.
    if (session->endpoint().state() == dpdk::EndpointState::established ||
        session->endpoint().state() == dpdk::EndpointState::closing)
      (void)session->close();
  }
  // When the last open channel closes, the session starts its own close
  // handshake at once (without blocking), so the peer's link, which may be
  // waiting for it, finishes too. A listener serves one session.
  void channel_opened() {
    std::lock_guard lk(mu);
    open_channels++;
  }
  void channel_closed() {
    std::lock_guard lk(mu);
    if (--open_channels == 0) session->endpoint().close();
  }
  std::unique_ptr<DpdkSession> session;
  std::string name;
  std::mutex mu;
  std::vector<bool> used;
  int open_channels = 0;
};

struct LinkTable {
  std::mutex mu;
  std::map<std::string, std::weak_ptr<Link>> links;
};
LinkTable& link_table() {
  static LinkTable table;  // see the file comment: mirrors DPDK's process-global devices
  return table;
}

class DpdkChannel final : public Channel, public ScatterChannel {
 public:
  DpdkChannel(std::shared_ptr<Link> link, uint16_t flow, const ChannelOptions& options)
      : link_(std::move(link)), flow_(flow), options_(options),
        name_(strf("dpdk %s flow %u", link_->name.c_str(), flow)) {
    link_->channel_opened();
  }
  ~DpdkChannel() override {
    link_->session->endpoint().release_message(last_);
    if (!closed_) {  // destroyed without closing: the peer's calls fail (a reset)
      link_->session->endpoint().abort_flow(flow_);
      link_->channel_closed();
    }
  }

  Result<uint64_t> send(std::span<const ConstBuffer> pieces, Timeout timeout) override {
    size_t total = 0;
    for (const auto& p : pieces) total += p.size;
    if (total > options_.max_message)
      return Error{EMSGSIZE, strf("channel %s: message of %zu bytes exceeds the %zu-byte limit", name_.c_str(),
                                  total, options_.max_message)};
    auto& ep = link_->session->endpoint();
    // Back-pressure: bytes handed over but not yet copied into frames.
    reap();
    while (!outstanding_.empty() && outstanding_bytes_ + total > options_.send_window) {
      LM_TRY_CTX(ep.wait_sent(flow_, outstanding_.front().first, to_ns(timeout)), strf("channel %s", name_.c_str()));
      reap();
    }
    spans_.clear();
    for (const auto& p : pieces)
      spans_.emplace_back(static_cast<const uint8_t*>(p.data), p.size);
    uint64_t seq = LM_TRY_CTX(ep.submit(flow_, spans_), strf("channel %s", name_.c_str()));
    outstanding_.emplace_back(seq, total);
    outstanding_bytes_ += total;
    return seq;
  }
  uint64_t send_completed() override {
    reap();
    return completed_;
  }
  using Channel::wait_sent;
  Result<void> wait_sent(uint64_t seq, Timeout timeout, std::stop_token stop) override {
    LM_TRY_CTX(link_->session->endpoint().wait_sent(flow_, seq, to_ns(timeout), std::move(stop)),
               strf("channel %s", name_.c_str()));
    reap();
    return ok();
  }
  using Channel::recv;
  Result<Received> recv(Timeout timeout, std::stop_token stop) override {
    auto st = LM_TRY(next_message(timeout, std::move(stop)));
    if (st == RecvStatus::closed) return Received{RecvStatus::closed, {}};
    // A message copied as it arrived is returned as it is; frames are copied
    // once, here in the caller's thread, not the poller's (a payload in a frame
    // is not 8-byte aligned, which recv() promises).
    if (last_.frames.empty() && last_.pieces.size() == 1)
      return Received{RecvStatus::message, std::as_bytes(last_.pieces[0])};
    last_.to_contiguous(contiguous_);
    link_->session->endpoint().release_message(last_);
    return Received{RecvStatus::message, std::as_bytes(std::span<const uint8_t>(contiguous_))};
  }
  Result<RecvStatus> recv_pieces(std::vector<std::span<const std::byte>>& pieces, Timeout timeout,
                                 std::stop_token stop) override {
    pieces.clear();
    auto st = LM_TRY(next_message(timeout, std::move(stop)));
    for (auto p : last_.pieces) pieces.push_back(std::as_bytes(p));
    return st;
  }
  Result<void> close(Timeout timeout) override {
    if (closed_) return ok();
    closed_ = true;
    auto& ep = link_->session->endpoint();
    ep.close_flow(flow_);
    auto r = ep.wait_flow_closed(flow_, to_ns(timeout));
    ep.release_message(last_);
    contiguous_ = {};
    link_->channel_closed();
    if (!r) return std::move(r).error().context(strf("channel %s", name_.c_str()));
    return ok();
  }
  const std::string& name() const override { return name_; }
  void set_name(std::string name) override { name_ = std::move(name); }

 private:
  // The next message of the flow into last_ (the previous one handed back).
  Result<RecvStatus> next_message(Timeout timeout, std::stop_token stop) {
    auto& ep = link_->session->endpoint();
    ep.release_message(last_);
    auto m = ep.receive_message(flow_, to_ns(timeout), std::move(stop));
    if (!m) {
      if (ep.end_of_stream(flow_)) return RecvStatus::closed;
      return std::move(m).error().context(strf("channel %s", name_.c_str()));
    }
    last_ = std::move(*m);
    return RecvStatus::message;
  }

  void reap() {
    auto& ep = link_->session->endpoint();
    while (!outstanding_.empty() && ep.send_complete(flow_, outstanding_.front().first)) {
      completed_ = outstanding_.front().first;
      outstanding_bytes_ -= outstanding_.front().second;
      outstanding_.pop_front();
    }
  }

  std::shared_ptr<Link> link_;
  uint16_t flow_;
  ChannelOptions options_;
  std::string name_;
  std::deque<std::pair<uint64_t, size_t>> outstanding_;  // seq, bytes
  size_t outstanding_bytes_ = 0;
  uint64_t completed_ = 0;
  std::vector<std::span<const uint8_t>> spans_;
  dpdk::RxMessage last_;            // the message recv()/recv_pieces() returned last, in place
  dpdk::MessageBuffer contiguous_;  // recv() of a message in several pieces
  bool closed_ = false;
};

class DpdkListener final : public Listener {
 public:
  DpdkListener(std::shared_ptr<Link> link, std::string address, const ChannelOptions& options)
      : link_(std::move(link)), address_(std::move(address)), options_(options) {}
  using Listener::accept;
  Result<std::unique_ptr<Channel>> accept(Timeout timeout, std::stop_token stop) override {
    LM_TRY_CTX(dpdk::Eal::check_not_forked(), strf("dpdk listener %s", address_.c_str()));
    auto& ep = link_->session->endpoint();
    uint16_t flow =
        LM_TRY_CTX(ep.accept_flow(to_ns(timeout), std::move(stop)), strf("dpdk listener %s", address_.c_str()));
    return std::unique_ptr<Channel>(new DpdkChannel(link_, flow, options_));
  }
  std::string address() const override { return "dpdk:" + address_; }

 private:
  std::shared_ptr<Link> link_;
  std::string address_;
  ChannelOptions options_;
};

Probe probe_dpdk() {
  // Initialising the EAL is irreversible, so the probe reports what was built.
  return Probe{true, strf("%s (net_memif, net_af_packet; EAL --no-huge --no-pci)", rte_version())};
}

Result<std::unique_ptr<Channel>> connect_dpdk(std::string_view address, const ChannelOptions& options,
                                              Timeout timeout) {
  std::string key = "client:" + std::string(address);
  std::shared_ptr<Link> link;
  {
    LinkTable& t = link_table();
    std::lock_guard lk(t.mu);
    link = t.links[key].lock();
    if (!link) {
      auto cfg = LM_TRY_CTX(session_config(address, options, dpdk::MemifRole::client), "dpdk connect");
      cfg.connect_timeout_ns = to_ns(timeout);
      cfg.port.link_timeout_ns = to_ns(timeout);
      auto s = LM_TRY_CTX(DpdkSession::open(cfg), strf("dpdk connect %.*s", int(address.size()), address.data()));
      link = std::make_shared<Link>(std::move(s), std::string(address));
      t.links[key] = link;
    }
  }
  int flow = -1;
  {
    std::lock_guard lk(link->mu);
    for (size_t i = 0; i < link->used.size(); ++i)
      if (!link->used[i]) {
        link->used[i] = true;
        flow = int(i);
        break;
      }
  }
  if (flow < 0)
    return Error::msg(strf("dpdk connect %.*s: all %zu flows in use (raise flows= in the options)",
                           int(address.size()), address.data(), link->used.size()));
  LM_TRY_CTX(link->session->endpoint().open_flow(uint16_t(flow)), "dpdk connect");
  return std::unique_ptr<Channel>(new DpdkChannel(link, uint16_t(flow), options));
}

Result<std::unique_ptr<Listener>> listen_dpdk(std::string_view address, const ChannelOptions& options) {
  auto cfg = LM_TRY_CTX(session_config(address, options, dpdk::MemifRole::server), "dpdk listen");
  auto s = LM_TRY_CTX(DpdkSession::open(cfg, dpdk::OpenWait::no),
                      strf("dpdk listen %.*s", int(address.size()), address.data()));
  std::string canonical = cfg.port.kind == dpdk::DeviceKind::memif ? "memif:" + cfg.port.socket : std::string(address);
  auto link = std::make_shared<Link>(std::move(s), canonical);
  return std::unique_ptr<Listener>(new DpdkListener(std::move(link), canonical, options));
}

constexpr Backend kDpdk{"dpdk",
                        "DPDK kernel bypass (memif / af_packet / PCI), own reliable protocol, poll-mode worker",
                        probe_dpdk, connect_dpdk, listen_dpdk};

}  // namespace

const Backend& dpdk_backend() { return kDpdk; }

}  // namespace lm::transport
