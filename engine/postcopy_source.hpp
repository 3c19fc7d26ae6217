// The source half of post-copy (docs/postcopy.md). Called with the process
// frozen and the tracker stopped: announces which pages the destination still
// needs (dirty_bitmap on control), commits the execution state, then serves
// page requests on the priority channel while pushing every other needed page
// on the bulk channels in the pre-paging policy's order, until the
// destination reports completion with its digests.
//
// Recovery: when the link breaks after the execution state was committed,
// the source dials the same session again (`redial`) until
// `reconnect_timeout`, learns from the destination which pages it still
// needs, and pushes those; requests for waiting faults arrive anew.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <vector>

#include "common/clock.hpp"
#include "compress/compressor.hpp"
#include "dirtytrack/ranges.hpp"
#include "engine/config.hpp"
#include "engine/link_share.hpp"
#include "engine/prepaging.hpp"
#include "engine/timeline.hpp"
#include "engine/source_process.hpp"
#include "transport/session.hpp"

namespace lm::engine {

struct PostcopySourceOptions {
  uint32_t exec_state_kind = 1;
  PrepagingKind prepaging = PrepagingKind::bubble;
  unsigned pivots = 1;
  unsigned push_batch_pages = 32;  // small: the bubble follows new faults quickly
  unsigned idle_ms = 50;           // policy none: push the rest after this long without faults
  transport::Timeout timeout{kDefaultPeerTimeout};
  // Longest wait for the destination's completion after its resume.
  transport::Timeout completion_timeout{600000};
  // Opens the session again under its id after a broken link, within the
  // time given; empty: a broken link ends the migration at once.
  std::function<Result<transport::Session>(transport::Timeout)> redial;
  transport::Timeout reconnect_timeout{kDefaultReconnectTimeoutMs};
  // A group's shared link (engine/link_share.hpp): every pushed batch asks it
  // for its bytes first, and the pushers are in a round while they push.
  // Replies to page requests do not ask: a fault of the resumed VM must not
  // wait behind another VM's quantum (they are few and small, and not in
  // the share's figures). Null: the link is this migration's alone.
  LinkShare::Member* link_share = nullptr;
  // Counts what is pushed and served, and the pages still needed; null: none.
  Timeline* timeline = nullptr;
  // Called once, when the destination first reports the VM running.
  std::function<void()> on_resumed;
};

struct PostcopySourceOutcome {
  bool resumed = false;  // the destination runs the VM: failures from here on lose it
  // The destination runs the VM, or may (the link broke between the commit
  // and its word): the frozen source must never run again.
  bool destination_may_run = false;
  uint64_t committed_ns = 0;    // the execution state sent
  uint64_t resumed_ns = 0;      // the destination's running report received
  double resumed_after_ms = 0;  // from the freeze (downtime)
  double complete_after_ms = 0; // from the resume to the destination's completion
  uint64_t requests = 0;        // page_request messages served
  uint64_t pages_requested = 0;
  uint64_t pages_pushed = 0;
  uint64_t replies_already_pushed = 0;  // requested after being pushed: answered again
  uint64_t wire_bytes = 0;
  double cpu_seconds = 0;
  uint64_t reconnects = 0;
  double link_down_ms = 0;
  std::vector<transport::DigestEntry> digests;  // the destination's, at completion
};

// `process`: the frozen source, read by every serving thread. `workers`: one
// compressor per bulk channel at least (one more is made for the request
// server). `freeze_ns`: when the process was frozen. `session` is replaced
// in place by a recovered one.
Result<void> run_postcopy_source(transport::Session& session, const SourceProcess& process,
                                 std::vector<std::unique_ptr<compress::Compressor>>& workers,
                                 const PostcopySourceOptions& options, const dt::RangeList& needed,
                                 uint64_t freeze_ns, PostcopySourceOutcome& out);

}  // namespace lm::engine
