// The kernel's TCP_INFO for a socket, read with linux/tcp.h's struct: glibc's
// netinet/tcp.h (which the other socket files include, and which cannot be
// included beside it) stops before the delivery counters.
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>

#include "transport/stream.hpp"

namespace lm::transport {

std::optional<LinkCounters> tcp_link_counters(int fd) {
  tcp_info info{};
  socklen_t len = sizeof info;
  if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return std::nullopt;
  // A kernel older than the chrono counters (4.10) returns a shorter struct.
  if (len < offsetof(tcp_info, tcpi_rwnd_limited) + sizeof info.tcpi_rwnd_limited) return std::nullopt;
  LinkCounters c;
  c.acked_bytes = info.tcpi_bytes_acked;
  c.peer_limited_us = info.tcpi_rwnd_limited;
  return c;
}

}  // namespace lm::transport
