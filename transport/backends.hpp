// The registry's entries, one backend per file. A backend that is not built
// (meson feature disabled) is simply absent from backends().
#pragma once

#include "livemig_config.h"
#include "transport/channel.hpp"

namespace lm::transport {

const Backend& tcp_backend();  // backend_tcp.cpp
#if LM_HAVE_URING
const Backend& uring_backend();  // backend_uring.cpp
#endif
#if defined(LM_TRANSPORT_DPDK) && LM_TRANSPORT_DPDK
const Backend& dpdk_backend();  // transport/dpdk/ (set by transport/dpdk/meson.build)
#endif

}  // namespace lm::transport
