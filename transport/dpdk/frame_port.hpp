// The seam between the reliable protocol and whatever carries frames: a DPDK
// ethdev (memif, af_packet, PCI NIC) or an in-memory link in tests. Called per
// burst, from the one thread that polls the endpoint.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace lm::dpdk {

// One frame buffer. `data` points at the protocol header; the port owns the
// bytes before it (L2-L4 headers). Buffers are reference counted so a frame
// kept for retransmission can be sent again without copying.
struct Frame {
  void* handle = nullptr;  // port-specific (an rte_mbuf*, a heap block)
  uint8_t* data = nullptr;
  uint32_t len = 0;        // protocol header + payload
  uint16_t flow = 0;       // which flow (UDP port pair / queue) carries it
};

class FramePort {
 public:
  virtual ~FramePort() = default;
  // Bytes available at Frame::data (protocol header + payload).
  virtual uint32_t frame_capacity() const = 0;
  // Fresh frames with one reference each; returns how many (0 when exhausted).
  virtual size_t alloc(Frame* out, size_t n) = 0;
  // Transmits frames[0..k) and consumes one reference of each; returns k.
  // Frames not sent stay owned by the caller.
  virtual size_t transmit(Frame* frames, size_t n) = 0;
  // Received frames, one reference each, owned by the caller.
  virtual size_t receive(Frame* out, size_t n) = 0;
  // Zero-copy transmit: appends `len` bytes of caller memory at f.data + f.len
  // as a further segment (DPDK: an mbuf with an external buffer) and adds len
  // to f.len. The memory must stay valid and unchanged while any reference to
  // the frame lives. False: unsupported or out of resources (copy instead).
  virtual bool attach(Frame& f, const uint8_t* data, uint32_t len) {
    (void)f, (void)data, (void)len;
    return false;
  }
  // +1 reference (on every segment of the frame).
  virtual void retain(Frame& f) = 0;
  virtual void release(Frame* frames, size_t n) = 0;
  // Who is on the other side, for error messages.
  virtual std::string peer_name() const = 0;
};

}  // namespace lm::dpdk
