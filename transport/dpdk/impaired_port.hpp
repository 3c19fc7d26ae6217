// A FramePort decorator that injects loss, duplication and reordering on
// transmit, to measure the protocol's goodput under loss over a real device.
#pragma once

#include <memory>
#include <random>
#include <vector>

#include "transport/dpdk/frame_port.hpp"

namespace lm::dpdk {

struct Impairment {
  double loss = 0, duplicate = 0, reorder = 0;
  bool any() const { return loss > 0 || duplicate > 0 || reorder > 0; }
};

struct ImpairmentCounters {
  uint64_t dropped = 0, duplicated = 0, reordered = 0;
};

class ImpairedPort final : public FramePort {
 public:
  ImpairedPort(FramePort& inner, Impairment imp, uint64_t seed) : inner_(inner), imp_(imp), rng_(seed) {}
  ~ImpairedPort() override {
    if (!held_.empty()) inner_.release(held_.data(), held_.size());
    if (!backlog_.empty()) inner_.release(backlog_.data(), backlog_.size());
  }
  uint32_t frame_capacity() const override { return inner_.frame_capacity(); }
  size_t alloc(Frame* out, size_t n) override { return inner_.alloc(out, n); }
  size_t transmit(Frame* frames, size_t n) override;
  size_t receive(Frame* out, size_t n) override { return inner_.receive(out, n); }
  bool attach(Frame& f, const uint8_t* data, uint32_t len) override { return inner_.attach(f, data, len); }
  void retain(Frame& f) override { inner_.retain(f); }
  void release(Frame* frames, size_t n) override { inner_.release(frames, n); }
  std::string peer_name() const override { return inner_.peer_name(); }
  const ImpairmentCounters& counters() const { return counters_; }

 private:
  FramePort& inner_;
  Impairment imp_;
  std::mt19937_64 rng_;
  std::vector<Frame> held_;     // delayed by one transmit call (reordering)
  std::vector<Frame> backlog_;  // the device did not take them yet
  std::vector<Frame> out_;
  ImpairmentCounters counters_;
};

}  // namespace lm::dpdk
