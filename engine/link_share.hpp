// One link shared by the migrations of a group, enforced by the senders:
// every bulk batch of every VM asks for its bytes before it goes on the wire.
// Start-time fair queueing: each VM's virtual time is the bytes it was
// granted divided by its weight, and a VM may send only while it is no more
// than `quantum` ahead of the least-served VM that is still sending (in a
// round). An optional rate (a token bucket over the whole group) makes the
// link, not the CPU, the bottleneck, as a WAN link would be.
#pragma once

#include <chrono>
#include <condition_variable>
#include <stop_token>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "common/error.hpp"
#include "engine/cancel.hpp"

namespace lm::engine {

struct LinkShareConfig {
  double rate_bytes_per_s = 0;                  // 0: no limit of our own
  uint64_t quantum_bytes = 2ull << 20;          // how far a VM may run ahead (bytes / weight)
  std::chrono::milliseconds bucket{100};        // the series' resolution
};

class LinkShare {
 public:
  // What one VM's senders hold.
  class Member {
   public:
    // Marks the VM as sending (a round) until end_round: the others wait for it.
    void begin_round();
    void end_round();
    // Blocks until `wire_bytes` of this VM may go on the link; `pages` counts
    // them for the group's page rate. Ends early with the cancel's error.
    Result<void> acquire(uint64_t wire_bytes, uint64_t pages, const Cancel* cancel);
    // The same, ended by `stop` instead (post-copy pushers, which a cancel
    // does not stop once the destination runs the VM): false if it did.
    bool acquire(uint64_t wire_bytes, uint64_t pages, std::stop_token stop);
    size_t index() const { return index_; }

   private:
    friend class LinkShare;
    Member(LinkShare& link, size_t index) : link_(link), index_(index) {}
    LinkShare& link_;
    size_t index_;
  };

  // A VM's round (begin_round .. end_round) that ends with the scope at the
  // latest; a null member (no group) does nothing.
  class Round {
   public:
    explicit Round(Member* member, bool begun = true) : member_(member) {
      if (begun) begin();
    }
    ~Round() { end(); }
    void begin() {
      if (member_ && !in_) member_->begin_round();
      in_ = true;
    }
    void end() {
      if (member_ && in_) member_->end_round();
      in_ = false;
    }
    Round(const Round&) = delete;
    Round& operator=(const Round&) = delete;

   private:
    Member* member_;
    bool in_ = false;
  };

  explicit LinkShare(LinkShareConfig config);
  std::shared_ptr<Member> join(double weight);

  struct Figures {
    std::vector<std::vector<uint64_t>> series;  // [vm][bucket]: bytes granted per bucket
    std::vector<uint64_t> bytes;                // per VM, everything granted
    std::vector<uint64_t> contended_bytes;      // per VM, granted while every joined VM was in a round
    uint64_t pages = 0;
    double busy_s = 0;                          // time in which some VM was in a round
    double bucket_ms = 0;
  };
  Figures figures() const;

 private:
  struct State {
    double weight = 1;
    double virtual_bytes = 0;  // granted / weight
    unsigned rounds = 0;       // rounds of this VM under way (0 or 1)
    unsigned waiting = 0;      // its sender threads inside acquire
    uint64_t bytes = 0, contended = 0;
    std::vector<uint64_t> series;
  };
  bool may_send(size_t vm, uint64_t bytes, std::chrono::steady_clock::time_point now,
                std::chrono::steady_clock::duration& wait) const;
  void account_busy(std::chrono::steady_clock::time_point now);
  // The rate's bucket: what may be sent now (negative: a debt), at most 20 ms of the rate.
  double burst() const { return config_.rate_bytes_per_s * 0.02; }
  double tokens_at(std::chrono::steady_clock::time_point now) const;

  LinkShareConfig config_;
  mutable std::mutex lock_;
  std::condition_variable_any changed_;
  std::deque<State> vms_;  // references stay valid as VMs join
  std::chrono::steady_clock::time_point start_;
  double tokens_ = 0;  // bytes the rate allows now
  std::chrono::steady_clock::time_point refilled_;
  unsigned sending_ = 0;  // VMs in a round
  std::chrono::steady_clock::time_point busy_since_;
  double busy_s_ = 0;
  uint64_t pages_ = 0;
  uint64_t generation_ = 0;  // changes the waiters look at
};

}  // namespace lm::engine
