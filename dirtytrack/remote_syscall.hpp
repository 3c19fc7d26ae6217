// System calls run inside a target process (through a ProcessFreezer), and
// taking a copy of one of the target's file descriptors.
#pragma once

#include <sys/types.h>

#include "common/error.hpp"
#include "common/fd.hpp"
#include "dirtytrack/process_freezer.hpp"

namespace lm::dt {

// userfaultfd(flags) inside the target; returns the target's fd number.
Result<int> remote_userfaultfd(ProcessFreezer& target, int flags);
// close(fd) inside the target.
Result<void> remote_close(ProcessFreezer& target, int fd);
// A duplicate of the target's fd in this process (pidfd_open + pidfd_getfd;
// needs ptrace permission on the target, not a stopped target).
Result<UniqueFd> fetch_fd(pid_t pid, int target_fd);

// Whether /proc/PID/fd of pid holds a userfaultfd (anon_inode:[userfaultfd]).
Result<bool> has_userfaultfd(pid_t pid);

}  // namespace lm::dt
