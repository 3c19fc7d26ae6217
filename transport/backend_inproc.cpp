// In-process channel pair for unit tests: two bounded message queues. Same
// contract as the socket backends: messages are copied at send (complete at
// once), a full queue blocks the sender (back-pressure), close is a handshake,
// and destroying one end makes the other end's calls fail.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <vector>

#include "transport/stream.hpp"

namespace lm::transport {
namespace {

struct Pipe {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::vector<std::byte>> queue;
  size_t queued_bytes = 0;
  bool close_mark = false;   // after the queued messages
  bool writer_gone = false;
  bool reader_gone = false;
};

struct Shared {
  Pipe pipes[2];
};

class InprocChannel final : public Channel {
 public:
  InprocChannel(std::shared_ptr<Shared> shared, int side, std::string name, const ChannelOptions& options)
      : shared_(std::move(shared)), out_(shared_->pipes[side]), in_(shared_->pipes[1 - side]),
        name_(std::move(name)), options_(options) {}

  ~InprocChannel() override {
    {
      std::lock_guard lock(out_.mu);
      out_.writer_gone = true;
    }
    out_.cv.notify_all();
    {
      std::lock_guard lock(in_.mu);
      in_.reader_gone = true;
    }
    in_.cv.notify_all();
  }

  Result<uint64_t> send(std::span<const ConstBuffer> pieces, Timeout timeout) override {
    if (closed_) return Error{EPIPE, strf("channel %s: already closed", name_.c_str())};
    size_t total = LM_TRY(message_size(pieces, options_.max_message, name_));
    std::vector<std::byte> copy(total);
    size_t at = 0;
    for (const auto& p : pieces) {
      if (p.size) std::memcpy(copy.data() + at, p.data, p.size);
      at += p.size;
    }
    Deadline deadline = Deadline::after(timeout);
    std::unique_lock lock(out_.mu);
    // A single message larger than the window is still let through alone.
    auto can_send = [&] {
      return out_.reader_gone || out_.queued_bytes == 0 || out_.queued_bytes + total <= options_.send_window;
    };
    if (!wait(lock, out_.cv, deadline, can_send)) return timeout_error(name_, "sending (receiver not draining)");
    if (out_.reader_gone) return vanished();
    out_.queued_bytes += total;
    out_.queue.push_back(std::move(copy));
    lock.unlock();
    out_.cv.notify_all();
    return ++seq_;
  }

  uint64_t send_completed() override { return seq_; }
  using Channel::wait_sent;
  Result<void> wait_sent(uint64_t seq, Timeout, std::stop_token) override {  // sends complete at once
    if (seq > seq_) return Error{EINVAL, strf("channel %s: wait_sent beyond the last send", name_.c_str())};
    return ok();
  }

  using Channel::recv;
  Result<Received> recv(Timeout timeout, std::stop_token stop) override {
    if (closed_ || saw_close_) return Received{RecvStatus::closed, {}};
    if (stop.stop_requested()) return stopped_error(name_, "waiting for a message");
    Deadline deadline = Deadline::after(timeout);
    // Under the lock, so the notification cannot fall between a check and the wait.
    std::stop_callback wake(stop, [this] {
      std::lock_guard g(in_.mu);
      in_.cv.notify_all();
    });
    std::unique_lock lock(in_.mu);
    auto ready = [&] { return !in_.queue.empty() || in_.close_mark || in_.writer_gone || stop.stop_requested(); };
    if (!wait(lock, in_.cv, deadline, ready)) return timeout_error(name_, "waiting for a message");
    if (in_.queue.empty() && stop.stop_requested()) return stopped_error(name_, "waiting for a message");
    if (!in_.queue.empty()) {
      current_ = std::move(in_.queue.front());
      in_.queue.pop_front();
      in_.queued_bytes -= current_.size();
      lock.unlock();
      in_.cv.notify_all();
      return Received{RecvStatus::message, {current_.data(), current_.size()}};
    }
    if (in_.close_mark) {
      saw_close_ = true;
      return Received{RecvStatus::closed, {}};
    }
    return vanished();
  }

  Result<void> close(Timeout timeout) override {
    if (closed_) return ok();
    closed_ = true;
    {
      std::lock_guard lock(out_.mu);
      out_.close_mark = true;
    }
    out_.cv.notify_all();
    Deadline deadline = Deadline::after(timeout);
    std::unique_lock lock(in_.mu);
    for (;;) {
      while (!in_.queue.empty()) {  // data still arriving is dropped
        in_.queued_bytes -= in_.queue.front().size();
        in_.queue.pop_front();
      }
      in_.cv.notify_all();
      if (in_.close_mark || saw_close_) return ok();
      if (in_.writer_gone) return vanished().context("close handshake");
      if (!wait(lock, in_.cv, deadline, [&] { return !in_.queue.empty() || in_.close_mark || in_.writer_gone; }))
        return timeout_error(name_, "waiting for the peer's close");
    }
  }

  const std::string& name() const override { return name_; }
  void set_name(std::string name) override { name_ = std::move(name); }

 private:
  template <class Pred>
  static bool wait(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, Deadline deadline, Pred pred) {
    if (deadline.at_ns == UINT64_MAX) {
      cv.wait(lock, pred);
      return true;
    }
    return cv.wait_for(lock, std::chrono::nanoseconds(deadline.left_ns()), pred);
  }
  Error vanished() const {
    return Error{ECONNRESET, strf("channel %s: peer vanished (destroyed without close handshake)", name_.c_str())};
  }

  std::shared_ptr<Shared> shared_;
  Pipe& out_;
  Pipe& in_;
  std::string name_;
  ChannelOptions options_;
  std::vector<std::byte> current_;
  uint64_t seq_ = 0;
  bool closed_ = false;
  bool saw_close_ = false;
};

// The accept queue an in-process link's dialers feed.
struct AcceptQueue {
  std::mutex mu;
  std::condition_variable_any cv;  // waits also end on a stop token
  std::deque<std::unique_ptr<Channel>> pending;
  bool listener_gone = false;
};

class InprocListener final : public Listener {
 public:
  InprocListener(std::shared_ptr<AcceptQueue> queue, std::string name)
      : queue_(std::move(queue)), name_(std::move(name)) {}
  ~InprocListener() override {
    std::lock_guard lock(queue_->mu);
    queue_->listener_gone = true;
    queue_->pending.clear();
  }

  using Listener::accept;
  Result<std::unique_ptr<Channel>> accept(Timeout timeout, std::stop_token stop) override {
    std::unique_lock lock(queue_->mu);
    auto ready = [&] { return !queue_->pending.empty(); };
    const Deadline deadline = Deadline::after(timeout);
    if (deadline.at_ns == UINT64_MAX) {
      queue_->cv.wait(lock, stop, ready);
    } else {
      queue_->cv.wait_for(lock, stop, std::chrono::nanoseconds(deadline.left_ns()), ready);
    }
    if (!ready()) {
      if (stop.stop_requested()) return Error{ECANCELED, strf("listener %s: accept stopped", name_.c_str())};
      return timeout_error(name_, "waiting for a connection");
    }
    auto channel = std::move(queue_->pending.front());
    queue_->pending.pop_front();
    return channel;
  }

  std::string address() const override { return "inproc:" + name_; }

 private:
  std::shared_ptr<AcceptQueue> queue_;
  std::string name_;
};

}  // namespace

InprocLink make_inproc_link(const ChannelOptions& options, std::string_view name) {
  auto queue = std::make_shared<AcceptQueue>();
  std::string link_name(name);
  auto dial = [queue, options, link_name, dials = std::make_shared<std::atomic<uint64_t>>(0)](
                  Timeout) -> Result<std::unique_ptr<Channel>> {
    auto pair = make_inproc_pair(options, strf("%s#%llu", link_name.c_str(), (unsigned long long)++*dials));
    {
      std::lock_guard lock(queue->mu);
      if (queue->listener_gone)
        return Error{ECONNREFUSED, strf("in-process link %s: its listener is gone", link_name.c_str())};
      queue->pending.push_back(std::move(pair.b));
    }
    queue->cv.notify_all();
    return std::move(pair.a);
  };
  return {std::make_unique<InprocListener>(queue, link_name), std::move(dial)};
}

ChannelPair make_inproc_pair(const ChannelOptions& options, std::string_view name) {
  auto shared = std::make_shared<Shared>();
  std::string n(name);
  return {std::make_unique<InprocChannel>(shared, 0, n + " a->b", options),
          std::make_unique<InprocChannel>(shared, 1, n + " b->a", options)};
}

}  // namespace lm::transport
