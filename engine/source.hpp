// The source side of a migration: attaches to a live process by PID, tracks
// its dirty pages, sends them round by round (pre-copy), freezes it for the
// final round, and releases it only after the destination has proven, by
// digests, that it holds exactly the frozen image. On any failure before that
// the process is thawed and runs on as it was.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <memory>
#include <string>

#include "dirtytrack/maps.hpp"
#include "dirtytrack/tracker.hpp"
#include "engine/convergence.hpp"
#include "engine/results.hpp"
#include "engine/cancel.hpp"
#include "engine/config.hpp"
#include "engine/link_share.hpp"
#include "engine/source_process.hpp"
#include "transport/channel.hpp"
#include "transport/session.hpp"

namespace lm::engine {

// What the engine knows about the process's execution state on the wire.
enum class ExecStateKind : uint32_t {
  guest_ram = 1,  // livemig-guest: the whole state lives in its RAM
  image = 2,      // unmodified process: memory image only, no resume
};

// The state an image commit carries: the source's pid, for the image's
// manifest (an engine that sends no state leaves it unknown).
struct ImageExecState {
  uint64_t source_pid;
};
static_assert(sizeof(ImageExecState) == 8);

// The phases of the source side; this diagram is the one place they are
// drawn (docs/architecture.md points here).
//
//   setup ──> precopy ──> stop_and_copy ──> commit ──> verify ──> released
//     │          │        (pure post-copy:     │  ╲        │
//     │          │         no precopy)         │   ╲─> postcopy ──> verify
//     v          v             v               v          │            │
//   rolled_back <──────────────┴───────────────┘          └──> lost <──┘
//
// What a failure means is decided in one place (source.cpp, on_failure):
// - setup, precopy, stop_and_copy: the destination never ran the VM; the
//   source is thawed and runs on (rolled_back).
// - commit (pre-copy: the execution state is sent, the destination resumes
//   but keeps nothing without our verdict) and a pre-copy verify: rolled
//   back as well; the destination discards its copy.
// - postcopy and a post-copy verify, once the destination may run the VM:
//   the VM is lost. The source is never thawed then: two copies would run.
// From commit on, a guest-RAM source has a SIGSTOP queued on every thread
// (ProcessFreezer::stop_on_release): if this engine dies, even by SIGKILL,
// the source stops before it runs another instruction. released: the
// source is killed, left stopped, or kept running (AfterMigration).
enum class SourcePhase { setup, precopy, stop_and_copy, commit, postcopy, verify, released, rolled_back, lost };
std::string_view source_phase_name(SourcePhase p);

struct SourceProgress {
  unsigned round = 0;
  uint64_t pages_left = 0;      // dirty pages waiting for the next round
  uint64_t bytes_sent = 0;      // on the wire so far
  double gbps = 0;              // wire rate of the last round
  double expected_downtime_ms = 0;
};

struct SourceOptions {
  pid_t pid = 0;
  // Makes the process to migrate instead of the live Linux process `pid`
  // (the engine tests inject an in-memory fake); empty: linux_process(pid).
  std::function<Result<std::unique_ptr<SourceProcess>>()> make_process;
  dt::Scope scope;  // the guest's RAM range, or every migratable mapping
  ExecStateKind exec_state = ExecStateKind::guest_ram;
  MigrationMode mode = MigrationMode::precopy;  // hybrid: pre-copy until `convergence` stops, then post-copy
  PostcopyConfig postcopy;
  std::string tracker = MigrationConfig{}.tracker;
  // Makes the dirty tracker instead of the registry's `tracker` (tests wrap
  // a real one to inject failures); empty: dt::make_tracker(tracker).
  std::function<Result<std::unique_ptr<dt::Tracker>>()> make_tracker;
  compress::PolicySpec policy = MigrationConfig{}.policy;
  unsigned channels = MigrationConfig{}.channels;        // bulk channels
  unsigned workers = MigrationConfig{}.workers;          // sending/compressing threads
  // The destination runs on this machine's CPUs (its receiving and
  // decompressing take from the compressors' share). Unset: judged from the
  // address (loopback, memif); a runner that starts both ends knows.
  std::optional<bool> destination_shares_cpus;
  unsigned batch_pages = MigrationConfig{}.batch_pages;  // pages per page-batch message
  // Round 0 starts before the tracker write-protected the memory (uffd-wp):
  // it protects this many bytes at a time inside round 0, and the senders
  // read each chunk once it is protected. 0: all of it in setup.
  uint64_t protect_chunk_bytes = MigrationConfig{}.protect_chunk_bytes;
  ConvergenceConfig convergence;
  // Leave pages dirtied in consecutive rounds writable and send them after
  // the freeze (within half the downtime target): the process stops faulting
  // on them every round.
  bool hold_hot_pages = MigrationConfig{}.hold_hot_pages;
  AutoConvergeConfig auto_converge;
  bool verify = true;
  // What becomes of the source after a verified migration (image: keep).
  AfterMigration after = AfterMigration::kill;
  // Migrate a process of another user (refused by default).
  bool allow_other_user = false;
  // Stops the migration from another thread; what that means depends on
  // the phase (a source is thawed before the commit, never after).
  std::shared_ptr<Cancel> cancel;
  transport::SessionConfig session;
  transport::Timeout timeout{kDefaultPeerTimeout};  // any single wait for the peer
  // Fault injection (tests): flip one payload byte of the N-th page batch
  // (1-based) after it was encoded; 0 = off. The destination's checksum
  // finds it, or in a verified pre-copy its digests do.
  uint64_t fault_corrupt_batch = 0;
  // Fault injection (tests): the senders' preparation (compressors and
  // buffers, made beside the handshake and waited for at the end of setup)
  // fails as an allocation would.
  bool fault_prepare_senders = false;
  // The link this migration shares with others of a group (engine/group.hpp):
  // every bulk batch waits for its turn and the group's rate; null: its own.
  std::shared_ptr<LinkShare::Member> link_share;
  // Called after every round (progress line).
  std::function<void(const SourceProgress&)> on_round;
  // Called once the destination said ready, before tracking starts: a group
  // holds a VM here until its turn, its destination prepared, and nothing
  // the VM writes meanwhile is sent twice. `keep_alive` announces the VM's
  // mappings again, which tells a destination waiting for the first page
  // that its source is alive: call it well within the peer timeout. An
  // error ends the migration before any page was sent. The wait is neither
  // setup nor total time.
  std::function<Result<void>(const std::function<Result<void>()>& keep_alive)> before_tracking;
  // Called just before the process is frozen (the runner samples the workload).
  std::function<void()> before_freeze;
  // Called once the destination reports the VM running (pre-copy: before
  // the verdict; post-copy: at its resume, before the pages all arrived):
  // a serial-correlated group gives the next VM its turn then.
  std::function<void()> on_resumed;
  // Called on entering every phase (progress, and fault injection in tests).
  std::function<void(SourcePhase)> on_phase;
};

class SourceMigration {
 public:
  explicit SourceMigration(SourceOptions options) : o_(std::move(options)) {}
  // Migrates to `address` ("uring:127.0.0.1:7000") and fills `result`
  // (also on failure: what happened until then, and the error).
  Result<void> run(const std::string& address, MigrationResult& result);
  // The same over channels `dial` opens (transport::make_inproc_link in the
  // engine tests); `peer` names the destination in messages and the
  // result's transport ("inproc:matrix"). The session is opened in setup,
  // once the tracker knows the mappings its handshake announces, and
  // dialled again by a post-copy recovery. `dial` is called from several
  // threads at once (the channels after the control channel are opened
  // concurrently).
  Result<void> run(transport::Dial dial, const std::string& peer, MigrationResult& result);

 private:
  SourceOptions o_;
};

}  // namespace lm::engine
