// Shared by the socket backends (tcp, uring): deadlines, address parsing,
// socket setup, and the stream framing that turns a byte stream into whole
// messages.
//
// Stream frame: FrameHeader{magic, length} | length bytes | zero padding to a
// multiple of 8, so every message starts 8-aligned in the receive buffer and
// decoders can view arrays in place. magic kFrameClose (length 0) is the close
// mark of the close handshake.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "common/error.hpp"
#include "common/fd.hpp"
#include "transport/channel.hpp"

namespace lm::transport {

struct Deadline {
  uint64_t at_ns = UINT64_MAX;
  static Deadline after(Timeout t) {
    if (t == kForever || t.count() < 0) return {};
    uint64_t now = now_ns();
    return {now + uint64_t(t.count()) * 1000000ull};
  }
  bool passed() const { return at_ns != UINT64_MAX && now_ns() >= at_ns; }
  // Milliseconds left for poll(): -1 forever, 0 passed.
  int poll_ms() const;
  uint64_t left_ns() const;
};

Error timeout_error(const std::string& channel, std::string_view what);
// ECANCELED: the wait's stop token was stopped.
Error stopped_error(const std::string& channel, std::string_view what);

// A wait that a stop token may end: the token, and an eventfd that becomes
// readable once it is stopped, for waits that sleep in poll() or io_uring.
struct StopWait {
  std::stop_token token;
  int wake_fd = -1;  // -1: the token cannot be stopped (nothing to watch)
  bool stopped() const { return token.stop_requested(); }
};

// The eventfd of StopWait, one per waiting side of a channel or listener,
// made on first use. While a WakeOnStop lives, stopping its token writes
// the eventfd; its destructor drains it for the next wait.
class WakeFd {
 public:
  Result<void> ensure(const std::string& owner);
  int get() const { return fd_.get(); }
  void drain() const;

 private:
  UniqueFd fd_;
};

class WakeOnStop {
 public:
  // `wake` must have been ensure()d when `token` can be stopped.
  WakeOnStop(const WakeFd& wake, std::stop_token token);
  ~WakeOnStop();
  WakeOnStop(const WakeOnStop&) = delete;
  WakeOnStop& operator=(const WakeOnStop&) = delete;
  const StopWait& wait() const { return wait_; }

 private:
  struct Write {
    int fd;
    void operator()() const noexcept;
  };
  const WakeFd& wake_;
  StopWait wait_;
  std::optional<std::stop_callback<Write>> callback_;
};
// Total bytes of a message's pieces; EMSGSIZE error above `max_message`.
Result<size_t> message_size(std::span<const ConstBuffer> pieces, size_t max_message, const std::string& channel);

struct FrameHeader {
  uint32_t magic;
  uint32_t length;
};
static_assert(sizeof(FrameHeader) == 8);
inline constexpr uint32_t kFrameData = 0x44464d4c;   // "LMFD"
inline constexpr uint32_t kFrameClose = 0x43464d4c;  // "LMFC"
inline constexpr size_t frame_pad(size_t n) { return (8 - n % 8) % 8; }
extern const uint8_t kFramePadding[8];

// "host:port" (host may be a name, an IPv4 address or [IPv6]).
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
};
Result<SocketAddress> resolve_host_port(std::string_view host_port);
Result<UniqueFd> connect_socket(std::string_view host_port, const ChannelOptions& options, Timeout timeout);
// Binds and listens; `bound` gets "host:port" with the real port.
Result<UniqueFd> listen_socket(std::string_view host_port, std::string* bound);
Result<UniqueFd> accept_socket(int listen_fd, const ChannelOptions& options, Timeout timeout,
                               const std::string& listener_name, const StopWait& stop = {});
// "127.0.0.1:40000->127.0.0.1:7000"
std::string socket_pair_name(int fd);
// A TCP socket's LinkCounters (transport/tcp_info.cpp); nullopt if the
// kernel does not report them.
std::optional<LinkCounters> tcp_link_counters(int fd);
// Clears O_NONBLOCK (tcp and uring channels: their sockets block; see each backend).
Result<void> make_blocking(int fd, const std::string& what);
// Waits for poll events on fd; ETIMEDOUT error when the deadline passes,
// ECANCELED when `stop` is stopped.
Result<void> wait_fd(int fd, short events, Deadline deadline, const std::string& channel, const char* what,
                     const StopWait& stop = {});

// How much a read should wait for: `some` returns what is there (at least one
// byte), `all` may wait for the whole length (a hint: the body of a large
// frame; fewer wake-ups). Both return 0 only at end of stream.
enum class ReadMode : uint8_t { some, all };

// Where a FrameReader pulls bytes from.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual Result<size_t> read(void* buf, size_t len, Deadline deadline, ReadMode mode, const StopWait& stop) = 0;
  // read() of a large frame's body into `buf`, offered `tail` for the next
  // frame's header: a source may fill it too with bytes already there (the
  // result then exceeds `len`; it never waits for them), or read the header
  // ahead on its own (uring). Either saves the header a read of its own.
  virtual Result<size_t> read_with_tail(void* buf, size_t len, void* /*tail*/, size_t /*tail_len*/,
                                        Deadline deadline, ReadMode mode, const StopWait& stop) {
    return read(buf, len, deadline, mode, stop);
  }
};

// Reassembles frames. Small frames are returned as views into the staging
// buffer (no copy); a frame larger than a quarter of it is read straight into
// its own buffer.
class FrameReader {
 public:
  FrameReader(size_t staging_bytes, size_t max_message);
  // A timeout or stop leaves a partly read frame in place for the next call.
  Result<Received> next(ByteSource& source, Deadline deadline, const std::string& channel,
                        const StopWait& stop = {});
  bool saw_close() const { return saw_close_; }
  // Staging storage, so a backend can register it (io_uring fixed buffers).
  std::byte* staging() { return staging_.get(); }
  size_t staging_size() const { return staging_size_; }

 private:
  // exact: read no more than `want` (after a large frame the next is likely
  // large too; reading ahead would pull its body through the staging copy).
  Result<void> fill(ByteSource& source, size_t want, Deadline deadline, const std::string& channel, bool exact,
                    const StopWait& stop);
  Result<Received> read_large_body(ByteSource& source, Deadline deadline, const std::string& channel,
                                   const StopWait& stop);
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> staging_;
  size_t staging_size_;
  size_t max_message_;
  size_t begin_ = 0;  // unconsumed bytes are [begin_, end_)
  size_t end_ = 0;
  size_t consume_on_next_ = 0;  // bytes of the frame returned last time
  std::unique_ptr<std::byte, Free> large_;
  size_t large_size_ = 0;
  // A large frame being read into large_: its length and body bytes so far.
  std::optional<uint32_t> large_length_;
  size_t large_have_ = 0;
  bool saw_close_ = false;
  bool last_large_ = false;
};

// Listener over a listening socket; `wrap` turns an accepted fd into the
// backend's channel.
class SocketListener : public Listener {
 public:
  using Wrap = Result<std::unique_ptr<Channel>> (*)(UniqueFd fd, const ChannelOptions& options);
  SocketListener(std::string backend, UniqueFd fd, std::string bound, ChannelOptions options, Wrap wrap)
      : backend_(std::move(backend)), fd_(std::move(fd)), bound_(std::move(bound)), options_(std::move(options)),
        wrap_(wrap) {}
  Result<std::unique_ptr<Channel>> accept(Timeout timeout, std::stop_token stop) override;
  using Listener::accept;
  std::string address() const override { return backend_ + ":" + bound_; }

 private:
  std::string backend_;
  UniqueFd fd_;
  std::string bound_;
  ChannelOptions options_;
  Wrap wrap_;
  WakeFd wake_;
};

// What tcp and uring channels share: the frame reader, the sticky failure
// state per direction and the close
// handshake. Subclasses provide sending and the byte source.
class StreamChannel : public Channel {
 public:
  StreamChannel(std::string name, const ChannelOptions& options);
  Result<Received> recv(Timeout timeout, std::stop_token stop) override;
  using Channel::recv;
  Result<void> close(Timeout timeout) override;
  // Waits by calling reap_sends() until completed_seq_ reaches seq.
  Result<void> wait_sent(uint64_t seq, Timeout timeout, std::stop_token stop) override;
  using Channel::wait_sent;
  const std::string& name() const override { return name_; }
  void set_name(std::string name) override { name_ = std::move(name); }

 protected:
  // Sends the close mark after all pending sends completed.
  virtual Result<void> send_close_mark(Deadline deadline) = 0;
  virtual ByteSource& source() = 0;
  // Blocks until at least one send completion was processed (or the deadline).
  virtual Result<void> reap_sends(Deadline deadline, const StopWait& stop) = 0;
  // Releases the socket (after the handshake or on destruction).
  virtual void shutdown_transport() = 0;
  // Records a fatal error of one direction; later calls on that direction
  // return it again. The directions fail separately so that a message that
  // arrived before the peer died (e.g. its error report) is still delivered.
  Error fail_send(Error e) { return fail(send_broken_, std::move(e)); }
  Error fail_recv(Error e) { return fail(recv_broken_, std::move(e)); }
  std::optional<Error> send_broken() const;
  std::optional<Error> recv_broken() const;
  Result<void> check_usable() const;  // for sending

  std::string name_;
  ChannelOptions options_;
  FrameReader reader_;
  WakeFd recv_wake_;
  WakeFd send_wake_;
  bool closed_ = false;
  uint64_t sent_seq_ = 0;       // last sequence number handed out by send()
  uint64_t completed_seq_ = 0;  // every send up to here is complete

 private:
  Error fail(std::optional<Error>& slot, Error e);
  mutable std::mutex broken_mu_;
  std::optional<Error> send_broken_;
  std::optional<Error> recv_broken_;
};

// Value of "key" in ChannelOptions::extra ("a=1,b=2"), or empty.
std::string extra_option(const std::string& extra, std::string_view key);

}  // namespace lm::transport
