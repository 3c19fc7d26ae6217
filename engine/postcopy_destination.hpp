// The destination half of post-copy (docs/postcopy.md): serves the resumed
// guest's page faults through the userfaultfd the guest registered on its
// RAM, fetching needed pages from the source on the priority channel, and
// installs the pages the source pushes on the bulk channels — every page with
// UFFDIO_COPY, which places and wakes atomically, so a page is installed once
// whichever copy lands first. A needed page whose stale pre-copied version is
// in the RAM (hybrid) is not punched out in the downtime: with MINOR
// registered its fault waits for the fresh copy, which is written through
// the engine's own mapping and then mapped with UFFDIO_CONTINUE.
//
// Recovery: when the link to the source breaks, faults keep being read and
// wait; the source dials the same session again, and the destination tells
// it what is still needed, re-requests every waiting fault and goes on. No
// new session within the recovery timeout: the VM is lost.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/fd.hpp"
#include "dirtytrack/ranges.hpp"
#include "engine/config.hpp"
#include "engine/digest.hpp"
#include "engine/messages.hpp"
#include "engine/results.hpp"
#include "transport/session.hpp"

namespace lm::engine {

// The pages the destination still needs, from the source's dirty_bitmap
// messages; every other page is current already (pre-copied) or zero.
class NeededPages {
 public:
  void add(const transport::DirtyBitmapView& v);
  bool contains(uint64_t addr) const;
  // A run of needed pages not inside `range`, if there is one.
  std::optional<PageRange> first_outside(const PageRange& range) const;
  uint64_t count() const { return count_; }
  dt::RangeList ranges() const;

 private:
  struct Part {
    uint64_t start = 0;
    uint64_t pages = 0;
    std::vector<uint8_t> bits;
  };
  std::vector<Part> parts_;
  uint64_t count_ = 0;
};

struct PostcopyGuestRam {
  UniqueFd uffd;              // registered by the guest on its RAM (MISSING, maybe MINOR)
  bool minor_registered = false;
  int memfd = -1;             // the guest's RAM; borrowed
  uint8_t* engine_map = nullptr;  // the engine's own shared mapping of it; borrowed
  PageRange range;            // where the guest maps it
};

struct PostcopyRecovery {
  // Accepts the source's next session (the caller checks nothing; the id is
  // checked here). Ends with ECANCELED once `stop` is stopped (the migration
  // failed meanwhile). Empty: a broken link fails the migration at once.
  std::function<Result<transport::Session>(transport::Timeout, std::stop_token stop)> accept;
  transport::Timeout timeout{kDefaultReconnectTimeoutMs};  // longest outage faults wait through
};

struct PostcopyDestinationStats {
  uint64_t demand_faults = 0;  // missing pages fetched on a fault
  uint64_t zero_faults = 0;    // resolved locally with UFFDIO_ZEROPAGE
  uint64_t stale_refreshed = 0;  // stale pre-copied pages rewritten in place (MINOR path)
  uint64_t minor_faults = 0;   // pre-copied pages mapped with UFFDIO_CONTINUE
  uint64_t pages_by_request = 0;  // installed from a page_reply to a request
  uint64_t pages_by_push = 0;     // installed from a pushed page before any fault
  uint64_t pages_pushed_after_fault = 0;  // pushed copy landed first for a faulted page
  uint64_t copies_dropped = 0;    // second copies of a page (EEXIST)
  std::vector<double> fault_latency_us;  // fault read -> page installed
  double complete_ms = 0;  // from start() to completion
  uint64_t reconnects = 0;  // link outages recovered from
  double link_down_ms = 0;  // summed over them
};

class PostcopyDestination {
 public:
  // Punches the needed pages out of the RAM (stale pre-copied versions),
  // maps the current pages into the guest, and starts serving faults and
  // receiving pushes. Call before letting the guest run.
  // `session` is replaced in place by a recovered one.
  static Result<std::unique_ptr<PostcopyDestination>> start(transport::Session& session, PostcopyGuestRam ram,
                                                            NeededPages needed, PageHashes& hashes,
                                                            transport::Timeout timeout, PostcopyRecovery recovery);
  ~PostcopyDestination();  // stops and joins every thread; closes the uffd

  // Tells the source the guest runs (CLOCK_MONOTONIC ns); said again after a
  // recovery, so a `resumed` lost with the link still arrives.
  void resumed(uint64_t running_ns);

  // Blocks until every needed page is installed and every bulk channel has
  // delivered its end mark, then drops the userfaultfd registration. An error
  // (source lost, guest gone) or `limit` without completion fails.
  Result<void> wait_complete(transport::Timeout limit);

  // The link broke (or serving failed) and waits for recover_link().
  bool link_broken();
  // Before the guest reports running, its first faults need the source too:
  // the resume waits for that report and recovers a broken link meanwhile.
  Result<void> recover_link();
  PostcopyDestinationStats stats();

 private:
  PostcopyDestination(transport::Session& session, PostcopyGuestRam ram, NeededPages needed, PageHashes& hashes,
                      transport::Timeout timeout, PostcopyRecovery recovery);
  Result<void> prepare();
  void spawn(std::vector<std::thread>& into, std::function<Result<void>()> body);
  void failed(Error e);
  // A channel broke: the link threads stop, faults wait for recover().
  void lost_link(Error e);
  void link_broke(Error e);  // the same, with link_lock_ held
  void spawn_link_threads();
  void stop_link_threads();
  Result<void> recover();
  // The recovery handshake on a new session: resumed, still-needed pages,
  // ready; then every waiting fault is requested again.
  Result<void> resume_link();

  Result<void> map_present();
  Result<void> serve_faults();
  // Sends on the priority channel unless the link is down (then the pages
  // stay in inflight_ and are requested again after recovery).
  void request(std::span<const uint64_t> addrs, uint64_t& request_id);
  // The next message on a channel of the link (the wait ends at once on
  // link_stop_); nullopt once stopping or the link broke (lost_link()).
  std::optional<transport::Message> next_link_message(const Peer& peer);
  Result<void> receive_replies();
  Result<void> receive_pushes(size_t c);
  Result<void> watch_control();
  // UFFDIO_COPY of pages at addrs (data[i] for addrs[i]); pages already there are skipped.
  Result<void> install(std::span<const uint64_t> addrs, std::span<uint8_t* const> data, bool pushed);
  Result<void> wake(uint64_t addr);
  // Install addrs[i, i+n) (adjacent pages); return how many were handled.
  Result<size_t> copy_run(std::span<const uint64_t> addrs, std::span<uint8_t* const> data, std::vector<bool>& placed,
                          size_t i, size_t n);
  Result<size_t> continue_run(std::span<const uint64_t> addrs, std::span<uint8_t* const> data,
                              std::vector<bool>& placed, size_t i, size_t n);
  uint64_t page_index(uint64_t addr) const { return (addr - ram_.range.start) / kPageSize; }
  bool is_installed(uint64_t addr) const;
  bool mark_installed(uint64_t addr);
  // A needed page whose stale version sits in the RAM (MINOR path).
  bool is_stale(uint64_t addr) const {
    uint64_t i = page_index(addr);
    return !stale_.empty() && (stale_[i / 64] >> (i % 64) & 1);
  }

  transport::Session& session_;
  PostcopyGuestRam ram_;
  NeededPages needed_;
  PageHashes& hashes_;
  transport::Timeout timeout_;
  PostcopyRecovery recovery_;
  uint64_t started_ns_ = 0;
  uint64_t resumed_ns_ = 0;  // main thread only

  // The link: session_'s channels. link_lock_ serialises priority sends with
  // the replacement of session_; link threads stop on link_stop_.
  std::mutex link_lock_;
  bool link_up_ = true;  // under link_lock_
  // Requested on a broken link or any failure; replaced (under error_lock_)
  // for each link, once its threads are joined.
  std::stop_source link_stop_;
  std::optional<Error> link_error_;  // under error_lock_: why the link broke
  std::vector<std::thread> link_threads_;

  std::unique_ptr<std::atomic<uint64_t>[]> installed_;  // bitmap over ram_.range
  std::unique_ptr<std::atomic<uint64_t>[]> claimed_;    // stale pages: who writes the fresh copy
  std::vector<uint64_t> stale_;  // bitmap over ram_.range; fixed after prepare()
  dt::RangeList present_;        // current pages in the RAM, for map_present()
  std::atomic<uint64_t> installed_count_{0};
  std::atomic<size_t> bulk_done_{0};
  std::atomic<bool> stop_{false};
  std::stop_source ending_;  // requested with stop_: ends a recovery's accept
  std::mutex error_lock_;
  std::optional<Error> error_;
  // wait_complete() sleeps on progress_ until progressed() says it may be done.
  std::mutex progress_lock_;
  std::condition_variable progress_;
  void progressed();

  std::mutex inflight_lock_;
  std::unordered_map<uint64_t, uint64_t> inflight_;  // page -> fault read time (ns)
  PostcopyDestinationStats stats_;                   // counters under inflight_lock_
  std::vector<std::thread> threads_;
};

}  // namespace lm::engine
