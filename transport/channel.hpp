// The transport seam: a Channel moves whole messages, each made of several
// buffers, between two endpoints. Backends (tcp, uring, dpdk, in-process)
// implement Channel and Listener and register {name, probe, connect, listen}.
//
// Semantics every backend keeps (the engine and the tests rely on them):
//
// Messages. send() takes a message as a list of pieces (header + payload
//   pieces); the receiver gets the concatenation as ONE contiguous message,
//   in send order, never merged with or split from another message. The
//   channel frames messages itself; the caller's bytes are opaque to it.
//
// Buffer ownership. send() returns a per-channel send sequence number
//   (1, 2, 3, ...). The caller must keep every piece's bytes alive and
//   unmodified until that send is complete: send_completed() >= seq, or
//   wait_sent(seq) returned ok. Completion is in order (completing seq n
//   completes every seq < n). A backend that copies (plain TCP without
//   MSG_ZEROCOPY) completes before send() returns; a zero-copy or
//   retransmitting backend (io_uring send_zc, DPDK external mbufs) completes
//   later, e.g. when the peer acknowledged the data. The ConstBuffer array
//   itself may be reused as soon as send() returns.
//   recv() returns a view into the channel's own receive buffer, valid until
//   the next recv() or close() on that channel, or its destruction.
//
// Threading. A channel is used by at most one sending thread (send,
//   wait_sent, send_completed) and one receiving thread (recv) at a time;
//   the two sides may run concurrently. close() is called when neither side
//   is inside a call. Backends make progress inside these calls (a poll-mode
//   backend polls its queues there, e.g. processes acknowledgements inside
//   send/wait_sent) or on their own threads; the interface assumes no file
//   descriptor. A thread that sent must not exit before its sends completed
//   (wait_sent or close first): io_uring cancels the requests of a thread
//   that exits, and the uring channel then fails with an error saying so.
//
// Blocking and back-pressure. Every potentially blocking call takes a
//   Timeout and returns an Error with code ETIMEDOUT when it elapses. send()
//   blocks while the channel's in-flight bytes (sent but not completed)
//   exceed its window (ChannelOptions::send_window), so a slow receiver
//   slows the sender and memory stays bounded.
//
// Close and failures. close() is a handshake: it sends a close mark, then
//   waits for the peer's close mark (dropping data still arriving) up to its
//   timeout. recv() returns RecvStatus::closed once the peer's close mark
//   arrived; the receiving side then calls close() too. A peer that vanishes
//   (killed, connection reset, EOF without close mark, no sign of life within
//   the timeout) makes every pending and later call fail with an Error that
//   names the channel; nothing hangs past its timeout.
//
// Stopping a wait. recv(), wait_sent() and Listener::accept() also take a
//   std::stop_token: stopping it from any thread (before or during the call)
//   ends a call that waits within milliseconds with an Error with code
//   ECANCELED that names the channel or listener. Nothing else changes: the
//   channel stays open and whole, a message not yet received comes with the
//   next recv(), a send not yet complete completes later.
//   This is how another thread (a cancel, a failed sibling) ends a wait
//   without the waiter polling in slices.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>

#include "common/error.hpp"

namespace lm::transport {

using Timeout = std::chrono::milliseconds;
inline constexpr Timeout kForever = Timeout::max();

// One piece of an outgoing message (not owned; see "Buffer ownership").
struct ConstBuffer {
  const void* data = nullptr;
  size_t size = 0;
};

enum class RecvStatus : uint8_t {
  message,  // bytes hold one whole message
  closed,   // the peer closed the channel cleanly; no more messages
};

struct Received {
  RecvStatus status = RecvStatus::closed;
  std::span<const std::byte> bytes;  // valid until the next recv()/close()
};

enum class ZeroCopy : uint8_t { off, on };

class TlsConfig;  // transport/tls_channel.hpp

struct ChannelOptions {
  // Largest message this channel accepts (sender and receiver check it).
  size_t max_message = size_t(64) << 20;
  // Bytes sent but not yet complete before send() blocks (back-pressure).
  size_t send_window = size_t(16) << 20;
  // Kernel socket buffer sizes for socket backends (0: kernel default).
  size_t socket_buffer = size_t(4) << 20;
  // MSG_ZEROCOPY (tcp) / send_zc (uring) for large pieces, where supported.
  ZeroCopy zero_copy = ZeroCopy::off;
  // Backend-specific knobs as "key=value,key=value" (e.g. "sqpoll=1").
  std::string extra;
  // TLS 1.3 on every channel that connect()/listen() make (tcp, uring; other
  // backends refuse it). Null: plaintext.
  std::shared_ptr<const TlsConfig> tls;
};

// What the peer acknowledged of a channel's bytes so far, and how long they
// waited for its receive window (socket backends: the kernel's TCP_INFO,
// whose times count in jiffies, 4 ms here). A rate over a window from these
// counts bytes delivered, not bytes queued in socket buffers that are still
// growing.
struct LinkCounters {
  uint64_t acked_bytes = 0;
  uint64_t peer_limited_us = 0;
};

class Channel {
 public:
  virtual ~Channel() = default;

  // Queues one message made of `pieces` (total size <= max_message; an
  // empty message is allowed). Returns its send sequence number.
  virtual Result<uint64_t> send(std::span<const ConstBuffer> pieces, Timeout timeout) = 0;
  // Highest sequence number whose buffers the caller may reuse.
  virtual uint64_t send_completed() = 0;
  // Waits until send `seq` (and all before it) is complete; ECANCELED once
  // `stop` is stopped.
  virtual Result<void> wait_sent(uint64_t seq, Timeout timeout, std::stop_token stop) = 0;
  Result<void> wait_sent(uint64_t seq, Timeout timeout) { return wait_sent(seq, timeout, std::stop_token()); }

  // Receives the next whole message, or the peer's clean close; ECANCELED
  // once `stop` is stopped (see "Stopping a wait").
  virtual Result<Received> recv(Timeout timeout, std::stop_token stop) = 0;
  Result<Received> recv(Timeout timeout) { return recv(timeout, std::stop_token()); }

  // Close handshake (see above); idempotent. Completes pending sends first.
  virtual Result<void> close(Timeout timeout) = 0;

  // "tcp 127.0.0.1:40000->127.0.0.1:7000", used in every error message.
  virtual const std::string& name() const = 0;
  // Renames for error messages once the channel's role is known
  // ("bulk1 tcp 127.0.0.1:...").
  virtual void set_name(std::string name) = 0;

  // The link counters so far; nullopt where the backend keeps none. Any
  // thread may call it, while the channel is open.
  virtual std::optional<LinkCounters> link_counters() const { return std::nullopt; }
};

class Listener {
 public:
  virtual ~Listener() = default;
  // Waits for the next incoming channel; ECANCELED once `stop` is stopped.
  virtual Result<std::unique_ptr<Channel>> accept(Timeout timeout, std::stop_token stop) = 0;
  Result<std::unique_ptr<Channel>> accept(Timeout timeout) { return accept(timeout, std::stop_token()); }
  // The address a peer passes to connect(), with the real port when the
  // listen address asked for port 0: "tcp:127.0.0.1:40123".
  virtual std::string address() const = 0;
};

// A probe never lies: available == false comes with the reason.
struct Probe {
  bool available = false;
  std::string reason;  // why not; or a short description of what was found
};

// One registry entry. Addresses are "<backend>:<backend-specific part>",
// e.g. "tcp:127.0.0.1:7000", "uring:127.0.0.1:7000", "dpdk:memif:/run/x.sock".
// connect/listen receive the part after "<backend>:".
struct Backend {
  std::string_view name;
  std::string_view summary;
  Probe (*probe)();
  Result<std::unique_ptr<Channel>> (*connect)(std::string_view address, const ChannelOptions& options,
                                              Timeout timeout);
  Result<std::unique_ptr<Listener>> (*listen)(std::string_view address, const ChannelOptions& options);
};

// Every backend compiled in, in order of preference (fastest first).
std::span<const Backend* const> backends();
// The backend named `name`, or an error listing the known names.
Result<const Backend*> find_backend(std::string_view name);
// Splits "tcp:127.0.0.1:7000" and dispatches to the backend (probing it first).
Result<std::unique_ptr<Channel>> connect(std::string_view address, const ChannelOptions& options,
                                         Timeout timeout);
Result<std::unique_ptr<Listener>> listen(std::string_view address, const ChannelOptions& options);
// Whether both ends of `address` are on this host: a loopback IP address
// (127.0.0.0/8, ::1) or a shared-memory link (dpdk:memif:...). The engine
// then counts the CPU the peer's receiving takes from the same cores.
bool same_host_address(std::string_view address);

// Backend entries are declared in transport/backends.hpp, one file each.

// An in-process channel pair for unit tests (bounded queues, same semantics:
// back-pressure, close handshake, and an error on the other end when one end
// is destroyed without closing). Not in the registry: it has no address.
struct ChannelPair {
  std::unique_ptr<Channel> a;
  std::unique_ptr<Channel> b;
};
ChannelPair make_inproc_pair(const ChannelOptions& options, std::string_view name = "inproc");

// An in-process listener and the dial function that reaches it: each dial
// makes an in-process pair and queues one end for accept(). Engine tests run
// a source and a destination in one process over it, without sockets. A
// dial after the listener is gone fails with ECONNREFUSED. Not in the
// registry: address() ("inproc:<name>") cannot be passed to connect().
using Dial = std::function<Result<std::unique_ptr<Channel>>(Timeout)>;
struct InprocLink {
  std::unique_ptr<Listener> listener;
  Dial dial;
};
InprocLink make_inproc_link(const ChannelOptions& options, std::string_view name = "inproc");

// Helper for callers that do not overlap sends: send + wait_sent.
inline Result<void> send_sync(Channel& channel, std::span<const ConstBuffer> pieces, Timeout timeout) {
  uint64_t seq = LM_TRY(channel.send(pieces, timeout));
  return channel.wait_sent(seq, timeout);
}

}  // namespace lm::transport
