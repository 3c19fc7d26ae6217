#include "common/subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "common/clock.hpp"
#include "common/strf.hpp"

extern char** environ;

namespace lm {

namespace {

// waitid's idtype for a pidfd (Linux 5.4); not every libc header names it.
constexpr idtype_t kIdPidfd = idtype_t(3);

std::string signal_text(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : strf("signal %d", sig);
}

// Owns C string arrays for exec: the strings and the null-terminated
// pointer array into them.
struct CStrings {
  std::vector<std::string> strings;
  std::vector<char*> pointers;
  explicit CStrings(std::vector<std::string> s) : strings(std::move(s)) {
    for (auto& x : strings) pointers.push_back(x.data());
    pointers.push_back(nullptr);
  }
  // A move keeps the strings where they are (the vector's buffer moves).
  CStrings(CStrings&&) = default;
  CStrings(const CStrings&) = delete;
  char* const* get() const { return pointers.data(); }
};

std::vector<std::string> current_environment() {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
  return env;
}

std::string path_of(const std::vector<std::string>& env) {
  for (const auto& e : env)
    if (e.rfind("PATH=", 0) == 0) return e.substr(5);
  return "/usr/local/bin:/usr/bin:/bin";
}

// Everything the child needs, made before it exists. The child-side ends of
// pipes and /dev/null are closed here (in the parent) when this goes away.
struct PreparedChild {
  std::string path;  // resolved program
  CStrings argv;
  CStrings envp;
  std::vector<std::pair<int, int>> dups;  // {from, to}, applied in order
  std::vector<UniqueFd> child_ends;
  UniqueFd parent_ends[3];
  std::string working_dir;
  sigset_t child_mask;
};

Result<void> prepare_stdio(PreparedChild& c, int child_fd, Stdio how) {
  if (how == Stdio::inherit) return ok();
  if (how == Stdio::null) {
    UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null.valid()) return Error::from_errno("open /dev/null");
    c.dups.emplace_back(null.get(), child_fd);
    c.child_ends.push_back(std::move(null));
    return ok();
  }
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::from_errno(strf("pipe for fd %d", child_fd));
  UniqueFd read_end(p[0]), write_end(p[1]);
  bool child_reads = child_fd == STDIN_FILENO;
  c.dups.emplace_back(child_reads ? read_end.get() : write_end.get(), child_fd);
  c.child_ends.push_back(child_reads ? std::move(read_end) : std::move(write_end));
  c.parent_ends[child_fd] = child_reads ? std::move(write_end) : std::move(read_end);
  return ok();
}

Result<PreparedChild> prepare(const std::vector<std::string>& argv, const SpawnOptions& o) {
  if (argv.empty() || argv[0].empty()) return Error::sys(EINVAL, "spawn: empty argv");
  std::vector<std::string> env = o.environment ? *o.environment : current_environment();
  std::string path = argv[0];
  if (path.find('/') == std::string::npos) path = LM_TRY(find_program(argv[0], path_of(env)));
  PreparedChild c{std::move(path), CStrings(argv), CStrings(std::move(env)), {}, {}, {}, o.working_dir, {}};
  LM_TRY(prepare_stdio(c, STDIN_FILENO, o.stdin_to));
  LM_TRY(prepare_stdio(c, STDOUT_FILENO, o.stdout_to));
  LM_TRY(prepare_stdio(c, STDERR_FILENO, o.stderr_to));
  for (int fd : o.pass_fds) {
    if (::fcntl(fd, F_GETFD) < 0) return Error::from_errno(strf("pass fd %d", fd));
    c.dups.emplace_back(fd, fd);  // dup2 onto itself: only clears close-on-exec
  }
  sigemptyset(&c.child_mask);
  return c;
}

Result<pid_t> start_with_posix_spawn(const PreparedChild& c) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  for (auto [from, to] : c.dups) posix_spawn_file_actions_adddup2(&actions, from, to);
  if (!c.working_dir.empty()) posix_spawn_file_actions_addchdir_np(&actions, c.working_dir.c_str());
  sigset_t all;
  sigfillset(&all);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &c.child_mask);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  pid_t pid = -1;
  int err = posix_spawn(&pid, c.path.c_str(), &actions, &attr, c.argv.get(), c.envp.get());
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (err != 0) return Error::sys(err, "spawn " + c.argv.strings[0]);
  return pid;
}

// The forked child: async-signal-safe calls only, on data made beforehand.
// On failure it writes its errno to error_fd (close-on-exec) and exits 127.
[[noreturn]] void run_forked_child(const PreparedChild& c, pid_t parent, int error_fd) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);  // fails harmlessly for some
  int err = 0;
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) err = errno;
  if (!err && ::getppid() != parent) ::_exit(127);  // the parent thread already exited
  for (auto [from, to] : c.dups) {
    if (err) break;
    if (from == to ? ::fcntl(from, F_SETFD, 0) != 0 : ::dup2(from, to) < 0) err = errno;
  }
  if (!err && !c.working_dir.empty() && ::chdir(c.working_dir.c_str()) != 0) err = errno;
  if (!err) {
    sigprocmask(SIG_SETMASK, &c.child_mask, nullptr);
    ::execve(c.path.c_str(), c.argv.get(), c.envp.get());
    err = errno;
  }
  (void)!::write(error_fd, &err, sizeof err);
  ::_exit(127);
}

Result<pid_t> start_with_fork(const PreparedChild& c) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::from_errno("spawn " + c.argv.strings[0] + ": pipe");
  UniqueFd report_read(p[0]), report_write(p[1]);
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return Error::from_errno("spawn " + c.argv.strings[0] + ": fork");
  if (pid == 0) run_forked_child(c, parent, report_write.get());
  report_write.reset();
  int child_err = 0;
  ssize_t n;
  do n = ::read(report_read.get(), &child_err, sizeof child_err);
  while (n < 0 && errno == EINTR);
  if (n == 0) return pid;  // closed by a successful execve
  siginfo_t info;
  while (::waitid(P_PID, id_t(pid), &info, WEXITED) < 0 && errno == EINTR) {
  }
  return Error::sys(n == ssize_t(sizeof child_err) ? child_err : EIO, "spawn " + c.argv.strings[0]);
}

ExitStatus status_of(const siginfo_t& info) {
  if (info.si_code == CLD_EXITED) return ExitStatus{info.si_status, 0};
  return ExitStatus{0, info.si_status};
}

}  // namespace

std::string ExitStatus::text() const {
  return signal ? "killed by " + signal_text(signal) : strf("exited with status %d", code);
}

Result<std::string> find_program(const std::string& name, const std::string& path_list) {
  std::string list = path_list;
  if (list.empty()) {
    const char* env = std::getenv("PATH");
    list = env && *env ? env : "/usr/local/bin:/usr/bin:/bin";
  }
  size_t start = 0;
  while (start <= list.size()) {
    size_t colon = list.find(':', start);
    if (colon == std::string::npos) colon = list.size();
    std::string dir = colon > start ? list.substr(start, colon - start) : ".";
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = colon + 1;
  }
  return Error::sys(ENOENT, strf("spawn %s: not found in PATH (%s)", name.c_str(), list.c_str()));
}

Result<Subprocess> Subprocess::spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  PreparedChild c = LM_TRY(prepare(argv, options));
  Subprocess s;
  s.program_ = argv[0];
  s.pid_ = LM_TRY(options.on_parent_exit == ParentExit::die ? start_with_fork(c) : start_with_posix_spawn(c));
  // Race-free: the child is ours and not reaped, so its PID cannot be reused.
  s.pidfd_.reset(int(::syscall(SYS_pidfd_open, s.pid_, 0)));
  if (!s.pidfd_.valid()) {
    Error e = Error::from_errno(s.name() + ": pidfd_open");
    ::kill(s.pid_, SIGKILL);
    while (::waitpid(s.pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    s.pid_ = -1;
    return e;
  }
  for (int fd = 0; fd < 3; ++fd) s.pipes_[fd] = std::move(c.parent_ends[fd]);
  return s;
}

Subprocess::Subprocess(Subprocess&& o) noexcept
    : program_(std::move(o.program_)),
      pid_(std::exchange(o.pid_, -1)),
      reaped_(std::exchange(o.reaped_, false)),
      pidfd_(std::move(o.pidfd_)) {
  for (int fd = 0; fd < 3; ++fd) pipes_[fd] = std::move(o.pipes_[fd]);
}

Subprocess& Subprocess::operator=(Subprocess&& o) noexcept {
  if (this != &o) {
    if (running()) (void)kill_and_wait();
    program_ = std::move(o.program_);
    pid_ = std::exchange(o.pid_, -1);
    reaped_ = std::exchange(o.reaped_, false);
    pidfd_ = std::move(o.pidfd_);
    for (int fd = 0; fd < 3; ++fd) pipes_[fd] = std::move(o.pipes_[fd]);
  }
  return *this;
}

Subprocess::~Subprocess() {
  if (running()) (void)kill_and_wait();
}

std::string Subprocess::name() const { return strf("%s pid %d", program_.c_str(), int(pid_)); }

UniqueFd Subprocess::take_pipe(int child_fd) {
  if (child_fd < 0 || child_fd > 2) return UniqueFd();
  return std::move(pipes_[child_fd]);
}

Result<ExitStatus> Subprocess::wait(int timeout_ms) {
  if (!holds_process()) return Error::sys(ECHILD, "wait: no process");
  if (reaped_) return Error::sys(ECHILD, name() + ": already reaped");
  const uint64_t deadline = now_ns() + uint64_t(timeout_ms > 0 ? timeout_ms : 0) * 1000000;
  for (;;) {
    int left = timeout_ms < 0 ? -1 : int((int64_t(deadline) - int64_t(now_ns())) / 1000000);
    if (timeout_ms >= 0 && left < 0) left = 0;
    pollfd p{pidfd_.get(), POLLIN, 0};
    int n = ::poll(&p, 1, left);
    if (n > 0) break;
    if (n == 0) return Error::sys(ETIMEDOUT, strf("%s: did not exit within %d ms", name().c_str(), timeout_ms));
    if (errno != EINTR) return Error::from_errno(name() + ": poll pidfd");
  }
  siginfo_t info{};
  while (::waitid(kIdPidfd, id_t(pidfd_.get()), &info, WEXITED) != 0)
    if (errno != EINTR) return Error::from_errno(name() + ": waitid");
  reaped_ = true;
  return status_of(info);
}

Result<ExitStatus> Subprocess::wait_or_kill(int timeout_ms) {
  auto status = wait(timeout_ms);
  if (status || status.error().code != ETIMEDOUT) return status;
  (void)kill_and_wait();
  return std::move(status).error();
}

Result<void> Subprocess::send_signal(int sig) {
  if (!running()) return Error::sys(ESRCH, strf("%s: %s: not running", name().c_str(), signal_text(sig).c_str()));
  if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) != 0)
    return Error::from_errno(strf("%s: pidfd_send_signal %s", name().c_str(), signal_text(sig).c_str()));
  return ok();
}

Result<ExitStatus> Subprocess::kill_and_wait() {
  LM_TRY(send_signal(SIGKILL));
  return wait(-1);
}

pid_t Subprocess::release() {
  pid_t pid = std::exchange(pid_, -1);
  reaped_ = false;
  pidfd_.reset();
  return pid;
}

}  // namespace lm
