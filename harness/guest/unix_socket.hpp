// Unix-domain socket helpers shared by the guest's control socket, its client
// and the resume handoff (library-internal).
#pragma once

#include <string>

#include "common/error.hpp"
#include "common/fd.hpp"

namespace lm::guest {

// Binds and listens at `path` (a stale socket file there is removed first).
Result<UniqueFd> unix_listen(const std::string& path, int type);
// Connects to `path`, retrying while the socket does not exist yet or refuses,
// for up to timeout_ms.
Result<UniqueFd> unix_connect(const std::string& path, int type, int timeout_ms);
// Waits until fd is readable; an error naming `what` on timeout (< 0: none).
Result<void> wait_readable(int fd, int timeout_ms, const std::string& what);
// Writes all of buf (MSG_NOSIGNAL).
Result<void> send_all(int fd, const void* buf, size_t len, const std::string& what);

}  // namespace lm::guest
