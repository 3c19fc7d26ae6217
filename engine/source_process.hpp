// The process being migrated, as the source engine sees it: checked, read,
// throttled, frozen, thawed or killed. One implementation drives a real Linux
// process by PID (linux_process.cpp: target_check, ProcessFreezer,
// PageReader, Throttler); the engine tests inject an in-memory fake through
// SourceOptions::make_process and run the whole phase machine in process.
//
// Threading: read() is called from every sending thread at once; every other
// method from the engine's own thread (ptrace binds to the thread that froze).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "common/error.hpp"
#include "dirtytrack/maps.hpp"
#include "dirtytrack/page_reader.hpp"
#include "dirtytrack/process_freezer.hpp"
#include "dirtytrack/ranges.hpp"
#include "dirtytrack/target_check.hpp"

namespace lm::engine {

class SourceProcess {
 public:
  virtual ~SourceProcess() = default;

  // Names the process in messages, the tracker's request and an image's manifest.
  virtual pid_t pid() const = 0;
  // ok, or why it may not be migrated; checked before anything is attached.
  virtual Result<void> check_target(dt::OtherUsers other_users) const = 0;

  // Reads the pages of `ranges` in order into `out` (dt::PageReader's
  // contract: a page that cannot be read is zero-filled and reported in
  // `failed`; an error means the process is gone). Thread-safe.
  virtual Result<dt::ReadReport> read(std::span<const PageRange> ranges, std::span<std::byte> out) const = 0;
  // The mappings a tracker of `scope` covers (dt::scoped_mappings), read
  // without tracking: the session announces them before tracking starts.
  virtual Result<dt::MappingList> mappings(const dt::Scope& scope) const = 0;
  // Pages of `mappings` that hold data (dt::populated_pages): the others
  // read as zero and are neither sent nor read for digests.
  virtual Result<dt::RangeList> populated(const dt::MappingList& mappings) const = 0;

  // Auto-converge: holds the process back `percent` % of the time; returns
  // the percentage in force. An error with ENOTSUP: this process cannot be
  // throttled (the engine then migrates without). unthrottle() leaves it
  // running as before; a no-op when it was never throttled.
  virtual Result<unsigned> throttle(unsigned percent) = 0;
  virtual Result<void> unthrottle() = 0;
  // How it is throttled ("cgroup-v1", "signals"), for the result.
  virtual std::string throttle_mechanism() const = 0;

  // Holds every thread; the process runs no instruction until thaw().
  virtual Result<void> freeze() = 0;
  virtual bool frozen() const = 0;
  // While frozen: once let go (thaw, or this engine dying), the process
  // stays stopped instead of running (source.hpp, "No split brain");
  // cancelled, it runs on again.
  virtual Result<void> stop_on_release() = 0;
  virtual Result<void> cancel_stop_on_release() = 0;
  virtual bool stops_on_release() const = 0;
  // Lets go of a frozen process (it runs on, or stays stopped as above);
  // a no-op when not frozen.
  virtual Result<void> thaw() = 0;
  // Ends the process; a frozen one never runs another instruction first.
  // Returns once it has exited (a caller that reports it killed may be
  // asked at once whether it is gone), or after a few seconds.
  virtual void kill() = 0;
  // The hold to run the tracker's remote system calls through while
  // frozen; null when there is none (a tracker then needs none).
  virtual dt::ProcessFreezer* freezer() = 0;
};

// A live Linux process by PID (linux_process.cpp): the default.
std::unique_ptr<SourceProcess> linux_process(pid_t pid);

}  // namespace lm::engine
