#include "dirtytrack/remote_syscall.hpp"

#include <dirent.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

namespace lm::dt {

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

Result<int> remote_userfaultfd(ProcessFreezer& target, int flags) {
  long r = LM_TRY(target.syscall(SYS_userfaultfd, {uint64_t(flags)}));
  if (r < 0) return Error::sys(int(-r), strf("pid %d: userfaultfd() inside the process", target.pid()));
  return int(r);
}

Result<void> remote_close(ProcessFreezer& target, int fd) {
  long r = LM_TRY(target.syscall(SYS_close, {uint64_t(fd)}));
  if (r < 0) return Error::sys(int(-r), strf("pid %d: close(%d) inside the process", target.pid(), fd));
  return ok();
}

Result<UniqueFd> fetch_fd(pid_t pid, int target_fd) {
  UniqueFd pidfd(int(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) return Error::from_errno(strf("pid %d: pidfd_open", pid));
  int fd = int(::syscall(SYS_pidfd_getfd, pidfd.get(), target_fd, 0));
  if (fd < 0) return Error::from_errno(strf("pid %d: pidfd_getfd of fd %d", pid, target_fd));
  return UniqueFd(fd);
}

Result<bool> has_userfaultfd(pid_t pid) {
  std::string dir = strf("/proc/%d/fd", pid);
  DIR* d = ::opendir(dir.c_str());
  if (!d) return Error::from_errno(strf("pid %d: open %s", pid, dir.c_str()));
  bool found = false;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[256];
    ssize_t n = ::readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (std::strstr(target, "userfaultfd")) found = true;
  }
  ::closedir(d);
  return found;
}

}  // namespace lm::dt
