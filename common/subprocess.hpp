// Child processes: the one way this project starts a program.
//
// Everything the child needs (argv/envp arrays, the resolved program path,
// stdio redirections and pipes, working directory, signal mask) is prepared
// in the parent before the child exists, so the child runs only
// async-signal-safe calls: a multi-threaded parent cannot deadlock it on a
// lock (malloc's, stdio's) that another thread held at fork time.
//
// - Normally the child is started with posix_spawn (glibc: clone with
//   CLONE_VFORK; exec failures come back as its return value).
// - With ParentExit::die it must set PR_SET_PDEATHSIG(SIGKILL), which
//   posix_spawn cannot: then fork(), and the child does only prctl, the
//   getppid() race check, sigaction/sigprocmask, dup2, chdir, execve and
//   _exit; an exec failure is reported through a close-on-exec pipe.
//   Linux sends PDEATHSIG when the *thread* that spawned the child exits.
//
// The child starts with an empty signal mask and default dispositions for
// every signal (the commands block SIGINT/SIGTERM/SIGHUP in their threads;
// a child must still die of them), and inherits no fd but 0-2 and
// SpawnOptions::pass_fds (the project opens every fd O_CLOEXEC).
//
// Each child is held by a pidfd: waits poll it (with a timeout), signals go
// through pidfd_send_signal and reaping through waitid(P_PIDFD), so a
// recycled PID is never signalled. The destructor SIGKILLs and reaps a child
// still running: no child outlives its Subprocess unless release()d.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "common/fd.hpp"

namespace lm {

// What a child does when the thread that started it exits.
enum class ParentExit { keep_running, die };

// Where a standard stream of the child goes. `pipe`: the parent keeps the
// other end (Subprocess::take_pipe).
enum class Stdio { inherit, null, pipe };

struct SpawnOptions {
  Stdio stdin_to = Stdio::inherit;
  Stdio stdout_to = Stdio::inherit;
  Stdio stderr_to = Stdio::inherit;
  std::vector<int> pass_fds;  // open in the child under the same number
  std::string working_dir;    // empty: the caller's
  std::optional<std::vector<std::string>> environment;  // "NAME=value"; none: the caller's
  ParentExit on_parent_exit = ParentExit::keep_running;
};

// How a reaped child ended.
struct ExitStatus {
  int code = 0;    // exit status (when signal == 0)
  int signal = 0;  // the signal that killed it, or 0
  bool success() const { return signal == 0 && code == 0; }
  // The shell's convention: the status, or 128 + signal.
  int shell_code() const { return signal ? 128 + signal : code; }
  // "exited with status 1", "killed by SIGKILL".
  std::string text() const;
};

// The program a bare name (no '/') stands for, searched in `path_list`
// (a PATH value; empty: the caller's PATH). ENOENT when it is nowhere.
Result<std::string> find_program(const std::string& name, const std::string& path_list = "");

class Subprocess {
 public:
  // Starts argv[0] (searched in PATH when it has no '/') with argv.
  // Errors: "spawn <argv[0]>: <errno text>".
  static Result<Subprocess> spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

  Subprocess() = default;  // holds no process
  Subprocess(Subprocess&& o) noexcept;
  Subprocess& operator=(Subprocess&& o) noexcept;  // ends the child it held
  ~Subprocess();                                     // SIGKILLs and reaps a running child

  bool holds_process() const { return pid_ > 0; }
  bool running() const { return pid_ > 0 && !reaped_; }  // started and not yet reaped
  pid_t pid() const { return pid_; }                     // kept after the reap, for messages
  int pidfd() const { return pidfd_.get(); }             // readable once the child exited
  const std::string& program() const { return program_; }
  // "<program> pid N", the subject of every message about this child.
  std::string name() const;

  // The parent's end of a Stdio::pipe stream (0: write end; 1, 2: read end).
  UniqueFd take_pipe(int child_fd);

  // Waits at most timeout_ms (< 0: no limit) for the child to exit, and
  // reaps it. A timeout is an error with code ETIMEDOUT; the child runs on.
  Result<ExitStatus> wait(int timeout_ms);
  // As wait(); on a timeout SIGKILLs and reaps the child, then returns the
  // timeout error.
  Result<ExitStatus> wait_or_kill(int timeout_ms);
  // Sends `sig` by pidfd. A child that exited but is not reaped yet takes it
  // as a no-op.
  Result<void> send_signal(int sig);
  // SIGKILL and reap; returns how it ended (a child that had already exited
  // on its own reports its own status).
  Result<ExitStatus> kill_and_wait();

  // Gives up ownership: the child runs on, and reaping it is the caller's.
  pid_t release();

 private:
  std::string program_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  UniqueFd pidfd_;
  UniqueFd pipes_[3];
};

}  // namespace lm
