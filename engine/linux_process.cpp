// SourceProcess for a live Linux process by PID: the seams of dirtytrack/
// (target_check, ProcessFreezer, PageReader, populated_pages) and the
// auto-converge Throttler, behind the engine's one interface.
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.hpp"
#include "common/fd.hpp"
#include "dirtytrack/address_space.hpp"
#include "dirtytrack/tracker.hpp"
#include "engine/source_process.hpp"
#include "engine/throttle.hpp"

namespace lm::engine {

namespace {

class LinuxProcess final : public SourceProcess {
 public:
  explicit LinuxProcess(pid_t pid) : pid_(pid) {}

  pid_t pid() const override { return pid_; }
  Result<void> check_target(dt::OtherUsers other_users) const override {
    return dt::check_migration_target(pid_, other_users);
  }

  Result<dt::ReadReport> read(std::span<const PageRange> ranges, std::span<std::byte> out) const override {
    return dt::PageReader(pid_).read(ranges, out);
  }
  Result<dt::MappingList> mappings(const dt::Scope& scope) const override {
    return dt::scoped_mappings(pid_, scope);
  }
  Result<dt::RangeList> populated(const dt::MappingList& mappings) const override {
    return dt::populated_pages(pid_, mappings);
  }

  Result<unsigned> throttle(unsigned percent) override {
    if (!throttler_) throttler_ = LM_TRY(Throttler::create(pid_));
    LM_TRY(throttler_->set_percent(percent));
    return throttler_->percent();
  }
  Result<void> unthrottle() override { return throttler_ ? throttler_->release() : ok(); }
  std::string throttle_mechanism() const override {
    return throttler_ ? std::string(throttle_mechanism_name(throttler_->mechanism())) : "";
  }

  Result<void> freeze() override {
    freezer_ = LM_TRY(dt::ProcessFreezer::seize(pid_).context(strf("freeze pid %d", pid_)));
    return ok();
  }
  bool frozen() const override { return freezer_ && freezer_->frozen(); }
  Result<void> stop_on_release() override {
    if (!freezer_) return Error::msg(strf("pid %d: stop on release: not frozen", pid_));
    return freezer_->stop_on_release();
  }
  Result<void> cancel_stop_on_release() override { return freezer_ ? freezer_->cancel_stop_on_release() : ok(); }
  bool stops_on_release() const override { return freezer_ && freezer_->stops_on_release(); }
  Result<void> thaw() override { return freezer_ ? freezer_->release() : ok(); }
  void kill() override;
  dt::ProcessFreezer* freezer() override { return freezer_.get(); }

 private:
  void reap_traced_threads();

  pid_t pid_;
  std::unique_ptr<Throttler> throttler_;
  std::unique_ptr<dt::ProcessFreezer> freezer_;
};

// Ends the process. Its traced threads turn into zombies that only their
// tracer (this thread) can reap; until then the parent cannot reap the
// process, so wait for every non-leader thread here. Then wait until the
// process has exited: a SIGKILLed process may take a while to tear down
// its memory, and the group test saw a source still there after
// `livemig source` reported it killed and exited.
void LinuxProcess::kill() {
  UniqueFd pidfd(int(::syscall(SYS_pidfd_open, pid_, 0)));  // before the kill: the pid may be reused after
  ::kill(pid_, SIGKILL);
  if (freezer_) reap_traced_threads();
  if (pidfd.valid()) {
    pollfd exited{pidfd.get(), POLLIN, 0};
    (void)::poll(&exited, 1, 5000);
  }
}

void LinuxProcess::reap_traced_threads() {
  for (pid_t tid : freezer_->threads()) {
    if (tid == pid_) continue;
    Stopwatch sw;
    int status = 0;
    while (sw.elapsed_ms() < 5000) {
      pid_t r = waitpid(tid, &status, __WALL | WNOHANG);
      if (r == tid && (WIFEXITED(status) || WIFSIGNALED(status))) break;
      if (r < 0) break;  // not ours to wait for any more
      if (r == 0) usleep(1000);
    }
  }
  (void)freezer_->release();  // nothing left to detach; errors are expected
}

}  // namespace

std::unique_ptr<SourceProcess> linux_process(pid_t pid) { return std::make_unique<LinuxProcess>(pid); }

}  // namespace lm::engine
