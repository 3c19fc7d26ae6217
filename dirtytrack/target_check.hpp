// Which processes the engine may migrate. Checked before anything is attached
// or frozen: freezing and, after success, killing pid 1, the engine itself,
// one of its ancestors or a kernel thread would take the host (or the
// migration) down with it.
#pragma once

#include <sys/types.h>

#include "common/error.hpp"

namespace lm::dt {

enum class OtherUsers { refuse, allow };

// ok, or an error naming the pid and why it may not be migrated: not a
// process, pid 1, this process or one of its threads, an ancestor of this
// process, a kernel thread, or (unless allowed) a process of another user.
Result<void> check_migration_target(pid_t pid, OtherUsers other_users = OtherUsers::refuse);

// The process's state letter from /proc/PID/stat ('R', 'S', 'T' stopped by a
// signal, ...), or an error naming the pid when it is gone.
Result<char> process_state(pid_t pid);

}  // namespace lm::dt
