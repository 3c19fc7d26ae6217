// The destination side of a migration: accepts a session, installs pages
// straight into the destination memory (the resumed guest's memfd RAM, or an
// image of memfds, one per mapping), hashes every page it installs, and on
// the source's commit sends its digests and resumes the guest. The VM is
// kept only if the source's verdict is "verified"; otherwise it is discarded.
#pragma once

#include <memory>
#include <string>

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
  transport::Timeout reconnect_timeout{10000};
  // Stops the migration from another thread: the copy is discarded, unless
  // the destination already runs the VM (post-copy), which it never abandons.
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
