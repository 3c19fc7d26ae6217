#include <netinet/in.h>

#include <array>

#include "transport/backends.hpp"
#include "transport/stream.hpp"
#include "transport/tls_channel.hpp"

namespace lm::transport {

namespace {
const Backend* const kBackends[] = {
#if LM_HAVE_URING
    &uring_backend(),
#endif
    &tcp_backend(),
#if defined(LM_TRANSPORT_DPDK) && LM_TRANSPORT_DPDK
    &dpdk_backend(),
#endif
};

// TLS records ride on the stream backends' messages; a DPDK link is raw
// frames between two ports, outside what TLS here protects.
Result<void> check_tls(const Backend& b) {
  if (b.name == "tcp" || b.name == "uring") return ok();
  return Error::msg(strf("transport backend %.*s does not encrypt: TLS (--tls) works with tcp and uring only",
                         int(b.name.size()), b.name.data()));
}

// The channel under TLS carries records: room for their overhead.
ChannelOptions tls_inner_options(const ChannelOptions& options) {
  ChannelOptions inner = options;
  inner.max_message = tls_inner_max_message(options.max_message);
  inner.tls = nullptr;
  return inner;
}

struct Split {
  const Backend* backend;
  std::string_view rest;
};

Result<Split> split_address(std::string_view address, const ChannelOptions& options) {
  size_t colon = address.find(':');
  if (colon == std::string_view::npos)
    return Error::msg(strf("transport address '%.*s': expected <backend>:<address>, e.g. tcp:127.0.0.1:7000",
                           int(address.size()), address.data()));
  const Backend* b = LM_TRY_CTX(find_backend(address.substr(0, colon)),
                                strf("transport address '%.*s'", int(address.size()), address.data()));
  if (options.tls) LM_TRY(check_tls(*b));
  Probe p = b->probe();
  if (!p.available)
    return Error::msg(strf("transport backend %.*s unavailable: %s", int(b->name.size()), b->name.data(),
                           p.reason.c_str()));
  return Split{b, address.substr(colon + 1)};
}

}  // namespace

std::span<const Backend* const> backends() { return kBackends; }

Result<const Backend*> find_backend(std::string_view name) {
  std::string known;
  for (const Backend* b : kBackends) {
    if (b->name == name) return b;
    known += (known.empty() ? "" : ", ") + std::string(b->name);
  }
  return Error::msg(strf("unknown transport backend '%.*s' (built: %s)", int(name.size()), name.data(),
                         known.c_str()));
}

Result<std::unique_ptr<Channel>> connect(std::string_view address, const ChannelOptions& options,
                                         Timeout timeout) {
  Split s = LM_TRY(split_address(address, options));
  if (!options.tls) return s.backend->connect(s.rest, options, timeout);
  auto inner = LM_TRY(s.backend->connect(s.rest, tls_inner_options(options), timeout));
  return tls_channel(std::move(inner), options.tls, TlsRole::client, options);
}

Result<std::unique_ptr<Listener>> listen(std::string_view address, const ChannelOptions& options) {
  Split s = LM_TRY(split_address(address, options));
  if (!options.tls) return s.backend->listen(s.rest, options);
  auto inner = LM_TRY(s.backend->listen(s.rest, tls_inner_options(options)));
  return tls_listener(std::move(inner), options.tls, options);
}

bool same_host_address(std::string_view address) {
  size_t colon = address.find(':');
  if (colon == std::string_view::npos) return false;
  std::string_view backend = address.substr(0, colon), rest = address.substr(colon + 1);
  if (backend == "dpdk") return rest.rfind("memif:", 0) == 0;
  auto resolved = resolve_host_port(rest);
  if (!resolved) return false;
  const sockaddr_storage& ss = resolved->storage;
  if (ss.ss_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr.s_addr) >> 24) == 127;
  if (ss.ss_family == AF_INET6) return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr);
  return false;
}

}  // namespace lm::transport
