// The destination side of a migration: accepts a session, installs pages
// straight into the memory of its page sink (engine/page_sink.hpp: the
// resumed guest's RAM, an image, a test's fake), hashes every page it
// installs when the source verifies, and on the source's commit sends its digests and resumes what
// runs from the pages. The copy is kept only if the source's verdict is
// "verified"; otherwise it is discarded.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "engine/config.hpp"
#include "compress/stats.hpp"
#include "engine/cancel.hpp"
#include "engine/page_sink.hpp"
#include "engine/postcopy_destination.hpp"
#include "transport/channel.hpp"
#include "transport/session.hpp"

namespace lm::engine {

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
// accept: wait for the source's session. prepare: the sink's memory (the
// guest sink spawns the resuming guest and takes its RAM over the handoff;
// the image sink makes anonymous memory per mapping; both write it in), then
// `ready`. receive: pre-copy rounds on the bulk channels, mapping
// updates and post-copy bitmaps on control, until the source's exec_state.
// commit: every bulk channel ended; pre-copy sends its digests, post-copy
// starts serving faults. resume: the sink's resume (the guest's `go`) and
// running report, and `resumed` to the source (`ready` from a sink that runs
// nothing). postcopy: serve faults until every page is here,
// then the digests. verdict: the source's close (keep) or error (discard).
//
// What a failure means is decided in one place (destination.cpp,
// on_failure): up to `resumed` and in a pre-copy verdict the copy is
// discarded (the sink's discard: the guest, which never ran from it or ran
// only unverified, is killed; the source rolls back). Once a post-copy guest
// resumed, the VM lives here and the source cannot take it back: a failure
// then loses it (discard again: the guest, its memory incomplete, is
// killed). kept: the sink's keep (the guest is released).
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
  // Where the pages go and what runs from them; one migration per sink. The
  // caller keeps its own reference to read the result (the resumed guest,
  // the held image).
  std::shared_ptr<PageSink> sink;
  transport::SessionConfig session;
  // What a source may ask of this host (engine/admission.hpp); checked in
  // each channel's handshake (this sets session.admit) and on every later
  // mapping table, before memory is made for it.
  LimitsConfig limits;
  transport::Timeout timeout{kDefaultPeerTimeout};  // longest silence from the source
  // Post-copy: how long the resumed guest's faults wait for a source whose
  // link broke to reconnect (0: the VM is lost at once).
  transport::Timeout reconnect_timeout{kDefaultReconnectTimeoutMs};
  // Stops the migration from another thread: the copy is discarded, unless
  // `resumed` was already sent (see the diagram above).
  std::shared_ptr<Cancel> cancel;
  // Called on entering each phase (tests).
  std::function<void(DestinationPhase)> on_phase;
};

// What a kept migration leaves; what runs from it, or the image, is the sink's.
struct DestinationOutcome {
  uint64_t pages_received = 0;
  uint64_t batches = 0;
  double cpu_seconds = 0;
  double resumed_at_ms = 0;  // since the session was accepted (a sink that resumes a VM)
  std::optional<PostcopyDestinationStats> postcopy;  // when the source chose post-copy
  double postcopy_rate = 0;  // the sink's progress per second from resume to post-copy completion
};

// Where a destination's sessions come from: its own listener, or one it
// shares with other destinations (destination.cpp).
class SessionSource;

class Destination {
 public:
  static Result<std::unique_ptr<Destination>> listen(DestinationOptions options);
  // The same on a listener the caller made (tests: transport::make_inproc_link).
  static Result<std::unique_ptr<Destination>> over(std::unique_ptr<transport::Listener> listener,
                                                   DestinationOptions options);
  // Several migrations on one listener (livemig dest --sessions N): one
  // destination per sink, each taking the next new session that joins (a
  // post-copy recovery finds its own by session id); run each on a thread of
  // its own. They share `options` but for the sink (options.sink is ignored).
  // Each session is admitted on its own against options.limits and
  // MemAvailable at its handshake.
  static Result<std::vector<std::unique_ptr<Destination>>> listen_shared(
      DestinationOptions options, const std::vector<std::shared_ptr<PageSink>>& sinks);
  static Result<std::vector<std::unique_ptr<Destination>>> over_shared(
      std::unique_ptr<transport::Listener> listener, DestinationOptions options,
      const std::vector<std::shared_ptr<PageSink>>& sinks);
  ~Destination();
  // The address the source connects to, with the real port.
  std::string address() const;
  // Runs one migration to its end: the source's verdict (the sink kept the
  // copy), or a failure (the sink discarded it, its guest killed).
  Result<DestinationOutcome> run();

 private:
  Destination(DestinationOptions options, std::shared_ptr<SessionSource> sessions);
  DestinationOptions o_;
  std::shared_ptr<SessionSource> sessions_;
};

}  // namespace lm::engine
