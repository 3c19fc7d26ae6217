#include "transport/stream.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace lm::transport {

const uint8_t kFramePadding[8] = {};

int Deadline::poll_ms() const {
  if (at_ns == UINT64_MAX) return -1;
  uint64_t left = left_ns();
  uint64_t ms = (left + 999999) / 1000000;
  return ms > INT_MAX ? INT_MAX : int(ms);
}

uint64_t Deadline::left_ns() const {
  if (at_ns == UINT64_MAX) return UINT64_MAX;
  uint64_t now = now_ns();
  return now >= at_ns ? 0 : at_ns - now;
}

Error timeout_error(const std::string& channel, std::string_view what) {
  return Error{ETIMEDOUT, strf("channel %s: timed out %.*s", channel.c_str(), int(what.size()), what.data())};
}

Error stopped_error(const std::string& channel, std::string_view what) {
  return Error{ECANCELED, strf("channel %s: stopped %.*s", channel.c_str(), int(what.size()), what.data())};
}

Result<void> WakeFd::ensure(const std::string& owner) {
  if (fd_.valid()) return ok();
  fd_ = UniqueFd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd_.valid()) return Error::from_errno(strf("channel %s: eventfd", owner.c_str()));
  return ok();
}

void WakeFd::drain() const {
  uint64_t count;
  if (fd_.valid()) (void)!::read(fd_.get(), &count, sizeof count);
}

void WakeOnStop::Write::operator()() const noexcept {
  uint64_t one = 1;
  (void)!::write(fd, &one, sizeof one);
}

WakeOnStop::WakeOnStop(const WakeFd& wake, std::stop_token token) : wake_(wake) {
  if (!token.stop_possible() || wake.get() < 0) return;
  wait_ = StopWait{token, wake.get()};
  callback_.emplace(std::move(token), Write{wake.get()});
}

WakeOnStop::~WakeOnStop() {
  if (!callback_) return;
  callback_.reset();  // waits for a callback running on another thread
  if (wait_.stopped()) wake_.drain();
}

Result<size_t> message_size(std::span<const ConstBuffer> pieces, size_t max_message, const std::string& channel) {
  size_t total = 0;
  for (const auto& p : pieces) total += p.size;
  if (total > max_message)
    return Error{EMSGSIZE, strf("channel %s: message of %zu bytes exceeds the %zu-byte limit", channel.c_str(), total,
                                max_message)};
  return total;
}

std::string extra_option(const std::string& extra, std::string_view key) {
  std::string_view s = extra;
  while (!s.empty()) {
    size_t comma = s.find(',');
    std::string_view item = s.substr(0, comma);
    size_t eq = item.find('=');
    if (item.substr(0, eq) == key) return eq == std::string_view::npos ? "1" : std::string(item.substr(eq + 1));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return {};
}

Result<SocketAddress> resolve_host_port(std::string_view host_port) {
  size_t colon = host_port.rfind(':');
  if (colon == std::string_view::npos)
    return Error::msg(strf("address '%.*s': expected host:port", int(host_port.size()), host_port.data()));
  std::string host(host_port.substr(0, colon));
  std::string port(host_port.substr(colon + 1));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0)
    return Error::msg(strf("address '%.*s': %s", int(host_port.size()), host_port.data(), gai_strerror(rc)));
  SocketAddress a;
  std::memcpy(&a.storage, res->ai_addr, res->ai_addrlen);
  a.length = res->ai_addrlen;
  freeaddrinfo(res);
  return a;
}

static std::string format_sockaddr(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
    port = ntohs(sin->sin_port);
    return strf("%s:%u", host, port);
  }
  if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
    port = ntohs(sin6->sin6_port);
    return strf("[%s]:%u", host, port);
  }
  return "?";
}

std::string socket_pair_name(int fd) {
  sockaddr_storage local{}, peer{};
  socklen_t ll = sizeof local, pl = sizeof peer;
  getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll);
  getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl);
  return format_sockaddr(local) + "->" + format_sockaddr(peer);
}

Result<void> make_blocking(int fd, const std::string& what) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) return Error::from_errno(what + ": fcntl");
  return ok();
}

static Result<void> tune_socket(int fd, const ChannelOptions& options, const std::string& what) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
    return Error::from_errno(what + ": TCP_NODELAY");
  // A peer host that disappears without FIN/RST: keepalive probes on an idle
  // connection, and TCP_USER_TIMEOUT fails sends whose data stays unacknowledged.
  int idle = 10, interval = 5, probes = 3;
  unsigned user_timeout_ms = 30000;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
  if (options.socket_buffer) {
    int size = int(options.socket_buffer);
    // Not fatal: the kernel caps at net.core.[rw]mem_max without error.
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  if (options.zero_copy == ZeroCopy::on && setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof one) < 0)
    return Error::from_errno(what + ": SO_ZEROCOPY");
  return ok();
}

Result<void> wait_fd(int fd, short events, Deadline deadline, const std::string& channel, const char* what,
                     const StopWait& stop) {
  for (;;) {
    if (stop.stopped()) return stopped_error(channel, what);
    pollfd p[2] = {{fd, events, 0}, {stop.wake_fd, POLLIN, 0}};
    int ms = deadline.poll_ms();
    int rc = poll(p, stop.wake_fd >= 0 ? 2 : 1, ms);
    if (rc > 0 && p[0].revents) return ok();
    if (rc > 0) continue;  // woken by the stop
    if (rc == 0) return timeout_error(channel, what);
    if (errno != EINTR) return Error::from_errno(strf("channel %s: poll", channel.c_str()));
  }
}

Result<UniqueFd> connect_socket(std::string_view host_port, const ChannelOptions& options, Timeout timeout) {
  std::string what = strf("connect %.*s", int(host_port.size()), host_port.data());
  SocketAddress addr = LM_TRY_CTX(resolve_host_port(host_port), what);
  Deadline deadline = Deadline::after(timeout);
  for (;;) {
    UniqueFd fd(socket(addr.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return Error::from_errno(what + ": socket");
    LM_TRY(tune_socket(fd.get(), options, what));
    int rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr.storage), addr.length);
    int err = rc == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      LM_TRY(wait_fd(fd.get(), POLLOUT, deadline, what, "connecting"));
      socklen_t len = sizeof err;
      getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    }
    if (err == 0) return fd;
    // The listener may not be up yet (bench peer, tests): retry until the deadline.
    if (err == ECONNREFUSED && !deadline.passed() && timeout != Timeout(0)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    return Error::sys(err, what);
  }
}

constexpr int kListenBacklog = 4096;

Result<UniqueFd> listen_socket(std::string_view host_port, std::string* bound) {
  std::string what = strf("listen %.*s", int(host_port.size()), host_port.data());
  SocketAddress addr = LM_TRY_CTX(resolve_host_port(host_port), what);
  UniqueFd fd(socket(addr.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error::from_errno(what + ": socket");
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr.storage), addr.length) < 0)
    return Error::from_errno(what + ": bind");
  // The kernel caps the backlog at net.core.somaxconn. A short queue lets a
  // flood of idle connections fill it before the accept thread runs; the
  // kernel then drops the next SYN or handshake ACK, and a source among them
  // waits for its retransmission (1, 3, 7 s...) past its own timeout.
  if (::listen(fd.get(), kListenBacklog) < 0) return Error::from_errno(what + ": listen");
  sockaddr_storage local{};
  socklen_t ll = sizeof local;
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &ll);
  if (bound) *bound = format_sockaddr(local);
  return fd;
}

Result<UniqueFd> accept_socket(int listen_fd, const ChannelOptions& options, Timeout timeout,
                               const std::string& listener_name, const StopWait& stop) {
  Deadline deadline = Deadline::after(timeout);
  for (;;) {
    UniqueFd fd(accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (fd.valid()) {
      LM_TRY(tune_socket(fd.get(), options, "accept on " + listener_name));
      return fd;
    }
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
      return Error::from_errno("accept on " + listener_name);
    LM_TRY(wait_fd(listen_fd, POLLIN, deadline, listener_name, "waiting for a connection", stop));
  }
}

Result<std::unique_ptr<Channel>> SocketListener::accept(Timeout timeout, std::stop_token stop) {
  if (stop.stop_possible()) LM_TRY(wake_.ensure(address()));
  WakeOnStop wake(wake_, std::move(stop));
  UniqueFd fd = LM_TRY(accept_socket(fd_.get(), options_, timeout, address(), wake.wait()));
  return wrap_(std::move(fd), options_);
}

// --- frame reader -------------------------------------------------------------

FrameReader::FrameReader(size_t staging_bytes, size_t max_message)
    : staging_(static_cast<std::byte*>(std::aligned_alloc(4096, staging_bytes))),
      staging_size_(staging_bytes),
      max_message_(max_message) {}

Result<void> FrameReader::fill(ByteSource& source, size_t want, Deadline deadline, const std::string& channel,
                               bool exact, const StopWait& stop) {
  if (end_ - begin_ >= want) return ok();
  if (begin_ == end_) begin_ = end_ = 0;
  if (begin_ + want > staging_size_) {
    std::memmove(staging_.get(), staging_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  while (end_ - begin_ < want) {
    size_t room = exact ? begin_ + want - end_ : staging_size_ - end_;
    size_t n = LM_TRY(source.read(staging_.get() + end_, room, deadline, ReadMode::some, stop));
    if (n == 0) {
      if (end_ == begin_)
        return Error{ECONNRESET, strf("channel %s: peer vanished (connection closed without close handshake)",
                                      channel.c_str())};
      return Error{ECONNRESET, strf("channel %s: truncated stream: connection closed inside a frame (%zu of %zu bytes)",
                                    channel.c_str(), end_ - begin_, want)};
    }
    end_ += n;
  }
  return ok();
}

Result<Received> FrameReader::next(ByteSource& source, Deadline deadline, const std::string& channel,
                                   const StopWait& stop) {
  begin_ += consume_on_next_;
  consume_on_next_ = 0;
  if (saw_close_) return Received{RecvStatus::closed, {}};
  if (large_length_) return read_large_body(source, deadline, channel, stop);
  LM_TRY(fill(source, sizeof(FrameHeader), deadline, channel, last_large_, stop));
  FrameHeader h;
  std::memcpy(&h, staging_.get() + begin_, sizeof h);
  if (h.magic == kFrameClose) {
    begin_ += sizeof h;
    saw_close_ = true;
    return Received{RecvStatus::closed, {}};
  }
  if (h.magic != kFrameData)
    return Error{EBADMSG, strf("channel %s: stream corrupted: bad frame magic 0x%08x", channel.c_str(), h.magic)};
  if (h.length > max_message_)
    return Error{EMSGSIZE, strf("channel %s: frame of %u bytes exceeds the %zu-byte message limit", channel.c_str(),
                                h.length, max_message_)};
  size_t body = size_t(h.length) + frame_pad(h.length);
  size_t frame = sizeof h + body;
  last_large_ = frame > staging_size_ / 4;
  if (!last_large_) {
    LM_TRY(fill(source, frame, deadline, channel, false, stop));
    consume_on_next_ = frame;
    return Received{RecvStatus::message, {staging_.get() + begin_ + sizeof h, h.length}};
  }
  if (large_size_ < body) {
    large_.reset(static_cast<std::byte*>(std::aligned_alloc(4096, (body + 4095) & ~size_t(4095))));
    large_size_ = body;
  }
  size_t have = std::min(end_ - begin_ - sizeof h, body);
  std::memcpy(large_.get(), staging_.get() + begin_ + sizeof h, have);
  begin_ += sizeof h + have;
  large_length_ = h.length;
  large_have_ = have;
  return read_large_body(source, deadline, channel, stop);
}

Result<Received> FrameReader::read_large_body(ByteSource& source, Deadline deadline, const std::string& channel,
                                              const StopWait& stop) {
  const uint32_t length = *large_length_;
  const size_t body = size_t(length) + frame_pad(length);
  while (large_have_ < body) {
    // The next frame's header may come with the body's last bytes (no read of its own).
    if (begin_ == end_) begin_ = end_ = 0;
    size_t tail = end_ + sizeof(FrameHeader) <= staging_size_ ? sizeof(FrameHeader) : 0;
    size_t want = body - large_have_;
    size_t n = LM_TRY(
        source.read_with_tail(large_.get() + large_have_, want, staging_.get() + end_, tail, deadline, ReadMode::all, stop));
    if (n == 0)
      return Error{ECONNRESET, strf("channel %s: truncated stream: connection closed inside a frame (%zu of %zu bytes)",
                                    channel.c_str(), sizeof(FrameHeader) + large_have_, sizeof(FrameHeader) + body)};
    if (n > want) {
      end_ += n - want;
      n = want;
    }
    large_have_ += n;
  }
  large_length_.reset();
  return Received{RecvStatus::message, {large_.get(), length}};
}

// --- stream channel ---------------------------------------------------------------

// 1 MiB staging: frames up to 256 KiB are parsed in place, larger ones read directly.
StreamChannel::StreamChannel(std::string name, const ChannelOptions& options)
    : name_(std::move(name)), options_(options), reader_(size_t(1) << 20, options.max_message) {}

Error StreamChannel::fail(std::optional<Error>& slot, Error e) {
  // Timeouts are not fatal: the caller may retry.
  std::lock_guard lock(broken_mu_);
  if (e.code != ETIMEDOUT && !slot) slot = e;
  return e;
}

std::optional<Error> StreamChannel::send_broken() const {
  std::lock_guard lock(broken_mu_);
  return send_broken_;
}

std::optional<Error> StreamChannel::recv_broken() const {
  std::lock_guard lock(broken_mu_);
  return recv_broken_;
}

Result<void> StreamChannel::check_usable() const {
  if (auto b = send_broken()) return *b;
  if (closed_) return Error{EPIPE, strf("channel %s: already closed", name_.c_str())};
  return ok();
}

Result<void> StreamChannel::wait_sent(uint64_t seq, Timeout timeout, std::stop_token stop) {
  if (seq > sent_seq_)
    return Error{EINVAL, strf("channel %s: wait_sent(%llu) beyond the last send %llu", name_.c_str(),
                              (unsigned long long)seq, (unsigned long long)sent_seq_)};
  Deadline deadline = Deadline::after(timeout);
  if (completed_seq_ < seq && stop.stop_possible()) LM_TRY(send_wake_.ensure(name_));
  WakeOnStop wake(send_wake_, std::move(stop));
  while (completed_seq_ < seq) {
    if (auto b = send_broken()) return *b;
    if (wake.wait().stopped()) return stopped_error(name_, "waiting for sends to complete");
    auto r = reap_sends(deadline, wake.wait());
    if (!r && r.error().code == ECANCELED && wake.wait().stopped()) return r;  // not a failure
    if (!r) return fail_send(std::move(r).error());
  }
  return ok();
}

Result<Received> StreamChannel::recv(Timeout timeout, std::stop_token stop) {
  if (auto b = recv_broken()) return *b;
  if (closed_) return Received{RecvStatus::closed, {}};
  if (stop.stop_requested()) return stopped_error(name_, "waiting for data");
  if (stop.stop_possible()) LM_TRY(recv_wake_.ensure(name_));
  WakeOnStop wake(recv_wake_, std::move(stop));
  auto r = reader_.next(source(), Deadline::after(timeout), name_, wake.wait());
  if (!r && r.error().code == ECANCELED && wake.wait().stopped()) return r;  // not a failure: the caller may go on
  if (!r) return fail_recv(std::move(r).error());
  return r;
}

Result<void> StreamChannel::close(Timeout timeout) {
  if (closed_) return ok();
  auto b = send_broken();
  if (!b) b = recv_broken();
  if (b) {
    closed_ = true;
    shutdown_transport();
    return *b;
  }
  Deadline deadline = Deadline::after(timeout);
  auto sent = send_close_mark(deadline);
  Result<void> result;
  if (!sent) {
    result = fail_send(std::move(sent).error());
  } else {
    // Drop what the peer still sends until its close mark arrives.
    while (!reader_.saw_close()) {
      auto r = reader_.next(source(), deadline, name_);
      if (!r) {
        result = fail_recv(std::move(r).error().context("close handshake"));
        break;
      }
    }
  }
  closed_ = true;
  shutdown_transport();
  return result;
}

}  // namespace lm::transport
