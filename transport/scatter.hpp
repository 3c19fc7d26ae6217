// Scatter receive: the next message of a channel as pieces in the channel's
// own buffers, for a reader that decodes in place and needs no contiguous copy.
//
// A capability beside the Channel interface, not in it: a backend that holds
// a received message in several buffers anyway (dpdk: the payloads of the
// frames that carried it, where the device put them) implements
// ScatterChannel; for every other channel (tcp, uring, TLS, inproc)
// recv_pieces() is recv() as one piece. The pieces' concatenation is the
// message; they are valid as recv()'s bytes (until the next recv(),
// recv_pieces() or close() on that channel) and have no alignment promise.
#pragma once

#include <cstddef>
#include <span>
#include <stop_token>
#include <vector>

#include "transport/channel.hpp"

namespace lm::transport {

class ScatterChannel {
 public:
  // `pieces` is cleared first; none is empty. Errors, timeouts, stop and
  // RecvStatus::closed as Channel::recv.
  virtual Result<RecvStatus> recv_pieces(std::vector<std::span<const std::byte>>& pieces, Timeout timeout,
                                         std::stop_token stop) = 0;

 protected:
  ~ScatterChannel() = default;
};

inline Result<RecvStatus> recv_pieces(Channel& channel, std::vector<std::span<const std::byte>>& pieces,
                                      Timeout timeout, std::stop_token stop = {}) {
  if (auto* scatter = dynamic_cast<ScatterChannel*>(&channel))
    return scatter->recv_pieces(pieces, timeout, std::move(stop));
  pieces.clear();
  Received r = LM_TRY(channel.recv(timeout, std::move(stop)));
  if (!r.bytes.empty()) pieces.push_back(r.bytes);
  return r.status;
}

}  // namespace lm::transport
