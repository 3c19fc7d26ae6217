// uring: TCP sockets driven through io_uring (liburing 2.3).
//
// Send side (one ring, used only by the sending thread): send() queues the
// message's iovecs and returns; at most one sendmsg is in flight per socket,
// because two concurrent sends on one stream socket may interleave after a
// short send. While one is in flight, further messages queue and go out
// together in the next sendmsg (batched submission: one SQE for many small
// messages). Buffers complete when their sendmsg completed, or with send_zc
// (ZeroCopy::on) when the kernel's notification CQE released the pages.
//
// Receive side (second ring, used only by the receiving thread): reads into
// the frame reader's 1 MiB staging buffer, registered with the ring (fixed
// buffer, IORING_OP_READ_FIXED), and large frames straight into their own
// buffer (IORING_OP_RECV), with the next frame's header read ahead by a recv
// linked after the body's. Frames up to 256 KiB are handed out in place.
//
// extra options: "sqpoll=1" (kernel submission thread; costs a core),
// "entries=N" (ring size), "recv=multishot" (multishot receive into a
// provided buffer ring instead of reads into the registered staging buffer).
#include <cstdlib>
#include <liburing.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstring>
#include <deque>
#include <optional>
#include <vector>

#include "transport/backends.hpp"
#include "transport/stream.hpp"

namespace lm::transport {
namespace {

constexpr uint64_t kOpIo = 1;
constexpr uint64_t kOpCancel = 2;
constexpr uint64_t kOpWake = 3;
constexpr uint64_t kOpAhead = 4;

Result<void> init_ring(io_uring* ring, const ChannelOptions& options, const std::string& name) {
  unsigned entries = 64;
  if (auto e = extra_option(options.extra, "entries"); !e.empty()) {
    char* end = nullptr;
    unsigned long n = std::strtoul(e.c_str(), &end, 10);
    if (*end != '\0' || n == 0 || n > 32768)
      return Error::msg(strf("%s: io_uring option entries=%s: expected 1..32768", name.c_str(), e.c_str()));
    entries = unsigned(n);
  }
  io_uring_params p{};
  if (extra_option(options.extra, "sqpoll") == "1") {
    p.flags |= IORING_SETUP_SQPOLL;
    p.sq_thread_idle = 50;
  } else {
    p.flags |= IORING_SETUP_COOP_TASKRUN;
  }
  int rc = io_uring_queue_init_params(entries, ring, &p);
  if (rc == -EINVAL && (p.flags & IORING_SETUP_COOP_TASKRUN)) {
    p = io_uring_params{};
    rc = io_uring_queue_init_params(entries, ring, &p);
  }
  if (rc < 0) return Error::sys(-rc, strf("channel %s: io_uring_queue_init", name.c_str()));
  return ok();
}

// Waits for one CQE until the deadline; -ETIME on timeout.
int wait_cqe(io_uring* ring, io_uring_cqe** cqe, Deadline deadline) {
  for (;;) {
    int rc;
    if (deadline.at_ns == UINT64_MAX) {
      rc = io_uring_wait_cqe(ring, cqe);
    } else {
      uint64_t left = deadline.left_ns();
      __kernel_timespec ts{int64_t(left / 1000000000ull), int64_t(left % 1000000000ull)};
      rc = io_uring_wait_cqe_timeout(ring, cqe, &ts);
    }
    if (rc == -EINTR) continue;
    return rc;
  }
}

io_uring_sqe* get_sqe(io_uring* ring) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  if (!sqe) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  return sqe;
}

// A poll on the wait's wake eventfd (StopWait), kept armed in the receive
// ring across reads: its completion means a stop, or that it needs arming
// again (a stale wake, or the thread that armed it exited).
class WakePoll {
 public:
  // Prepares the poll if it is not armed; true when the caller must submit.
  bool arm(io_uring* ring, const StopWait& stop) {
    if (armed_ || stop.wake_fd < 0) return false;
    io_uring_sqe* sqe = get_sqe(ring);
    io_uring_prep_poll_add(sqe, stop.wake_fd, POLLIN);
    io_uring_sqe_set_data64(sqe, kOpWake);
    armed_ = true;
    return true;
  }
  // For a kOpWake completion: true when the wait is to stop.
  bool completed(io_uring* ring, const StopWait& stop) {
    armed_ = false;
    if (stop.stopped()) return true;
    if (arm(ring, stop)) io_uring_submit(ring);
    return false;
  }

 private:
  bool armed_ = false;
};

class UringSource : public ByteSource {
 public:
  UringSource(int fd, io_uring* ring, const std::string& name, const std::byte* fixed, size_t fixed_size)
      : fd_(fd), ring_(ring), name_(name), fixed_(fixed), fixed_size_(fixed_size) {}

  Result<size_t> read(void* buf, size_t len, Deadline deadline, ReadMode mode, const StopWait& stop) override {
    return read_with_tail(buf, len, nullptr, 0, deadline, mode, stop);
  }

  // A large body (a tail is offered) is read with the next frame's header
  // linked after it (IOSQE_IO_LINK): a recv into ahead_ that the kernel
  // starts once the body is in, usually completing in the same
  // io_uring_enter, so the header costs no submission and wait of its own.
  Result<size_t> read_with_tail(void* buf, size_t len, void* /*tail*/, size_t tail_len, Deadline deadline,
                                ReadMode mode, const StopWait& stop) override {
    if (ahead_ == Ahead::pending) LM_TRY(wait_ahead(deadline, stop));
    if (ahead_ == Ahead::ready) return take_ahead(buf, len);
    bool link = tail_len > 0 && mode == ReadMode::all;
    if (io_uring_sq_space_left(ring_) < 3) io_uring_submit(ring_);  // a link must not span two submissions
    (void)wake_.arm(ring_, stop);  // submitted with the read
    io_uring_sqe* sqe = get_sqe(ring_);
    auto* b = static_cast<const std::byte*>(buf);
    if (fixed_ && b >= fixed_ && b + len <= fixed_ + fixed_size_)
      io_uring_prep_read_fixed(sqe, fd_, buf, unsigned(len), 0, 0);
    else
      // MSG_WAITALL: the kernel retries until the whole body is in, one CQE.
      io_uring_prep_recv(sqe, fd_, buf, len, mode == ReadMode::all ? MSG_WAITALL : 0);
    io_uring_sqe_set_data64(sqe, kOpIo);
    if (link) {
      sqe->flags |= IOSQE_IO_LINK;
      io_uring_sqe* next = get_sqe(ring_);
      // Not MSG_WAITALL: it completes with whatever arrived, so a cancel
      // (a thread exit) never drops bytes it had taken.
      io_uring_prep_recv(next, fd_, ahead_buf_, sizeof ahead_buf_, 0);
      io_uring_sqe_set_data64(next, kOpAhead);
      ahead_ = Ahead::pending;
    }
    // Submit and wait in one system call.
    io_uring_cqe* cqe = nullptr;
    int rc;
    do {
      if (deadline.at_ns == UINT64_MAX) {
        rc = io_uring_submit_and_wait(ring_, 1);
        if (rc >= 0) rc = io_uring_peek_cqe(ring_, &cqe);
        if (rc == -EAGAIN) rc = io_uring_wait_cqe(ring_, &cqe);
      } else {
        uint64_t left = deadline.left_ns();
        __kernel_timespec ts{int64_t(left / 1000000000ull), int64_t(left % 1000000000ull)};
        rc = io_uring_submit_and_wait_timeout(ring_, &cqe, 1, &ts, nullptr);
      }
    } while (rc == -EINTR);
    // With a submission in the same call the kernel reports the submit count,
    // not the wait's -ETIME: look again (returns -ETIME once the deadline passed).
    if (rc == -ETIME || (rc >= 0 && !cqe)) rc = wait_cqe(ring_, &cqe, deadline);
    if (rc > 0) rc = 0;
    return reap_read(cqe, rc, deadline, stop);
  }

 private:
  enum class Ahead : uint8_t { none, pending, ready };

  // The read-ahead header's completion: bytes to hand out, the end of the
  // stream (0), or nothing (cancelled with its link, or by a thread exit).
  void ahead_done(int res) {
    ahead_ = Ahead::none;
    if (res == -ECANCELED || res == -EINTR) return;
    ahead_ = Ahead::ready;
    ahead_res_ = res;
    ahead_pos_ = 0;
  }

  Result<size_t> take_ahead(void* buf, size_t len) {
    if (ahead_res_ < 0) return Error::sys(-ahead_res_, strf("channel %s: recv", name_.c_str()));
    size_t n = std::min(len, size_t(ahead_res_) - ahead_pos_);
    std::memcpy(buf, ahead_buf_ + ahead_pos_, n);
    ahead_pos_ += n;
    if (ahead_pos_ == size_t(ahead_res_)) ahead_ = Ahead::none;
    return n;  // 0 only for the end of the stream
  }

  // Until the read-ahead completes; a timeout or a stop leaves it pending.
  Result<void> wait_ahead(Deadline deadline, const StopWait& stop) {
    while (ahead_ == Ahead::pending) {
      io_uring_cqe* cqe = nullptr;
      int rc = io_uring_peek_cqe(ring_, &cqe);
      if (rc != 0) {
        if (wake_.arm(ring_, stop)) io_uring_submit(ring_);
        rc = wait_cqe(ring_, &cqe, deadline);
      }
      if (rc == -ETIME) return timeout_error(name_, "waiting for data");
      if (rc < 0) return Error::sys(-rc, strf("channel %s: io_uring_wait_cqe (recv)", name_.c_str()));
      uint64_t op = io_uring_cqe_get_data64(cqe);
      int res = cqe->res;
      io_uring_cqe_seen(ring_, cqe);
      if (op == kOpAhead) ahead_done(res);
      if (op == kOpWake && wake_.completed(ring_, stop)) return stopped_error(name_, "waiting for data");
    }
    return ok();
  }

  // Reaps completions until the read's own; a timeout or a stop cancels the
  // read first, which must not land later.
  Result<size_t> reap_read(io_uring_cqe* cqe, int rc, Deadline deadline, const StopWait& stop) {
    std::optional<Error> cancelled_by;
    for (;;) {
      if (rc == -ETIME && !cancelled_by) {
        cancelled_by = timeout_error(name_, "waiting for data");
        cancel_read();
      } else if (rc < 0 && rc != -ETIME) {
        return Error::sys(-rc, strf("channel %s: io_uring_wait_cqe (recv)", name_.c_str()));
      }
      if (cqe) {
        uint64_t op = io_uring_cqe_get_data64(cqe);
        int res = cqe->res;
        io_uring_cqe_seen(ring_, cqe);
        if (op == kOpIo) {
          if (res >= 0) return size_t(res);
          if (cancelled_by && (res == -ECANCELED || res == -EINTR)) return std::move(*cancelled_by);
          return Error::sys(-res, strf("channel %s: recv", name_.c_str()));
        }
        if (op == kOpAhead) ahead_done(res);
        if (op == kOpWake && wake_.completed(ring_, stop) && !cancelled_by) {
          cancelled_by = stopped_error(name_, "waiting for data");
          cancel_read();
        }
      }
      cqe = nullptr;
      rc = wait_cqe(ring_, &cqe, cancelled_by ? Deadline{} : deadline);
    }
  }

  void cancel_read() {
    io_uring_sqe* c = get_sqe(ring_);
    io_uring_prep_cancel64(c, kOpIo, 0);
    io_uring_sqe_set_data64(c, kOpCancel);
    io_uring_submit(ring_);
  }

  int fd_;
  io_uring* ring_;
  const std::string& name_;
  const std::byte* fixed_;
  size_t fixed_size_;
  WakePoll wake_;
  Ahead ahead_ = Ahead::none;
  int ahead_res_ = 0;  // bytes in ahead_buf_, or -errno
  size_t ahead_pos_ = 0;
  std::byte ahead_buf_[sizeof(FrameHeader)];
};

// Multishot receive ("recv=multishot"): one armed IORING_OP_RECV with
// IORING_RECV_MULTISHOT picks buffers from a provided buffer ring; every CQE
// is a chunk of the stream in one of those buffers, copied out to the frame
// reader and then handed back to the ring. A timeout leaves the receive armed
// (nothing to cancel). Costs one user-space copy; saves a submission per read.
class MultishotSource : public ByteSource {
 public:
  static constexpr unsigned kBuffers = 64;
  static constexpr size_t kBufferSize = 64 * 1024;
  static constexpr uint16_t kGroup = 1;

  MultishotSource(int fd, io_uring* ring, const std::string& name) : fd_(fd), ring_(ring), name_(name) {}
  ~MultishotSource() {
    if (ring_mem_ != MAP_FAILED) munmap(ring_mem_, ring_bytes_);
    std::free(pool_);
  }

  Result<void> setup() {
    ring_bytes_ = (kBuffers * sizeof(io_uring_buf) + 4095) & ~size_t(4095);
    ring_mem_ = mmap(nullptr, ring_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ring_mem_ == MAP_FAILED) return Error::from_errno(strf("channel %s: mmap buffer ring", name_.c_str()));
    br_ = static_cast<io_uring_buf_ring*>(ring_mem_);
    io_uring_buf_ring_init(br_);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(ring_mem_);
    reg.ring_entries = kBuffers;
    reg.bgid = kGroup;
    // liburing 2.3 has no io_uring_setup_buf_ring: register our own memory.
    int rc = io_uring_register_buf_ring(ring_, &reg, 0);
    if (rc < 0) return Error::sys(-rc, strf("channel %s: io_uring_register_buf_ring", name_.c_str()));
    pool_ = static_cast<std::byte*>(std::aligned_alloc(4096, kBuffers * kBufferSize));
    for (unsigned i = 0; i < kBuffers; ++i)
      io_uring_buf_ring_add(br_, pool_ + i * kBufferSize, kBufferSize, uint16_t(i),
                            io_uring_buf_ring_mask(kBuffers), int(i));
    io_uring_buf_ring_advance(br_, kBuffers);
    return ok();  // armed by the first read: requests die with the thread that submitted them
  }

  Result<size_t> read(void* buf, size_t len, Deadline deadline, ReadMode, const StopWait& stop) override {
    while (chunk_left_ == 0) {
      if (eof_) return size_t(0);
      if (wake_.arm(ring_, stop) && armed_) io_uring_submit(ring_);
      if (!armed_) LM_TRY(arm());
      io_uring_cqe* cqe = nullptr;
      int rc = wait_cqe(ring_, &cqe, deadline);
      if (rc == -ETIME) return timeout_error(name_, "waiting for data");
      if (rc < 0) return Error::sys(-rc, strf("channel %s: io_uring_wait_cqe (multishot)", name_.c_str()));
      int res = cqe->res;
      unsigned flags = cqe->flags;
      uint64_t op = io_uring_cqe_get_data64(cqe);
      io_uring_cqe_seen(ring_, cqe);
      if (op == kOpWake) {  // a stop leaves the receive armed, like a timeout
        if (wake_.completed(ring_, stop)) return stopped_error(name_, "waiting for data");
        continue;
      }
      if (!(flags & IORING_CQE_F_MORE)) armed_ = false;
      // ENOBUFS: the ring ran dry; ECANCELED: the thread that armed it exited
      // (unreceived data stays in the socket). Either way, re-arm from here.
      if (res == -ENOBUFS || res == -ECANCELED) continue;
      if (res < 0) return Error::sys(-res, strf("channel %s: multishot recv", name_.c_str()));
      if (res == 0) {
        eof_ = true;
        return size_t(0);
      }
      chunk_id_ = uint16_t(flags >> IORING_CQE_BUFFER_SHIFT);
      chunk_at_ = pool_ + size_t(chunk_id_) * kBufferSize;
      chunk_left_ = size_t(res);
    }
    size_t n = std::min(len, chunk_left_);
    std::memcpy(buf, chunk_at_, n);
    chunk_at_ += n;
    chunk_left_ -= n;
    if (chunk_left_ == 0) {  // hand the buffer back to the kernel
      io_uring_buf_ring_add(br_, pool_ + size_t(chunk_id_) * kBufferSize, kBufferSize, chunk_id_,
                            io_uring_buf_ring_mask(kBuffers), 0);
      io_uring_buf_ring_advance(br_, 1);
    }
    return n;
  }

 private:
  Result<void> arm() {
    io_uring_sqe* sqe = get_sqe(ring_);
    io_uring_prep_recv_multishot(sqe, fd_, nullptr, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kGroup;
    io_uring_sqe_set_data64(sqe, kOpIo);
    int rc = io_uring_submit(ring_);
    if (rc < 0) return Error::sys(-rc, strf("channel %s: io_uring_submit (multishot)", name_.c_str()));
    armed_ = true;
    return ok();
  }

  int fd_;
  io_uring* ring_;
  const std::string& name_;
  void* ring_mem_ = MAP_FAILED;
  size_t ring_bytes_ = 0;
  io_uring_buf_ring* br_ = nullptr;
  std::byte* pool_ = nullptr;
  bool armed_ = false;
  WakePoll wake_;
  bool eof_ = false;
  uint16_t chunk_id_ = 0;
  std::byte* chunk_at_ = nullptr;
  size_t chunk_left_ = 0;
};

class UringChannel final : public StreamChannel {
 public:
  static Result<std::unique_ptr<Channel>> make(UniqueFd fd, const ChannelOptions& options) {
    // io_uring waits itself (poll-armed retries); with O_NONBLOCK, READ_FIXED
    // on the socket would surface -EAGAIN instead.
    LM_TRY(make_blocking(fd.get(), "uring channel " + socket_pair_name(fd.get())));
    std::unique_ptr<UringChannel> ch(new UringChannel(std::move(fd), options));
    LM_TRY(init_ring(&ch->send_ring_, options, ch->name_));
    ch->send_ring_ok_ = true;
    LM_TRY(init_ring(&ch->recv_ring_, options, ch->name_));
    ch->recv_ring_ok_ = true;
    if (extra_option(options.extra, "recv") == "multishot") {
      ch->multishot_ = std::make_unique<MultishotSource>(ch->fd_.get(), &ch->recv_ring_, ch->name_);
      LM_TRY(ch->multishot_->setup());
    } else {
      iovec staging{ch->reader_.staging(), ch->reader_.staging_size()};
      // Registration can fail under RLIMIT_MEMLOCK; then plain recv is used.
      bool fixed = io_uring_register_buffers(&ch->recv_ring_, &staging, 1) == 0;
      ch->source_.emplace(ch->fd_.get(), &ch->recv_ring_, ch->name_, fixed ? ch->reader_.staging() : nullptr,
                          ch->reader_.staging_size());
    }
    return std::unique_ptr<Channel>(std::move(ch));
  }

  ~UringChannel() override { shutdown_transport(); }
  std::optional<LinkCounters> link_counters() const override { return tcp_link_counters(fd_.get()); }

  Result<uint64_t> send(std::span<const ConstBuffer> pieces, Timeout timeout) override {
    LM_TRY(check_usable());
    Deadline deadline = Deadline::after(timeout);
    size_t total = LM_TRY(message_size(pieces, options_.max_message, name_));
    // Back-pressure: bounded bytes queued + in flight.
    while (!queue_.empty() && queued_bytes_ + total > options_.send_window) {
      auto r = reap(deadline);
      if (!r) return fail_send(std::move(r).error());
    }
    if (pieces.size() + 2 > IOV_MAX)
      return Error{EINVAL, strf("channel %s: %zu pieces exceed IOV_MAX", name_.c_str(), pieces.size())};
    Queued& q = queue_.emplace_back();
    q.seq = ++sent_seq_;
    q.header = {kFrameData, uint32_t(total)};
    q.iov.reserve(pieces.size() + 2);
    q.iov.push_back({&q.header, sizeof q.header});
    for (const auto& p : pieces)
      if (p.size) q.iov.push_back({const_cast<void*>(p.data), p.size});
    if (size_t pad = frame_pad(total)) q.iov.push_back({const_cast<uint8_t*>(kFramePadding), pad});
    q.bytes = sizeof q.header + total + frame_pad(total);
    queued_bytes_ += q.bytes;
    auto r = submit_batch();
    if (!r) return fail_send(std::move(r).error());
    return q.seq;
  }

  uint64_t send_completed() override {
    io_uring_cqe* cqe;
    while (inflight_ && io_uring_peek_cqe(&send_ring_, &cqe) == 0) {
      if (io_uring_cqe_get_data64(cqe) == kOpWake) {  // a poll left by an earlier wait_sent
        io_uring_cqe_seen(&send_ring_, cqe);
        (void)send_wake_poll_.completed(&send_ring_, StopWait{});
        continue;
      }
      auto r = handle_send_cqe(cqe);
      if (!r) {
        (void)fail_send(std::move(r).error());
        break;
      }
    }
    return completed_seq_;
  }

 protected:
  Result<void> send_close_mark(Deadline deadline) override {
    Queued& q = queue_.emplace_back();
    q.seq = ++sent_seq_;
    q.header = {kFrameClose, 0};
    q.iov.push_back({&q.header, sizeof q.header});
    q.bytes = sizeof q.header;
    queued_bytes_ += q.bytes;
    LM_TRY(submit_batch());
    while (completed_seq_ < sent_seq_) LM_TRY(reap(deadline));
    return ok();
  }
  ByteSource& source() override {
    if (multishot_) return *multishot_;
    return *source_;
  }
  Result<void> reap_sends(Deadline deadline, const StopWait& stop) override { return reap(deadline, stop); }
  void shutdown_transport() override {
    if (!fd_.valid()) return;
    // Fail in-flight operations before the rings go, then release everything.
    ::shutdown(fd_.get(), SHUT_RDWR);
    if (send_ring_ok_) io_uring_queue_exit(&send_ring_);
    if (recv_ring_ok_) io_uring_queue_exit(&recv_ring_);
    send_ring_ok_ = recv_ring_ok_ = false;
    fd_.reset();
  }

 private:
  UringChannel(UniqueFd fd, const ChannelOptions& options)
      : StreamChannel("uring " + socket_pair_name(fd.get()), options), fd_(std::move(fd)) {
    zero_copy_ = options.zero_copy == ZeroCopy::on;
  }

  struct Queued {
    uint64_t seq = 0;
    FrameHeader header{};
    std::vector<iovec> iov;
    size_t bytes = 0;
  };

  Result<void> submit_batch() {
    if (inflight_ || queue_.empty()) return ok();
    batch_iov_.clear();
    batch_msgs_ = 0;
    batch_bytes_ = 0;
    for (const Queued& q : queue_) {
      if (batch_msgs_ && batch_iov_.size() + q.iov.size() > IOV_MAX) break;
      batch_iov_.insert(batch_iov_.end(), q.iov.begin(), q.iov.end());
      batch_bytes_ += q.bytes;
      ++batch_msgs_;
    }
    batch_first_iov_ = 0;
    return submit_rest();
  }

  Result<void> submit_rest() {
    batch_msg_ = msghdr{};
    batch_msg_.msg_iov = batch_iov_.data() + batch_first_iov_;
    batch_msg_.msg_iovlen = batch_iov_.size() - batch_first_iov_;
    io_uring_sqe* sqe = get_sqe(&send_ring_);
    if (zero_copy_) {
      io_uring_prep_sendmsg_zc(sqe, fd_.get(), &batch_msg_, MSG_NOSIGNAL | MSG_WAITALL);
      ++notifs_pending_;
    } else {
      io_uring_prep_sendmsg(sqe, fd_.get(), &batch_msg_, MSG_NOSIGNAL | MSG_WAITALL);
    }
    io_uring_sqe_set_data64(sqe, kOpIo);
    int rc = io_uring_submit(&send_ring_);
    if (rc < 0) return Error::sys(-rc, strf("channel %s: io_uring_submit (send)", name_.c_str()));
    inflight_ = true;
    data_pending_ = true;
    return ok();
  }

  // One send completion, or (with `stop`) a stop.
  Result<void> reap(Deadline deadline, const StopWait& stop = {}) {
    if (!inflight_) return submit_batch();
    if (send_wake_poll_.arm(&send_ring_, stop)) io_uring_submit(&send_ring_);
    io_uring_cqe* cqe = nullptr;
    int rc = wait_cqe(&send_ring_, &cqe, deadline);
    if (rc == -ETIME) return timeout_error(name_, "sending (receiver not draining)");
    if (rc < 0) return Error::sys(-rc, strf("channel %s: io_uring_wait_cqe (send)", name_.c_str()));
    if (io_uring_cqe_get_data64(cqe) == kOpWake) {
      io_uring_cqe_seen(&send_ring_, cqe);
      if (send_wake_poll_.completed(&send_ring_, stop)) return stopped_error(name_, "waiting for sends to complete");
      return ok();
    }
    return handle_send_cqe(cqe);
  }

  Result<void> handle_send_cqe(io_uring_cqe* cqe) {
    int res = cqe->res;
    unsigned flags = cqe->flags;
    io_uring_cqe_seen(&send_ring_, cqe);
    if (flags & IORING_CQE_F_NOTIF) {
      --notifs_pending_;
    } else {
      data_pending_ = false;
      if (res == -ECANCELED)
        return Error{ECANCELED, strf("channel %s: send canceled by the kernel: the thread that submitted it exited "
                                     "before the send completed (wait_sent before a sending thread exits)",
                                     name_.c_str())};
      if (res < 0) return Error::sys(-res, strf("channel %s: sendmsg", name_.c_str()));
      size_t left = size_t(res);
      batch_sent_ += left;
      while (left && batch_first_iov_ < batch_iov_.size()) {
        iovec& v = batch_iov_[batch_first_iov_];
        if (left >= v.iov_len) {
          left -= v.iov_len;
          ++batch_first_iov_;
        } else {
          v.iov_base = static_cast<char*>(v.iov_base) + left;
          v.iov_len -= left;
          left = 0;
        }
      }
      if (batch_sent_ < batch_bytes_) return submit_rest();  // short send: the rest, in order
    }
    if (data_pending_ || notifs_pending_ > 0 || batch_sent_ < batch_bytes_) return ok();
    for (size_t i = 0; i < batch_msgs_; ++i) {
      completed_seq_ = queue_.front().seq;
      queued_bytes_ -= queue_.front().bytes;
      queue_.pop_front();
    }
    inflight_ = false;
    batch_sent_ = 0;
    return submit_batch();
  }

  UniqueFd fd_;
  io_uring send_ring_{};
  io_uring recv_ring_{};
  bool send_ring_ok_ = false;
  bool recv_ring_ok_ = false;
  bool zero_copy_ = false;
  std::optional<UringSource> source_;
  WakePoll send_wake_poll_;  // on send_wake_, in the send ring
  std::unique_ptr<MultishotSource> multishot_;  // with "recv=multishot"

  std::deque<Queued> queue_;  // queued and in-flight messages, in order
  size_t queued_bytes_ = 0;
  bool inflight_ = false;
  bool data_pending_ = false;
  int notifs_pending_ = 0;
  std::vector<iovec> batch_iov_;
  size_t batch_first_iov_ = 0;
  size_t batch_msgs_ = 0;
  size_t batch_bytes_ = 0;
  size_t batch_sent_ = 0;
  msghdr batch_msg_{};
};

Probe probe_uring() {
  io_uring ring;
  int rc = io_uring_queue_init(4, &ring, 0);
  if (rc < 0)
    return {false, strf("io_uring_queue_init: %s (kernel.io_uring_disabled or seccomp?)", std::strerror(-rc))};
  io_uring_probe* p = io_uring_get_probe_ring(&ring);
  bool sendmsg = p && io_uring_opcode_supported(p, IORING_OP_SENDMSG) && io_uring_opcode_supported(p, IORING_OP_RECV);
  bool zc = p && io_uring_opcode_supported(p, IORING_OP_SENDMSG_ZC);
  if (p) io_uring_free_probe(p);
  io_uring_queue_exit(&ring);
  if (!sendmsg) return {false, "io_uring lacks IORING_OP_SENDMSG/RECV"};
  return {true, strf("io_uring sockets (sendmsg_zc %s)", zc ? "yes" : "no")};
}

Result<std::unique_ptr<Channel>> connect_uring(std::string_view address, const ChannelOptions& options,
                                               Timeout timeout) {
  UniqueFd fd = LM_TRY(connect_socket(address, options, timeout));
  return UringChannel::make(std::move(fd), options);
}

Result<std::unique_ptr<Listener>> listen_uring(std::string_view address, const ChannelOptions& options) {
  std::string bound;
  UniqueFd fd = LM_TRY(listen_socket(address, &bound));
  return std::unique_ptr<Listener>(new SocketListener("uring", std::move(fd), bound, options, UringChannel::make));
}

constexpr Backend kUring{"uring", "TCP sockets via io_uring (batched sendmsg, fixed recv buffer, optional send_zc)",
                         probe_uring, connect_uring, listen_uring};

}  // namespace

const Backend& uring_backend() { return kUring; }

}  // namespace lm::transport
