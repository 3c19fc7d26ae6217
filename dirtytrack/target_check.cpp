#include "dirtytrack/target_check.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace lm::dt {

namespace {

constexpr unsigned long kPfKthread = 0x00200000;  // PF_KTHREAD in /proc/PID/stat's flags

struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
  unsigned long flags = 0;
  std::string comm;
};

Result<ProcStat> read_stat(pid_t pid) {
  std::ifstream in(strf("/proc/%d/stat", pid));
  std::string line;
  if (!in || !std::getline(in, line)) return Error::sys(ESRCH, strf("pid %d: no such process", pid));
  // "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
  auto open = line.find('('), close = line.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open)
    return Error::msg(strf("pid %d: unreadable /proc/%d/stat", pid, pid));
  ProcStat st;
  st.comm = line.substr(open + 1, close - open - 1);
  std::istringstream rest(line.substr(close + 1));
  std::string state;
  long fields[6] = {};  // ppid pgrp session tty_nr tpgid flags
  rest >> state;
  for (long& f : fields) rest >> f;
  if (!rest) return Error::msg(strf("pid %d: unreadable /proc/%d/stat", pid, pid));
  st.state = state.empty() ? '?' : state[0];
  st.ppid = pid_t(fields[0]);
  st.flags = (unsigned long)fields[5];
  return st;
}

Result<uid_t> real_uid(pid_t pid) {
  std::ifstream in(strf("/proc/%d/status", pid));
  for (std::string line; std::getline(in, line);)
    if (line.rfind("Uid:", 0) == 0) return uid_t(std::strtoul(line.c_str() + 4, nullptr, 10));
  return Error::sys(ESRCH, strf("pid %d: no Uid in /proc/%d/status", pid, pid));
}

// The thread group a task id belongs to (a thread's tid names its process too).
pid_t thread_group(pid_t tid) {
  std::ifstream in(strf("/proc/%d/status", tid));
  for (std::string line; std::getline(in, line);)
    if (line.rfind("Tgid:", 0) == 0) return pid_t(std::atol(line.c_str() + 5));
  return tid;
}

}  // namespace

Result<char> process_state(pid_t pid) { return LM_TRY(read_stat(pid)).state; }

Result<void> check_migration_target(pid_t pid, OtherUsers other_users) {
  if (pid <= 0) return Error::msg(strf("pid %d: not a process id", pid));
  const auto refuse = [pid](const char* why) {
    return Error::sys(EPERM, strf("pid %d: refused as a migration target: %s", pid, why));
  };
  if (pid == 1) return refuse("it is init (pid 1)");
  ProcStat st = LM_TRY(read_stat(pid));
  if (st.flags & kPfKthread) return refuse(strf("it is a kernel thread (%s)", st.comm.c_str()).c_str());
  const pid_t self = getpid();
  if (thread_group(pid) == self) return refuse("it is this livemig process");
  for (pid_t a = getppid(); a > 1;) {
    if (a == pid || thread_group(pid) == a)
      return refuse("it is an ancestor of this livemig process; freezing it would freeze us");
    auto up = read_stat(a);
    if (!up) break;
    a = up->ppid;
  }
  if (other_users == OtherUsers::refuse) {
    uid_t owner = LM_TRY(real_uid(pid));
    if (owner != getuid())
      return refuse(strf("it belongs to uid %u, not to this user (uid %u); --allow-other-user permits it",
                         unsigned(owner), unsigned(getuid()))
                        .c_str());
  }
  return ok();
}

}  // namespace lm::dt
