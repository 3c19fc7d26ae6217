#include "transport/dpdk/mem_link.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "common/clock.hpp"

namespace lm::dpdk {

struct MemLink::Block {
  int refs;
  alignas(64) uint8_t data[1];  // capacity_ bytes follow
};

class MemLink::Side final : public FramePort {
 public:
  Side(MemLink& link, LinkImpairment imp, std::string name) : link_(link), imp_(imp), name_(std::move(name)) {}
  Side* peer = nullptr;
  Wire inbound;  // frames travelling towards this side
  LinkStats stats;  // of frames sent by this side

  uint32_t frame_capacity() const override { return link_.capacity_; }
  size_t alloc(Frame* out, size_t n) override {
    std::lock_guard lk(link_.mu_);
    for (size_t i = 0; i < n; ++i) {
      Block* b = link_.new_block();
      out[i] = Frame{b, b->data, 0, 0};
    }
    return n;
  }
  size_t transmit(Frame* frames, size_t n) override {
    std::lock_guard lk(link_.mu_);
    uint64_t now = link_.now();
    std::uniform_real_distribution<double> u(0, 1);
    for (size_t i = 0; i < n; ++i) {
      Frame& f = frames[i];
      stats.sent++;
      if (link_.cut_ || u(link_.rng_) < imp_.loss || stats.sent == imp_.drop_nth) {
        stats.lost++;
      } else {
        int copies = u(link_.rng_) < imp_.duplicate ? 2 : 1;
        if (copies == 2) stats.duplicated++;
        for (int c = 0; c < copies; ++c) {
          if (peer->inbound.size() >= imp_.queue_frames) {
            stats.overflowed++;
            continue;
          }
          Block* b = link_.new_block();
          std::memcpy(b->data, f.data, f.len);
          uint64_t due = now + imp_.latency_ns;
          if (u(link_.rng_) < imp_.reorder) {
            due += imp_.reorder_extra_ns;
            stats.reordered++;
          }
          if (f.len && u(link_.rng_) < imp_.corrupt) {
            b->data[link_.rng_() % f.len] ^= 0x5a;
            stats.corrupted++;
          }
          peer->inbound.push(InFlight{due, link_.order_++, b, f.len, f.flow});
        }
      }
      link_.unref(static_cast<Block*>(f.handle));
    }
    return n;
  }
  size_t receive(Frame* out, size_t n) override {
    std::lock_guard lk(link_.mu_);
    uint64_t now = link_.now();
    size_t k = 0;
    while (k < n && !inbound.empty() && inbound.top().due_ns <= now) {
      InFlight f = inbound.top();
      inbound.pop();
      if (link_.cut_) {
        link_.unref(f.block);
        continue;
      }
      peer->stats.delivered++;
      out[k++] = Frame{f.block, f.block->data, f.len, f.flow};
    }
    return k;
  }
  // Copies (a heap block has one segment), but lets tests run SendMode::attach,
  // whose sends complete only when acknowledged.
  bool attach(Frame& f, const uint8_t* data, uint32_t len) override {
    std::memcpy(f.data + f.len, data, len);
    f.len += len;
    return true;
  }
  void retain(Frame& f) override {
    std::lock_guard lk(link_.mu_);
    static_cast<Block*>(f.handle)->refs++;
  }
  void release(Frame* frames, size_t n) override {
    std::lock_guard lk(link_.mu_);
    for (size_t i = 0; i < n; ++i) link_.unref(static_cast<Block*>(frames[i].handle));
  }
  std::string peer_name() const override { return name_; }

  void drain() {
    while (!inbound.empty()) {
      link_.unref(inbound.top().block);
      inbound.pop();
    }
  }

 private:
  MemLink& link_;
  LinkImpairment imp_;
  std::string name_;
};

MemLink::MemLink(uint32_t frame_capacity, LinkImpairment a_to_b, LinkImpairment b_to_a,
                 const uint64_t* clock, uint64_t seed)
    : capacity_(frame_capacity), clock_(clock), rng_(seed) {
  a_ = std::make_unique<Side>(*this, a_to_b, "mem-link side b");
  b_ = std::make_unique<Side>(*this, b_to_a, "mem-link side a");
  a_->peer = b_.get();
  b_->peer = a_.get();
}

MemLink::~MemLink() {
  a_->drain();
  b_->drain();
}

FramePort& MemLink::a() { return *a_; }
FramePort& MemLink::b() { return *b_; }

void MemLink::cut() {
  std::lock_guard lk(mu_);
  cut_ = true;
}

LinkStats MemLink::stats_a_to_b() const {
  std::lock_guard lk(mu_);
  return a_->stats;
}
LinkStats MemLink::stats_b_to_a() const {
  std::lock_guard lk(mu_);
  return b_->stats;
}
int64_t MemLink::live_frames() const {
  std::lock_guard lk(mu_);
  return live_ - int64_t(a_->inbound.size() + b_->inbound.size());
}

uint64_t MemLink::now() const { return clock_ ? *clock_ : now_ns(); }

MemLink::Block* MemLink::new_block() {
  void* p = std::aligned_alloc(64, (sizeof(Block) + capacity_ + 63) / 64 * 64);
  Block* b = static_cast<Block*>(p);
  b->refs = 1;
  live_++;
  return b;
}

void MemLink::unref(Block* b) {
  if (--b->refs == 0) {
    std::free(b);
    live_--;
  }
}

}  // namespace lm::dpdk
