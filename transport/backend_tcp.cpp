// tcp: plain kernel sockets. TCP_NODELAY, large socket buffers, one sendmsg
// per message (frame header + pieces + padding as one iovec array), and
// optionally MSG_ZEROCOPY for large messages, whose buffers complete only
// when the kernel's error-queue notification says the pages were released.
#include <ctime>  // linux/errqueue.h needs struct timespec
#include <linux/errqueue.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <deque>
#include <vector>

#include "transport/backends.hpp"
#include "transport/stream.hpp"

namespace lm::transport {
namespace {

// Below this a zero-copy send costs more (page pinning, notification) than the copy.
constexpr size_t kZeroCopyMin = 16 * 1024;

// The socket itself blocks (for sends, bounded by SO_SNDTIMEO); reads never
// do (MSG_DONTWAIT), they wait in poll() beside the stop token's eventfd.
class TcpSource : public ByteSource {
 public:
  TcpSource(int fd, const std::string& name) : fd_(fd), name_(name) {}
  Result<size_t> read(void* buf, size_t len, Deadline deadline, ReadMode mode, const StopWait& stop) override {
    return read_with_tail(buf, len, nullptr, 0, deadline, mode, stop);
  }
  // With a tail (the next frame's header after a large body) one recvmsg
  // takes both: each recv call lets the kernel send an ACK, and on loopback
  // every ACK makes this thread transmit the sender's queued data itself.
  Result<size_t> read_with_tail(void* buf, size_t len, void* tail, size_t tail_len, Deadline deadline, ReadMode mode,
                                const StopWait& stop) override {
    for (;;) {
      iovec iov[2] = {{buf, len}, {tail, tail_len}};
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = tail_len ? 2 : 1;
      ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT);
      if (n >= 0) return size_t(n);
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return Error::from_errno(strf("channel %s: recv", name_.c_str()));
      // The body of a large frame: wake when a good part of it is there, not
      // for every segment (the plain loop's blocking recv wakes as rarely).
      set_lowat(mode == ReadMode::all ? int(std::min<size_t>(len, kLowatMax)) : 1);
      LM_TRY(wait_fd(fd_, POLLIN, deadline, name_, "waiting for data", stop));
    }
  }

 private:
  // The kernel also wakes a waiter whose receive buffer is nearly full
  // (tcp_rmem_pressure), so a mark above what fits cannot stall.
  static constexpr size_t kLowatMax = 256 * 1024;
  void set_lowat(int bytes) {
    if (bytes == lowat_) return;
    if (setsockopt(fd_, SOL_SOCKET, SO_RCVLOWAT, &bytes, sizeof bytes) == 0) lowat_ = bytes;
  }
  int fd_;
  const std::string& name_;
  int lowat_ = 1;
};

class TcpChannel final : public StreamChannel {
 public:
  TcpChannel(UniqueFd fd, const ChannelOptions& options)
      : StreamChannel("tcp " + socket_pair_name(fd.get()), options), fd_(std::move(fd)), source_(fd_.get(), name_) {}

  Result<uint64_t> send(std::span<const ConstBuffer> pieces, Timeout timeout) override {
    LM_TRY(check_usable());
    Deadline deadline = Deadline::after(timeout);
    size_t total = LM_TRY(message_size(pieces, options_.max_message, name_));
    bool zc = options_.zero_copy == ZeroCopy::on && total >= kZeroCopyMin;
    if (zc) {
      // Back-pressure on buffers the kernel still holds.
      while (!zc_pending_.empty() && zc_pending_bytes_ + total > options_.send_window) {
        auto r = reap_zerocopy(deadline, Block::yes);
        if (!r) return fail_send(std::move(r).error());
      }
    }
    uint64_t seq = sent_seq_ + 1;
    // With MSG_ZEROCOPY the kernel reads the header's memory until the
    // notification, so it lives in the pending record, not on the stack.
    FrameHeader local{kFrameData, uint32_t(total)};
    FrameHeader* h = &local;
    if (zc) {
      zc_pending_.push_back({seq, -1, total, local});
      h = &zc_pending_.back().header;
    }
    iov_.clear();
    iov_.push_back({h, sizeof *h});
    for (const auto& p : pieces)
      if (p.size) iov_.push_back({const_cast<void*>(p.data), p.size});
    if (size_t pad = frame_pad(total)) iov_.push_back({const_cast<uint8_t*>(kFramePadding), pad});
    auto w = write_all(deadline, zc ? MSG_ZEROCOPY : 0);
    if (!w) {
      if (zc) zc_pending_.pop_back();
      return fail_send(std::move(w).error());
    }
    sent_seq_ = seq;
    if (zc) {
      zc_pending_.back().last_id = zc_next_id_ - 1;
      zc_pending_bytes_ += total;
    } else if (zc_pending_.empty()) {
      completed_seq_ = seq;
    } else {
      zc_pending_.push_back({seq, zc_next_id_ - 1, 0, {}});  // completes in order after the zero-copy ones
    }
    return seq;
  }

  uint64_t send_completed() override {
    if (!zc_pending_.empty()) (void)reap_zerocopy(Deadline::after(Timeout(0)), Block::no);
    return completed_seq_;
  }

  ~TcpChannel() override { shutdown_transport(); }
  std::optional<LinkCounters> link_counters() const override { return tcp_link_counters(fd_.get()); }

 protected:
  Result<void> send_close_mark(Deadline deadline) override {
    while (completed_seq_ < sent_seq_) LM_TRY(reap_zerocopy(deadline, Block::yes));
    FrameHeader h{kFrameClose, 0};
    iov_.assign(1, {&h, sizeof h});
    return write_all(deadline, 0);
  }
  ByteSource& source() override { return source_; }
  Result<void> reap_sends(Deadline deadline, const StopWait& stop) override {
    return reap_zerocopy(deadline, Block::yes, stop);
  }
  void shutdown_transport() override { fd_.reset(); }

 private:
  enum class Block : uint8_t { no, yes };
  struct ZcSend {
    uint64_t seq;
    int64_t last_id;  // last MSG_ZEROCOPY id used up to and including this send
    size_t bytes;
    FrameHeader header;
  };

  Result<void> write_all(Deadline deadline, int flags) {
    size_t first = 0;
    while (first < iov_.size()) {
      msghdr msg{};
      msg.msg_iov = iov_.data() + first;
      msg.msg_iovlen = std::min<size_t>(iov_.size() - first, IOV_MAX);
      // Past the deadline one attempt that does not wait, as poll(0) would.
      bool late = deadline.passed();
      if (!late) bound_send_wait(deadline);
      ssize_t n = ::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL | flags | (late ? MSG_DONTWAIT : 0));
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == ENOBUFS && (flags & MSG_ZEROCOPY)) {
          flags &= ~MSG_ZEROCOPY;  // optmem limit reached: this send copies
          continue;
        }
        if (errno != EAGAIN) return Error::from_errno(strf("channel %s: sendmsg", name_.c_str()));
        if (late || deadline.passed()) return timeout_error(name_, "sending (receiver not draining)");
        continue;  // SO_SNDTIMEO ended the wait before the deadline
      }
      if (flags & MSG_ZEROCOPY) ++zc_next_id_;
      size_t left = size_t(n);
      while (left && first < iov_.size()) {
        if (left >= iov_[first].iov_len) {
          left -= iov_[first].iov_len;
          ++first;
        } else {
          iov_[first].iov_base = static_cast<char*>(iov_[first].iov_base) + left;
          iov_[first].iov_len -= left;
          left = 0;
        }
      }
    }
    return ok();
  }

  // A blocking send waits in the kernel, as the plain loop's does, instead of
  // a poll() and another sendmsg after every partial send. SO_SNDTIMEO bounds
  // the wait by the deadline; it is set again only when the one in force
  // would overshoot the deadline (by more than 1 % + 1 ms) or end the wait
  // before half of it, so a caller with a fixed timeout sets it once.
  void bound_send_wait(Deadline deadline) {
    uint64_t left = deadline.left_ns();
    uint64_t want = left == UINT64_MAX ? 0 : std::max<uint64_t>(left, 1000);  // 0: no limit
    bool overshoots = want != 0 && (sndtimeo_ns_ == 0 || sndtimeo_ns_ > want + want / 100 + 1000000);
    bool too_short = sndtimeo_ns_ != 0 && (want == 0 || sndtimeo_ns_ < want / 2);
    if (!overshoots && !too_short) return;
    timeval tv{time_t(want / 1000000000), suseconds_t(want % 1000000000 / 1000)};
    if (setsockopt(fd_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) == 0) sndtimeo_ns_ = want;
  }

  // Reads MSG_ZEROCOPY completion notifications and completes sends in order.
  Result<void> reap_zerocopy(Deadline deadline, Block block, const StopWait& stop = {}) {
    for (;;) {
      char control[128];
      msghdr msg{};
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) return Error::from_errno(strf("channel %s: MSG_ERRQUEUE", name_.c_str()));
        if (block == Block::no || zc_pending_.empty()) break;
        if (!zc_pending_.empty() && zc_pending_.front().last_id <= zc_done_id_) break;
        LM_TRY(wait_fd(fd_.get(), POLLERR, deadline, name_, "waiting for zero-copy completion", stop));
        continue;
      }
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        auto* ee = reinterpret_cast<sock_extended_err*>(CMSG_DATA(c));
        if (ee->ee_origin != SO_EE_ORIGIN_ZEROCOPY) continue;
        // Notifications cover ranges [ee_info, ee_data] and arrive in order on TCP.
        zc_done_id_ = std::max<int64_t>(zc_done_id_, int64_t(ee->ee_data));
      }
      break;
    }
    while (!zc_pending_.empty() && zc_pending_.front().last_id <= zc_done_id_) {
      completed_seq_ = zc_pending_.front().seq;
      zc_pending_bytes_ -= zc_pending_.front().bytes;
      zc_pending_.pop_front();
    }
    if (zc_pending_.empty()) completed_seq_ = sent_seq_;
    return ok();
  }

  UniqueFd fd_;
  TcpSource source_;
  std::vector<iovec> iov_;
  std::deque<ZcSend> zc_pending_;
  size_t zc_pending_bytes_ = 0;
  int64_t zc_next_id_ = 0;
  int64_t zc_done_id_ = -1;
  uint64_t sndtimeo_ns_ = 0;  // SO_SNDTIMEO in force (0: none, the kernel's default)
};

Result<std::unique_ptr<Channel>> wrap_tcp(UniqueFd fd, const ChannelOptions& options) {
  // Blocking socket: sends wait in the kernel (see bound_send_wait), reads pass MSG_DONTWAIT.
  LM_TRY(make_blocking(fd.get(), "tcp channel " + socket_pair_name(fd.get())));
  return std::unique_ptr<Channel>(new TcpChannel(std::move(fd), options));
}

Probe probe_tcp() { return {true, "kernel TCP sockets"}; }

Result<std::unique_ptr<Channel>> connect_tcp(std::string_view address, const ChannelOptions& options,
                                             Timeout timeout) {
  UniqueFd fd = LM_TRY(connect_socket(address, options, timeout));
  return wrap_tcp(std::move(fd), options);
}

Result<std::unique_ptr<Listener>> listen_tcp(std::string_view address, const ChannelOptions& options) {
  std::string bound;
  UniqueFd fd = LM_TRY(listen_socket(address, &bound));
  return std::unique_ptr<Listener>(new SocketListener("tcp", std::move(fd), bound, options, wrap_tcp));
}

constexpr Backend kTcp{"tcp", "kernel TCP sockets (TCP_NODELAY, large buffers, optional MSG_ZEROCOPY)", probe_tcp,
                       connect_tcp, listen_tcp};

}  // namespace

const Backend& tcp_backend() { return kTcp; }

}  // namespace lm::transport
