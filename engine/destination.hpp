// The destination side of a migration: accepts a session, installs pages
// straight into the destination memory (the resumed guest's memfd RAM, or an
// image of memfds, one per mapping), hashes every page it installs, and on
// the source's commit sends its digests and resumes the guest. The VM is
// kept only if the source's verdict is "verified"; otherwise it is discarded.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "common/error.hpp"
#include "compress/stats.hpp"
#include "engine/cancel.hpp"
#include "engine/image_dir.hpp"
#include "engine/postcopy_destination.hpp"
#include "harness/guest/client.hpp"
#include "transport/channel.hpp"
#include "transport/session.hpp"

namespace lm::engine {

enum class DestinationTarget {
  guest,  // resume livemig-guest with the received RAM
  image,  // keep a memory image of an unmodified process
};

// The phases of the destination side; this diagram is the one place they are
// drawn (docs/architecture.md points here).
//
//   accept ──> prepare ──> receive ──> commit ──> resume ──> verdict ──> kept
//     │           │           │          │          │  ╲   (pre-copy)│
//     │           │           │          │          │   ╲─> postcopy ──> verdict ──> kept
//     v           v           v          v          v          │              │
//   discarded <───┴───────────┴──────────┴──────────┘          └──> lost <────┘
//        ^                                                   (post-copy)
//        └──── a pre-copy verdict that is not "verified" (error, timeout)
//
// accept: wait for the source's session. prepare: the destination memory
// (spawn the resuming guest and take its RAM over the handoff, or an image),
// then `ready`. receive: pre-copy rounds on the bulk channels, mapping
// updates and post-copy bitmaps on control, until the source's exec_state.
// commit: every bulk channel ended; pre-copy sends its digests, post-copy
// starts serving faults. resume: the guest's `go`, its running report, and
// `resumed` to the source. postcopy: serve faults until every page is here,
// then the digests. verdict: the source's close (keep) or error (discard).
//
// What a failure means is decided in one place (destination.cpp,
// on_failure): up to `resumed` and in a pre-copy verdict the copy is
// discarded (the guest, which never ran from it or ran only unverified, is
// killed; the source rolls back). Once a post-copy guest resumed, the VM
// lives here and the source cannot take it back: a failure then loses it
// (the guest, its memory incomplete, is killed).
//
// Cancel (DestinationOptions::cancel) ends every wait up to `resumed` at once
// (the guest handoff's within 200 ms): the copy is discarded and the source told why. Once
// `resumed` was sent it is not obeyed: a post-copy VM runs only here, so it
// is served to completion rather than abandoned; a pre-copy source may
// already have released its copy with its verdict, so the destination only
// tells the source it was interrupted and keeps waiting for the verdict (a
// source that has not released yet rolls back and says so).
enum class DestinationPhase { accept, prepare, receive, commit, resume, postcopy, verdict, kept, discarded, lost };
std::string_view destination_phase_name(DestinationPhase p);

struct DestinationOptions {
  std::string listen = "uring:127.0.0.1:0";
  DestinationTarget target = DestinationTarget::guest;
  std::string guest_binary;  // livemig-guest, for DestinationTarget::guest
  std::string work_dir;      // unix sockets of the resumed guest
  transport::SessionConfig session;
  transport::Timeout timeout{30000};  // longest silence from the source
  bool prealloc = true;               // allocate the guest's RAM before receiving
  // Post-copy: how long the resumed guest's faults wait for a source whose
  // link broke to reconnect (0: the VM is lost at once).
  transport::Timeout reconnect_timeout{kDefaultReconnectTimeoutMs};
  // Stops the migration from another thread: the copy is discarded, unless
  // `resumed` was already sent (see the diagram above).
  std::shared_ptr<Cancel> cancel;
};

struct DestinationOutcome {
  std::unique_ptr<guest::GuestProcess> guest;  // the resumed guest (target guest)
  std::vector<ImageRegion> image;              // the held image (target image): the final table's mappings
  std::optional<pid_t> source_pid;             // image: the source process, when its engine said
  uint64_t pages_received = 0;
  uint64_t batches = 0;
  double cpu_seconds = 0;
  double resumed_at_ms = 0;  // since the session was accepted
  std::optional<PostcopyDestinationStats> postcopy;  // when the source chose post-copy
  double postcopy_rate = 0;  // guest steps per second from resume to post-copy completion
};

struct DestinationMemory;  // destination.cpp

class Destination {
 public:
  static Result<std::unique_ptr<Destination>> listen(DestinationOptions options);
  ~Destination();
  // The address the source connects to, with the real port.
  std::string address() const;
  // Runs one migration to its end: the source's verdict, or a failure (the
  // destination's copy is then discarded, its guest killed).
  Result<DestinationOutcome> run();

 private:
  explicit Destination(DestinationOptions options);
  DestinationOptions o_;
  std::unique_ptr<transport::Listener> listener_;
  std::unique_ptr<DestinationMemory> memory_;  // outlives run(): callers read the held image
};

}  // namespace lm::engine
