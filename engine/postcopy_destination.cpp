#include "engine/postcopy_destination.hpp"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "common/clock.hpp"
#include "compress/compressor.hpp"
#include "engine/messages.hpp"
#include "engine/urgent_thread.hpp"

namespace lm::engine {


// --- needed pages -------------------------------------------------------------------

void NeededPages::add(const transport::DirtyBitmapView& v) {
  Part p{v.start, v.pages, std::vector<uint8_t>(v.bits.begin(), v.bits.end())};
  for (uint8_t b : p.bits) count_ += uint64_t(std::popcount(b));
  parts_.push_back(std::move(p));
}

bool NeededPages::contains(uint64_t addr) const {
  for (const auto& p : parts_) {
    if (addr < p.start || addr >= p.start + p.pages * kPageSize) continue;
    uint64_t i = (addr - p.start) / kPageSize;
    return p.bits[i / 8] & (1u << (i % 8));
  }
  return false;
}

std::optional<PageRange> NeededPages::first_outside(const PageRange& range) const {
  for (const auto& p : parts_) {
    if (range.contains(p.start) && p.start + p.pages * kPageSize <= range.end) continue;  // its bits need no look
    for (const auto& r : dt::from_page_bitmap(p.bits, p.start, p.pages))
      if (!range.contains(r.start) || r.end > range.end) return r;
  }
  return std::nullopt;
}

dt::RangeList NeededPages::ranges() const {
  dt::RangeList out;
  for (const auto& p : parts_) {
    auto part = dt::from_page_bitmap(p.bits, p.start, p.pages);
    out.insert(out.end(), part.begin(), part.end());
  }
  dt::coalesce(out);
  return out;
}

// --- destination ----------------------------------------------------------------------

PostcopyDestination::PostcopyDestination(transport::Session& session, PostcopyGuestRam ram, NeededPages needed,
                                         PageHashes& hashes, transport::Timeout timeout, PostcopyRecovery recovery)
    : session_(session),
      ram_(std::move(ram)),
      needed_(std::move(needed)),
      hashes_(hashes),
      timeout_(timeout),
      recovery_(std::move(recovery)) {
  uint64_t words = (ram_.range.pages() + 63) / 64;
  installed_ = std::make_unique<std::atomic<uint64_t>[]>(words);
  claimed_ = std::make_unique<std::atomic<uint64_t>[]>(words);
  for (uint64_t i = 0; i < words; i++) installed_[i] = claimed_[i] = 0;
}

PostcopyDestination::~PostcopyDestination() {
  stop_ = true;
  ending_.request_stop();
  stop_link_threads();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

Result<std::unique_ptr<PostcopyDestination>> PostcopyDestination::start(transport::Session& session,
                                                                        PostcopyGuestRam ram, NeededPages needed,
                                                                        PageHashes& hashes,
                                                                        transport::Timeout timeout,
                                                                        PostcopyRecovery recovery) {
  std::unique_ptr<PostcopyDestination> d(
      new PostcopyDestination(session, std::move(ram), std::move(needed), hashes, timeout, std::move(recovery)));
  LM_TRY(d->prepare());
  d->started_ns_ = now_ns();
  d->spawn(d->threads_, [p = d.get()] { return p->serve_faults(); });
  if (d->ram_.minor_registered) d->spawn(d->threads_, [p = d.get()] { return p->map_present(); });
  d->spawn_link_threads();
  return d;
}

void PostcopyDestination::spawn_link_threads() {
  {
    std::lock_guard g(error_lock_);
    link_stop_ = std::stop_source();
  }
  spawn(link_threads_, [this] { return receive_replies(); });
  spawn(link_threads_, [this] { return watch_control(); });
  for (size_t c = 0; c < session_.bulk_count(); c++) spawn(link_threads_, [this, c] { return receive_pushes(c); });
}

void PostcopyDestination::stop_link_threads() {
  {
    std::lock_guard g(error_lock_);
    link_stop_.request_stop();
  }
  for (auto& t : link_threads_)
    if (t.joinable()) t.join();
  link_threads_.clear();
}

Result<void> PostcopyDestination::prepare() {
  const int memfd = ram_.memfd;
  if (auto r = needed_.first_outside(ram_.range))
    return Error::msg(strf("post-copy: needed pages [0x%llx,0x%llx) outside the guest RAM",
                           (unsigned long long)r->start, (unsigned long long)r->end));
  // Where the RAM holds data: pre-copied pages (none in pure post-copy).
  dt::RangeList data;
  for (off_t pos = 0;;) {
    off_t at = lseek(memfd, pos, SEEK_DATA);
    if (at < 0) {
      if (errno == ENXIO) break;
      return Error::from_errno("post-copy: SEEK_DATA on the guest RAM memfd");
    }
    off_t hole = lseek(memfd, at, SEEK_HOLE);
    if (hole < 0) return Error::from_errno("post-copy: SEEK_HOLE on the guest RAM memfd");
    data.push_back({ram_.range.start + uint64_t(at), ram_.range.start + uint64_t(hole)});
    pos = hole;
  }
  // Pure post-copy pre-copied nothing: no page is stale, and the needed
  // pages' list (~1 ms per 30k runs, inside the downtime) is not made.
  if (data.empty()) return ok();
  const dt::RangeList stale = dt::intersect(needed_.ranges(), data);
  present_ = dt::subtract(data, stale);
  if (ram_.minor_registered && ram_.engine_map) {
    // Stale versions stay: their MINOR faults wait for the fresh copy. Only
    // bits are set here, where a punch would cost ~1 us per range.
    stale_.assign((ram_.range.pages() + 63) / 64, 0);
    for (const auto& r : stale)
      for (uint64_t i = page_index(r.start); i < page_index(r.end); i++) stale_[i / 64] |= uint64_t(1) << (i % 64);
    return ok();
  }
  // Without MINOR a stale page would never fault: punch it out.
  for (const auto& r : stale) {
    if (fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(r.start - ram_.range.start),
                  off_t(r.bytes())) != 0)
      return Error::from_errno(strf("post-copy: punch needed pages [0x%llx,0x%llx) out of the guest RAM",
                                    (unsigned long long)r.start, (unsigned long long)r.end));
  }
  return ok();
}

void PostcopyDestination::spawn(std::vector<std::thread>& into, std::function<Result<void>()> body) {
  into.emplace_back([this, body = std::move(body)] {
    auto r = body();
    if (!r) failed(std::move(r).error());
  });
}

void PostcopyDestination::failed(Error e) {
  std::lock_guard g(error_lock_);
  if (!error_) error_ = std::move(e);
  stop_ = true;
  ending_.request_stop();
  link_stop_.request_stop();
  progressed();
}

void PostcopyDestination::lost_link(Error e) {
  std::lock_guard g(link_lock_);
  link_broke(std::move(e));
}

void PostcopyDestination::link_broke(Error e) {
  link_up_ = false;
  std::lock_guard g(error_lock_);
  if (!link_error_) link_error_ = std::move(e);
  link_stop_.request_stop();
  progressed();
}

void PostcopyDestination::progressed() {
  std::lock_guard g(progress_lock_);
  progress_.notify_all();
}

namespace {

// Sets page i's bit; true if this call set it.
bool set_page_bit(std::atomic<uint64_t>* bits, uint64_t i) {
  uint64_t bit = uint64_t(1) << (i % 64);
  return !(bits[i / 64].fetch_or(bit) & bit);
}

}  // namespace

bool PostcopyDestination::is_installed(uint64_t addr) const {
  uint64_t i = page_index(addr);
  return installed_[i / 64].load() & (uint64_t(1) << (i % 64));
}

bool PostcopyDestination::mark_installed(uint64_t addr) { return set_page_bit(installed_.get(), page_index(addr)); }

Result<void> PostcopyDestination::wake(uint64_t addr) {
  uffdio_range r{addr, kPageSize};
  if (ioctl(ram_.uffd.get(), UFFDIO_WAKE, &r) != 0 && errno != ESRCH)
    return Error::from_errno(strf("post-copy: UFFDIO_WAKE 0x%llx", (unsigned long long)addr));
  return ok();
}

namespace {

Error guest_gone(const char* what, uint64_t addr) {
  return Error::sys(ESRCH, strf("post-copy: %s 0x%llx: the resumed guest is gone", what, (unsigned long long)addr));
}

// Decompresses a page_reply into scratch pages.
Result<void> unpack(const PageReply& view, compress::Decompressor& decompressor, std::vector<uint8_t>& scratch,
                    std::vector<uint8_t*>& ptrs, std::vector<uint64_t>& addrs) {
  scratch.resize(view.entries.size() * kPageSize);
  ptrs.clear();
  addrs.clear();
  for (size_t i = 0; i < view.entries.size(); i++) {
    ptrs.push_back(scratch.data() + i * kPageSize);
    addrs.push_back(view.entries[i].addr);
  }
  return decompressor.decompress_batch(
      view.entries, {reinterpret_cast<const uint8_t*>(view.payload.data()), view.payload.size()}, ptrs);
}

}  // namespace

Result<void> PostcopyDestination::install(std::span<const uint64_t> addrs, std::span<uint8_t* const> data,
                                          bool pushed) {
  for (size_t i = 0; i < addrs.size(); i++)
    if (!ram_.range.contains(addrs[i]) || !needed_.contains(addrs[i]))
      return Error::msg(strf("post-copy: the source sent page 0x%llx, which is not needed",
                             (unsigned long long)addrs[i]));
  std::vector<bool> placed(addrs.size(), false);
  // Runs of adjacent pages (adjacent in the scratch buffer too, and all stale
  // or none) go in one ioctl.
  for (size_t i = 0; i < addrs.size();) {
    const bool stale = is_stale(addrs[i]);
    size_t n = 1;
    while (i + n < addrs.size() && addrs[i + n] == addrs[i] + n * kPageSize &&
           data[i + n] == data[i] + n * kPageSize && is_stale(addrs[i + n]) == stale)
      n++;
    i += LM_TRY(stale ? continue_run(addrs, data, placed, i, n) : copy_run(addrs, data, placed, i, n));
  }
  const uint64_t done_ns = now_ns();
  for (size_t i = 0; i < addrs.size(); i++) {
    if (!placed[i]) continue;
    mark_installed(addrs[i]);
    hashes_.set(addrs[i], page_hash(data[i]));
    if (++installed_count_ == needed_.count()) progressed();
  }
  {
    std::lock_guard g(inflight_lock_);
    for (size_t i = 0; i < addrs.size(); i++) {
      auto it = inflight_.find(addrs[i]);
      if (placed[i]) {
        if (is_stale(addrs[i])) stats_.stale_refreshed++;
        if (it != inflight_.end()) {
          stats_.fault_latency_us.push_back(double(done_ns - it->second) * 1e-3);
          inflight_.erase(it);
          (pushed ? stats_.pages_pushed_after_fault : stats_.pages_by_request)++;
        } else {
          (pushed ? stats_.pages_by_push : stats_.pages_by_request)++;
        }
      } else {
        stats_.copies_dropped++;
        if (it != inflight_.end()) inflight_.erase(it);
      }
    }
  }
  // A reply whose page a push installed first: the faulting thread may
  // still sleep (UFFDIO_COPY woke it only if it was ours).
  if (!pushed)
    for (size_t i = 0; i < addrs.size(); i++)
      if (!placed[i]) LM_TRY(wake(addrs[i]));
  return ok();
}

// A page already there stops UFFDIO_COPY at that page (EEXIST, `copy` =
// bytes placed before it); it is dropped and the caller goes on after it.
// Returns the pages handled.
Result<size_t> PostcopyDestination::copy_run(std::span<const uint64_t> addrs, std::span<uint8_t* const> data,
                                             std::vector<bool>& placed, size_t i, size_t n) {
  uffdio_copy cp{};
  cp.dst = addrs[i];
  cp.src = reinterpret_cast<uint64_t>(data[i]);
  cp.len = n * kPageSize;
  if (ioctl(ram_.uffd.get(), UFFDIO_COPY, &cp) == 0) {
    for (size_t k = 0; k < n; k++) placed[i + k] = true;
    return n;
  }
  int e = errno;
  size_t copied = cp.copy > 0 ? size_t(cp.copy) / kPageSize : 0;
  for (size_t k = 0; k < copied; k++) placed[i + k] = true;
  if (e == EAGAIN) return copied;      // the mm changed under us: retry from there
  if (e == EEXIST) return copied + 1;  // the other copy of that page landed first
  if (e == ESRCH) return guest_gone("UFFDIO_COPY", addrs[i + copied]);
  return Error::sys(e, strf("post-copy: UFFDIO_COPY 0x%llx", (unsigned long long)addrs[i + copied]));
}

// Stale pages: whoever claims a page first writes the fresh copy through the
// engine's mapping, then maps it into the guest with UFFDIO_CONTINUE, which
// also wakes its faults. Until then the guest cannot see the page (its MINOR
// fault waits), and after it nobody writes the page again: a page another
// installer claimed is dropped.
Result<size_t> PostcopyDestination::continue_run(std::span<const uint64_t> addrs, std::span<uint8_t* const> data,
                                                 std::vector<bool>& placed, size_t i, size_t n) {
  for (size_t k = i; k < i + n;) {
    size_t m = 0;
    while (k + m < i + n && set_page_bit(claimed_.get(), page_index(addrs[k + m]))) {
      std::memcpy(ram_.engine_map + (addrs[k + m] - ram_.range.start), data[k + m], kPageSize);
      m++;
    }
    if (m == 0) {
      k++;
      continue;
    }
    for (size_t at = 0; at < m;) {
      uffdio_continue c{};
      c.range = {addrs[k + at], (m - at) * kPageSize};
      int r = ioctl(ram_.uffd.get(), UFFDIO_CONTINUE, &c);
      size_t mapped = r == 0 ? m - at : c.mapped > 0 ? size_t(c.mapped) / kPageSize : 0;
      for (size_t q = 0; q < mapped; q++) placed[k + at + q] = true;
      at += mapped;
      if (r == 0 || errno == EAGAIN) continue;
      if (errno == ESRCH) return guest_gone("UFFDIO_CONTINUE", addrs[k + at]);
      // EEXIST included: a claimed page mapped before its fresh copy was
      // written would be a broken invariant, not a race to shrug off.
      return Error::from_errno(strf("post-copy: UFFDIO_CONTINUE of the fresh copy of 0x%llx",
                                    (unsigned long long)addrs[k + at]));
    }
    k += m;
  }
  return n;
}

// The current pre-copied pages sit in the page cache; with MINOR registered
// each would fault once. Mapping them into the guest takes a while for a
// large RAM, so it runs beside the guest instead of in the downtime; a
// fault that races with it is resolved by the fault server (EEXIST: wake).
Result<void> PostcopyDestination::map_present() {
  for (const auto& r : present_) {
    // Pieces of at most 2 MiB, so that stop_ is seen soon.
    for (uint64_t at = r.start; at < r.end && !stop_;) {
      uffdio_continue c{};
      c.range.start = at;
      c.range.len = std::min<uint64_t>(r.end - at, uint64_t(2) << 20);
      if (ioctl(ram_.uffd.get(), UFFDIO_CONTINUE, &c) == 0) {
        at += c.range.len;
        continue;
      }
      int e = errno;
      uint64_t done = c.mapped > 0 ? uint64_t(c.mapped) : 0;
      if (e == ESRCH) return guest_gone("UFFDIO_CONTINUE", at);
      if (e == EAGAIN) {
        at += done;
        continue;
      }
      // EEXIST: a fault mapped it first.
      if (e != EEXIST)
        return Error::sys(e, strf("post-copy: UFFDIO_CONTINUE [0x%llx,+%llu) in the guest", (unsigned long long)at,
                                  (unsigned long long)c.range.len));
      at += done + kPageSize;
    }
  }
  return ok();
}

Result<void> PostcopyDestination::serve_faults() {
  make_this_thread_urgent();
  const int uffd = ram_.uffd.get();
  std::vector<uffd_msg> msgs(64);
  std::vector<uint64_t> request;
  uint64_t request_id = 0;  // counts on across recoveries; ids are only echoed
  while (!stop_) {
    pollfd p{uffd, POLLIN, 0};
    int r = poll(&p, 1, 100);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Error::from_errno("post-copy: poll the userfaultfd");
    if (r == 0) continue;
    ssize_t n = read(uffd, msgs.data(), msgs.size() * sizeof(uffd_msg));
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      return Error::from_errno("post-copy: read the userfaultfd");
    }
    const uint64_t read_ns = now_ns();
    // A fault resolved without the source (CONTINUE, ZEROPAGE): EEXIST or
    // EAGAIN mean another path got there first, so only the wake is left.
    auto resolve_locally = [&](unsigned long op, void* arg, const char* name, uint64_t addr) -> Result<void> {
      if (ioctl(uffd, op, arg) == 0) return ok();
      if (errno == ESRCH) return guest_gone(name, addr);
      if (errno != EEXIST && errno != EAGAIN)
        return Error::from_errno(strf("post-copy: %s 0x%llx", name, (unsigned long long)addr));
      return wake(addr);
    };
    request.clear();
    for (size_t i = 0; i < size_t(n) / sizeof(uffd_msg); i++) {
      if (msgs[i].event != UFFD_EVENT_PAGEFAULT) continue;
      const uint64_t addr = msgs[i].arg.pagefault.address & ~uint64_t(kPageSize - 1);
      const bool minor = msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR;
      if (minor && !(is_stale(addr) && !is_installed(addr))) {
        // A current page (pre-copied, or a stale one's fresh copy) not mapped yet.
        uffdio_continue c{};
        c.range = {addr, kPageSize};
        LM_TRY(resolve_locally(UFFDIO_CONTINUE, &c, "UFFDIO_CONTINUE", addr));
        std::lock_guard g(inflight_lock_);
        stats_.minor_faults++;
        continue;
      }
      if (!minor && !needed_.contains(addr)) {
        // Neither needed nor in the page cache: a zero page at the source.
        uffdio_zeropage z{};
        z.range = {addr, kPageSize};
        LM_TRY(resolve_locally(UFFDIO_ZEROPAGE, &z, "UFFDIO_ZEROPAGE", addr));
        std::lock_guard g(inflight_lock_);
        stats_.zero_faults++;
        continue;
      }
      bool installed;
      {
        std::lock_guard g(inflight_lock_);
        installed = is_installed(addr);
        if (!installed && inflight_.emplace(addr, read_ns).second) {
          request.push_back(addr);
          stats_.demand_faults++;
        }
      }
      if (installed) LM_TRY(wake(addr));  // installed after the fault was queued
    }
    this->request(request, request_id);
  }
  return ok();
}

void PostcopyDestination::request(std::span<const uint64_t> addrs, uint64_t& request_id) {
  std::lock_guard g(link_lock_);
  const Peer priority = Peer::priority(session_, timeout_);
  for (size_t at = 0; at < addrs.size() && link_up_; at += transport::kMaxRequestPages) {
    size_t count = std::min<size_t>(transport::kMaxRequestPages, addrs.size() - at);
    if (auto r = priority.send(PageRequest{++request_id, addrs.subspan(at, count)}); !r)
      link_broke(std::move(r).error().context("post-copy: request pages"));
  }
}

std::optional<transport::Message> PostcopyDestination::next_link_message(const Peer& peer) {
  auto received = peer.receive(transport::kForever, link_stop_.get_token());
  if (received) return std::move(*received);
  if (!stop_ && !link_stop_.stop_requested()) lost_link(std::move(received).error());
  return std::nullopt;
}

Result<void> PostcopyDestination::receive_replies() {
  make_this_thread_urgent();
  const Peer peer = Peer::priority(session_, timeout_);
  compress::Decompressor decompressor;
  std::vector<uint8_t> scratch;
  std::vector<uint8_t*> ptrs;
  std::vector<uint64_t> addrs;
  while (auto received = next_link_message(peer)) {
    LM_TRY(unpack(LM_TRY(peer.decode<PageReply>(*received)), decompressor, scratch, ptrs, addrs));
    LM_TRY(install(addrs, ptrs, false));
  }
  return ok();
}

Result<void> PostcopyDestination::receive_pushes(size_t c) {
  const Peer peer = Peer::bulk(session_, c, timeout_);
  compress::Decompressor decompressor;
  std::vector<uint8_t> scratch;
  std::vector<uint8_t*> ptrs;
  std::vector<uint64_t> addrs;
  while (auto received = next_link_message(peer)) {
    auto m = LM_TRY((peer.decode<PageReply, RoundEnd>(*received)));
    if (const auto* end = std::get_if<RoundEnd>(&m)) {
      if (end->flags & kRoundEndFinal) {
        bulk_done_++;
        progressed();
        return ok();
      }
      continue;
    }
    LM_TRY(unpack(std::get<PageReply>(m), decompressor, scratch, ptrs, addrs));
    LM_TRY(install(addrs, ptrs, true));
  }
  return ok();
}

// The source says nothing on control during post-copy, but a broken control
// channel is a broken link as much as a broken bulk one; an error message is
// the source giving up.
Result<void> PostcopyDestination::watch_control() {
  const Peer peer = Peer::control(session_, timeout_);
  if (auto received = next_link_message(peer)) return peer.refuse(*received);
  return ok();
}

void PostcopyDestination::resumed(uint64_t running_ns) {
  resumed_ns_ = running_ns;
  // Only the main thread sends on control; a failure is a broken link.
  if (auto r = Peer::control(session_, timeout_).send(Resumed{running_ns, 0}); !r) lost_link(std::move(r).error());
}

Result<void> PostcopyDestination::recover() {
  Error cause = [&] {
    std::lock_guard g(error_lock_);
    return *link_error_;
  }();
  stop_link_threads();
  if (!recovery_.accept) return std::move(cause).context("post-copy: the source is lost, and the VM with it");
  const uint64_t id = session_.negotiated().session_id;
  Stopwatch down;
  std::string last = cause.message;
  for (;;) {
    {
      std::lock_guard g(error_lock_);
      if (error_) return *error_;  // e.g. the guest died meanwhile
    }
    double left = double(recovery_.timeout.count()) - down.elapsed_ms();
    if (left <= 0)
      return Error::sys(ETIMEDOUT, strf("post-copy: the link to the source broke (%s) and was not restored within "
                                        "%lld ms (last: %s); the VM is lost",
                                        cause.message.c_str(), (long long)recovery_.timeout.count(), last.c_str()));
    // A guest that dies meanwhile (failed()) ends the wait at once.
    auto next = recovery_.accept(transport::Timeout(int64_t(left) + 1), ending_.get_token());
    if (!next) {
      last = next.error().message;
      continue;
    }
    if (next->negotiated().session_id != id) {
      last = strf("session %016llx joined while waiting for session %016llx",
                  (unsigned long long)next->negotiated().session_id, (unsigned long long)id);
      continue;  // dropped: its channels close with it
    }
    {
      std::lock_guard g(link_lock_);
      session_ = std::move(*next);
    }
    {
      std::lock_guard g(error_lock_);
      link_error_.reset();
    }
    if (auto r = resume_link(); !r) {
      last = r.error().message;
      continue;
    }
    std::lock_guard g(inflight_lock_);
    stats_.reconnects++;
    stats_.link_down_ms += down.elapsed_ms();
    return ok();
  }
}

Result<void> PostcopyDestination::resume_link() {
  const Peer control = Peer::control(session_, timeout_);
  if (uint64_t ns = resumed_ns_; ns != 0) LM_TRY(control.send(Resumed{ns, 0}));
  dt::RangeList still;
  for (const auto& r : needed_.ranges())
    for (uint64_t a = r.start; a < r.end; a += kPageSize)
      if (!is_installed(a)) dt::append_merge(still, {a, a + kPageSize});
  LM_TRY(send_page_bitmaps(control, session_.mappings(), still));
  LM_TRY(control.send(Ready{now_ns(), installed_count_.load()}));
  bulk_done_ = 0;  // each bulk channel of the new session ends anew
  std::vector<uint64_t> waiting;
  {
    std::lock_guard g(inflight_lock_);
    for (const auto& [addr, at] : inflight_) waiting.push_back(addr);
  }
  std::sort(waiting.begin(), waiting.end());
  {
    std::lock_guard g(link_lock_);
    link_up_ = true;
  }
  uint64_t id = 0;
  request(waiting, id);
  spawn_link_threads();
  return ok();
}

bool PostcopyDestination::link_broken() {
  std::lock_guard g(error_lock_);
  return error_.has_value() || link_error_.has_value();
}

Result<void> PostcopyDestination::recover_link() {
  {
    std::lock_guard g(error_lock_);
    if (error_) return *error_;
    if (!link_error_) return ok();
  }
  return recover();
}

Result<void> PostcopyDestination::wait_complete(transport::Timeout limit) {
  Stopwatch waited;
  while (true) {
    {
      std::lock_guard g(error_lock_);
      if (error_) return *error_;
    }
    bool broken = false;
    {
      std::lock_guard g(error_lock_);
      broken = link_error_.has_value();
    }
    if (broken) {
      LM_TRY(recover());
      continue;
    }
    auto complete = [&] { return installed_count_ == needed_.count() && bulk_done_ == session_.bulk_count(); };
    if (complete()) break;
    if (waited.elapsed_ms() > double(limit.count()))
      return Error::msg(strf("post-copy: incomplete after %lld ms: %llu of %llu pages installed",
                             (long long)limit.count(), (unsigned long long)installed_count_.load(),
                             (unsigned long long)needed_.count()));
    // Woken by progressed(): the last page, a bulk channel's end, a failure.
    std::unique_lock g(progress_lock_);
    progress_.wait_for(g, std::chrono::duration<double, std::milli>(double(limit.count()) - waited.elapsed_ms()),
                       [&] { return complete() || stop_ || link_stop_.stop_requested(); });
  }
  stats_.complete_ms = double(now_ns() - started_ns_) * 1e-6;
  stop_ = true;
  stop_link_threads();
  for (auto& t : threads_) t.join();
  threads_.clear();
  if (error_) return *error_;
  // Every needed page is present: drop the registration (pages never touched
  // are zero and fault normally from now on). The guest closed its copy of
  // the uffd after the handoff, so closing ours ends it.
  uffdio_range r{ram_.range.start, ram_.range.bytes()};
  (void)ioctl(ram_.uffd.get(), UFFDIO_UNREGISTER, &r);
  ram_.uffd.reset();
  return ok();
}

PostcopyDestinationStats PostcopyDestination::stats() {
  std::lock_guard g(inflight_lock_);
  return stats_;
}

}  // namespace lm::engine
