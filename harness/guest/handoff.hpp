// Resume handoff between a destination engine and `livemig-guest --resume`.
//
//   engine                                   guest (--resume --handoff PATH)
//   HandoffServer::listen(PATH)
//                                  <-- connect (SOCK_SEQPACKET)
//   accept(): HandoffOffer  -->
//                                      makes its RAM at ram_addr (MAP_FIXED_NOREPLACE),
//                                      the first kind offered that works: a hugetlb
//                                      memfd, anonymous THP memory, a shmem memfd
//                                      (+ userfaultfd registered MISSING (+MINOR) when
//                                      wanted); writes every page in (pre-copy)
//                            <-- HandoffReply (kind, population time)
//                                + SCM_RIGHTS [memfd] / [memfd, uffd] / nothing (anon-thp:
//                                the engine writes with process_vm_writev into this pid)
//   (fill the RAM / serve faults)
//   go():      HandoffGo     -->
//                                      validate header in RAM, start writers
//   wait_running():          <-- HandoffRunning (status, CLOCK_MONOTONIC ns)
//                                      print READY, serve the control socket
//
// All messages are fixed-layout structs (x86_64, little-endian), each checked
// for magic and protocol version.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>

#include "common/error.hpp"
#include "common/fd.hpp"

namespace lm::guest {

inline constexpr uint32_t kHandoffMagic = 0x4f444e48;  // "HNDO"
inline constexpr uint16_t kHandoffVersion = 2;  // 2: RAM kinds, population time

enum class UffdWanted { no, yes };

// What the guest's RAM is. The engine offers the kinds it can fill; the
// guest takes the first that works in the order hugetlb, anon_thp, shmem.
enum class RamKind : uint32_t {
  shmem = 1,     // a memfd (post-copy: userfaultfd MISSING/MINOR; the fallback)
  hugetlb = 2,   // a memfd on reserved 2 MiB pages (MFD_HUGETLB)
  anon_thp = 3,  // anonymous private memory with MADV_HUGEPAGE, no fd: written via the guest's pid
};
std::string_view ram_kind_name(RamKind k);

struct HandoffOffer {  // engine -> guest
  uint32_t magic;
  uint16_t version;
  uint16_t flags;  // kOffer*: a userfaultfd is wanted; the kinds besides shmem the guest may use; populate
  uint64_t ram_addr;
  uint64_t ram_size;
};
static_assert(sizeof(HandoffOffer) == 24 && std::is_trivially_copyable_v<HandoffOffer>);

struct HandoffReply {  // guest -> engine, with SCM_RIGHTS [memfd], [memfd, uffd] or none (anon_thp)
  uint32_t magic;
  uint16_t version;
  uint16_t flags;  // bit 0: uffd attached; bit 1: MINOR mode registered
  int32_t pid;
  int32_t error;   // errno of the failure, or 0; -1 for a non-system failure
  uint64_t uffd_features;
  uint64_t population_ns;  // writing every page in before this reply (0: not populated)
  uint32_t ram_kind;       // RamKind
  uint32_t reserved;
  char message[224];  // failure text when error != 0
};
static_assert(sizeof(HandoffReply) == 264 && std::is_trivially_copyable_v<HandoffReply>);

// release: the engine is done with the resumed guest (its RAM complete and
// verified); from then on the guest no longer depends on the engine.
enum class HandoffCommand : uint32_t { go = 1, abort = 2, release = 3 };
struct HandoffGo {  // engine -> guest
  uint32_t magic;
  uint32_t command;
};
static_assert(sizeof(HandoffGo) == 8);

struct HandoffRunning {  // guest -> engine once its writers run again (or it failed)
  uint32_t magic;
  int32_t status;  // 0 = running; otherwise failed (message says why)
  uint64_t resumed_ns;  // CLOCK_MONOTONIC when the writers were started
  char message[240];
};
static_assert(sizeof(HandoffRunning) == 256);

inline constexpr uint16_t kOfferUffd = 1;
inline constexpr uint16_t kOfferHugetlb = 2;
inline constexpr uint16_t kOfferAnonThp = 4;
inline constexpr uint16_t kOfferPopulate = 8;  // write every page in before the reply
inline constexpr uint16_t kReplyHasUffd = 1;
inline constexpr uint16_t kReplyMinor = 2;

// What the engine receives: the guest's RAM (shmem, hugetlb: a memfd, map
// it MAP_SHARED to fill it; anon_thp: no fd, write into `pid` at the RAM
// address) and, when asked for, the userfaultfd registered on the guest's
// mapping (MISSING always; MINOR when minor_registered).
struct GuestRam {
  RamKind kind = RamKind::shmem;
  UniqueFd memfd;
  UniqueFd uffd;
  pid_t pid = -1;
  bool minor_registered = false;
  uint64_t uffd_features = 0;
  uint64_t population_ns = 0;
};

// What the engine asks of the resuming guest's RAM.
struct RamOffer {
  UffdWanted uffd = UffdWanted::no;
  bool hugetlb = true;   // when the host has enough free reserved huge pages
  bool anon_thp = true;  // when transparent huge pages are not disabled
  bool populate = true;  // write every page in before the reply (never with a uffd)
};

class HandoffServer {
 public:
  // Binds a unix SOCK_SEQPACKET socket at `path` (an existing socket file there
  // is replaced) and listens. The path is removed by the destructor.
  static Result<HandoffServer> listen(const std::string& path);

  // Waits up to timeout_ms for a resuming guest to connect, offers it the RAM
  // address and size, and returns the fds it sends back. `stopped` (optional)
  // is asked every 200 ms while waiting; true ends the wait with ECANCELED.
  Result<GuestRam> accept(uint64_t ram_addr, uint64_t ram_size, const RamOffer& offer, int timeout_ms,
                          const std::function<bool()>& stopped = {});
  // The same offering a shmem memfd only, not populated.
  Result<GuestRam> accept(uint64_t ram_addr, uint64_t ram_size, UffdWanted uffd, int timeout_ms,
                          const std::function<bool()>& stopped = {});
  // Lets the guest run (it validates its state in RAM, then resumes writers).
  Result<void> go();
  // Tells the guest to exit without running.
  Result<void> abort();
  // After a verified migration: the guest runs on its own. A guest whose
  // engine hangs up before this exits (its memory may be incomplete).
  Result<void> release();
  // Waits for the guest's report after go(); returns its CLOCK_MONOTONIC
  // resume time, or the guest's error (e.g. a bad header in RAM).
  Result<uint64_t> wait_running(int timeout_ms, const std::function<bool()>& stopped = {});

  const std::string& path() const { return path_; }

  HandoffServer(HandoffServer&&) noexcept = default;
  HandoffServer& operator=(HandoffServer&&) noexcept = default;
  ~HandoffServer();

 private:
  HandoffServer() = default;
  Result<void> send_command(HandoffCommand c);
  std::string path_;
  UniqueFd listen_fd_;
  UniqueFd conn_;
};

// Guest side: what the resuming guest got from the handoff.
struct ResumeRam {
  void* base = nullptr;
  uint64_t ram_addr = 0;
  uint64_t ram_size = 0;
  UniqueFd conn;  // to send HandoffRunning later
};

// Connects to the engine at `path`, receives the offer, makes its RAM at the
// offered address (and the userfaultfd), sends what the engine needs, and waits
// for `go` (abort or a closed socket is an error). Failures after the offer
// are also reported to the engine in the reply.
Result<ResumeRam> handoff_resume(const std::string& path, int timeout_ms);
// Reports the outcome of the resume to the engine (best effort).
void handoff_report_running(int conn, const Result<void>& outcome, uint64_t resumed_ns);
// After the report: reads the engine's next word on `conn` (readable). ok:
// released; an error: the engine hung up (or sent garbage) before releasing.
Result<void> handoff_read_release(int conn);

}  // namespace lm::guest
