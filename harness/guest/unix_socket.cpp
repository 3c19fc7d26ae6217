#include "harness/guest/unix_socket.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

#include "common/clock.hpp"

namespace lm::guest {

namespace {

Result<sockaddr_un> unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    return Error::msg(strf("unix socket path '%s' is empty or longer than %zu bytes", path.c_str(),
                           sizeof a.sun_path - 1));
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

}  // namespace

Result<UniqueFd> unix_listen(const std::string& path, int type) {
  sockaddr_un a = LM_TRY(unix_address(path));
  UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return Error::from_errno(strf("socket for %s", path.c_str()));
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return Error::from_errno(strf("bind unix socket %s", path.c_str()));
  if (::listen(fd.get(), 8) != 0) return Error::from_errno(strf("listen on %s", path.c_str()));
  return fd;
}

Result<UniqueFd> unix_connect(const std::string& path, int type, int timeout_ms) {
  sockaddr_un a = LM_TRY(unix_address(path));
  uint64_t deadline = now_ns() + uint64_t(timeout_ms) * 1000000;
  for (;;) {
    UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return Error::from_errno(strf("socket for %s", path.c_str()));
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
    int err = errno;
    if ((err != ENOENT && err != ECONNREFUSED) || now_ns() >= deadline)
      return Error::sys(err, strf("connect to unix socket %s", path.c_str()));
    ::usleep(5000);
  }
}

Result<void> wait_readable(int fd, int timeout_ms, const std::string& what) {
  if (timeout_ms < 0) {
    pollfd p{fd, POLLIN, 0};
    int n;
    do n = ::poll(&p, 1, -1);
    while (n < 0 && errno == EINTR);
    if (n < 0) return Error::from_errno(strf("poll %s", what.c_str()));
    return ok();
  }
  uint64_t deadline = now_ns() + uint64_t(timeout_ms) * 1000000;
  for (;;) {
    int64_t left_ms = (int64_t(deadline) - int64_t(now_ns())) / 1000000;
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, int(left_ms < 0 ? 0 : left_ms));
    if (n > 0) return ok();
    if (n < 0 && errno != EINTR) return Error::from_errno(strf("poll %s", what.c_str()));
    if (n == 0) return Error::sys(ETIMEDOUT, strf("%s: no answer within %d ms", what.c_str(), timeout_ms));
  }
}

Result<void> send_all(int fd, const void* buf, size_t len, const std::string& what) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::from_errno(strf("send to %s", what.c_str()));
    p += n;
    len -= size_t(n);
  }
  return ok();
}

}  // namespace lm::guest
