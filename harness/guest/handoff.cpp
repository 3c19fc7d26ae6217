#include "harness/guest/handoff.hpp"

#include <fcntl.h>
#include <linux/memfd.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "common/clock.hpp"
#include "common/populate.hpp"
#include "harness/guest/layout.hpp"
#include "harness/guest/unix_socket.hpp"

namespace lm::guest {

std::string_view ram_kind_name(RamKind k) {
  switch (k) {
    case RamKind::shmem: return "shmem";
    case RamKind::hugetlb: return "hugetlb";
    case RamKind::anon_thp: return "anon-thp";
  }
  return "unknown";
}

namespace {

// Receives one fixed-size message (SOCK_SEQPACKET keeps boundaries) and up to
// two fds sent with it.
Result<void> recv_message(int fd, void* msg, size_t len, UniqueFd* fds, size_t max_fds, const std::string& what) {
  iovec iov{msg, len};
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = control;
  mh.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return Error::from_errno(strf("receive from %s", what.c_str()));
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const int* in = reinterpret_cast<const int*>(CMSG_DATA(c));
    for (size_t i = 0; i < count; i++) {
      if (i < max_fds) fds[i].reset(in[i]);
      else ::close(in[i]);
    }
  }
  if (n == 0) return Error::msg(strf("%s closed the connection", what.c_str()));
  if (size_t(n) != len || (mh.msg_flags & MSG_TRUNC))
    return Error::msg(strf("%s sent a %zd-byte message, expected %zu", what.c_str(), n, len));
  return ok();
}

Result<void> send_with_fds(int fd, const void* msg, size_t len, const int* fds, size_t nfds, const std::string& what) {
  iovec iov{const_cast<void*>(msg), len};
  alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))];
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (nfds > 0) {
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    std::memcpy(CMSG_DATA(c), fds, nfds * sizeof(int));
  }
  if (::sendmsg(fd, &mh, MSG_NOSIGNAL) != ssize_t(len)) return Error::from_errno(strf("send to %s", what.c_str()));
  return ok();
}

template <size_t N>
void copy_message(char (&dst)[N], const std::string& text) {
  std::memset(dst, 0, N);
  std::memcpy(dst, text.data(), std::min(text.size(), N - 1));
}

template <size_t N>
std::string message_text(const char (&src)[N]) {
  return std::string(src, strnlen(src, N));
}

// wait_readable() in 200 ms slices, asking `stopped` between them.
Result<void> wait_readable_unless(int fd, int timeout_ms, const std::string& what, const std::function<bool()>& stopped) {
  if (!stopped) return wait_readable(fd, timeout_ms, what);
  constexpr int kSliceMs = 200;
  const uint64_t deadline = now_ns() + uint64_t(timeout_ms) * 1000000;
  for (;;) {
    if (stopped()) return Error{ECANCELED, what + ": stopped"};
    const int64_t left_ms = (int64_t(deadline) - int64_t(now_ns())) / 1000000;
    if (left_ms <= kSliceMs) {
      auto r = wait_readable(fd, int(std::max<int64_t>(left_ms, 0)), what);
      if (!r && r.error().code == ETIMEDOUT)
        return Error::sys(ETIMEDOUT, strf("%s: no answer within %d ms", what.c_str(), timeout_ms));
      return r;
    }
    auto r = wait_readable(fd, kSliceMs, what);
    if (r || r.error().code != ETIMEDOUT) return r;
  }
}

}  // namespace

Result<HandoffServer> HandoffServer::listen(const std::string& path) {
  HandoffServer s;
  s.listen_fd_ = LM_TRY_CTX(unix_listen(path, SOCK_SEQPACKET), "handoff server");
  s.path_ = path;
  return s;
}

HandoffServer::~HandoffServer() {
  if (listen_fd_.valid()) ::unlink(path_.c_str());
}

Result<GuestRam> HandoffServer::accept(uint64_t ram_addr, uint64_t ram_size, UffdWanted uffd, int timeout_ms,
                                       const std::function<bool()>& stopped) {
  return accept(ram_addr, ram_size, RamOffer{uffd, false, false, false}, timeout_ms, stopped);
}

Result<GuestRam> HandoffServer::accept(uint64_t ram_addr, uint64_t ram_size, const RamOffer& want, int timeout_ms,
                                       const std::function<bool()>& stopped) {
  std::string what = strf("resuming guest on %s", path_.c_str());
  LM_TRY(wait_readable_unless(listen_fd_.get(), timeout_ms, "wait for a " + what, stopped));
  conn_.reset(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!conn_.valid()) return Error::from_errno("accept " + what);
  ucred cred{};
  socklen_t cred_len = sizeof cred;
  if (::getsockopt(conn_.get(), SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0)
    return Error::from_errno("SO_PEERCRED of " + what);
  what = strf("resuming guest pid %d on %s", cred.pid, path_.c_str());

  const bool uffd = want.uffd == UffdWanted::yes;
  const uint16_t flags = uint16_t((uffd ? kOfferUffd : 0) | (want.hugetlb && !uffd ? kOfferHugetlb : 0) |
                                  (want.anon_thp && !uffd ? kOfferAnonThp : 0) |
                                  (want.populate && !uffd ? kOfferPopulate : 0));
  HandoffOffer offer{kHandoffMagic, kHandoffVersion, flags, ram_addr, ram_size};
  LM_TRY(send_all(conn_.get(), &offer, sizeof offer, what));
  // Populating takes its time on top (measured here: up to ~5 s per GiB of fresh memory).
  const int reply_ms = timeout_ms + ((flags & kOfferPopulate) ? int(ram_size * 8 / (1ull << 20)) : 0);
  LM_TRY(wait_readable_unless(conn_.get(), reply_ms, "reply of " + what, stopped));
  HandoffReply reply{};
  UniqueFd fds[2];
  LM_TRY(recv_message(conn_.get(), &reply, sizeof reply, fds, 2, what));
  if (reply.magic != kHandoffMagic || reply.version != kHandoffVersion)
    return Error::msg(strf("%s: bad reply (magic 0x%x, version %u)", what.c_str(), reply.magic, reply.version));
  if (reply.error != 0) {
    std::string text = strf("%s failed: %s", what.c_str(), message_text(reply.message).c_str());
    return reply.error > 0 ? Error{reply.error, text} : Error::msg(text);
  }
  GuestRam ram;
  ram.pid = reply.pid;
  ram.kind = RamKind(reply.ram_kind);
  ram.population_ns = reply.population_ns;
  const bool offered = ram.kind == RamKind::shmem || (ram.kind == RamKind::hugetlb && (flags & kOfferHugetlb)) ||
                       (ram.kind == RamKind::anon_thp && (flags & kOfferAnonThp));
  if (!offered)
    return Error::msg(strf("%s: replied with RAM kind %u, which was not offered", what.c_str(), reply.ram_kind));
  ram.memfd = std::move(fds[0]);
  if (ram.kind != RamKind::anon_thp && !ram.memfd.valid()) return Error::msg(what + ": reply carried no memfd");
  if (uffd) {
    if (!(reply.flags & kReplyHasUffd) || !fds[1].valid()) return Error::msg(what + ": reply carried no userfaultfd");
    ram.uffd = std::move(fds[1]);
    ram.minor_registered = reply.flags & kReplyMinor;
    ram.uffd_features = reply.uffd_features;
  }
  return ram;
}

Result<void> HandoffServer::send_command(HandoffCommand c) {
  if (!conn_.valid()) return Error::msg(strf("handoff %s: no guest connected", path_.c_str()));
  HandoffGo msg{kHandoffMagic, uint32_t(c)};
  return send_all(conn_.get(), &msg, sizeof msg, strf("resuming guest on %s", path_.c_str()));
}

Result<void> HandoffServer::go() { return send_command(HandoffCommand::go); }
Result<void> HandoffServer::abort() { return send_command(HandoffCommand::abort); }
Result<void> HandoffServer::release() { return send_command(HandoffCommand::release); }

Result<uint64_t> HandoffServer::wait_running(int timeout_ms, const std::function<bool()>& stopped) {
  std::string what = strf("resuming guest on %s", path_.c_str());
  LM_TRY(wait_readable_unless(conn_.get(), timeout_ms, "running report of " + what, stopped));
  HandoffRunning msg{};
  LM_TRY(recv_message(conn_.get(), &msg, sizeof msg, nullptr, 0, what));
  if (msg.magic != kHandoffMagic) return Error::msg(what + ": bad running report");
  if (msg.status != 0) return Error::msg(strf("%s: %s", what.c_str(), message_text(msg.message).c_str()));
  return msg.resumed_ns;
}

namespace {

struct MappedRam {
  RamKind kind = RamKind::shmem;
  UniqueFd memfd;  // none for anon_thp
  UniqueFd uffd;
  void* base = nullptr;
  uint64_t bytes = 0;
  bool minor = false;
  uint64_t features = 0;
  uint64_t population_ns = 0;

  MappedRam() = default;
  MappedRam(MappedRam&& o) noexcept
      : kind(o.kind), memfd(std::move(o.memfd)), uffd(std::move(o.uffd)), base(std::exchange(o.base, nullptr)),
        bytes(o.bytes), minor(o.minor), features(o.features), population_ns(o.population_ns) {}
  MappedRam& operator=(MappedRam&&) = delete;
  // Unmapped unless released (a kind that did not work makes room for the next).
  ~MappedRam() {
    if (base) ::munmap(base, bytes);
  }
  void* release() { return std::exchange(base, nullptr); }
};

Result<UniqueFd> open_uffd() {
  UniqueFd fd(int(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  if (!fd.valid()) return Error::from_errno("userfaultfd()");
  return fd;
}

// The features UFFDIO_API may request are only learnt from an API handshake,
// which can be done once per fd: probe on a throw-away fd.
Result<uint64_t> probe_uffd_features() {
  UniqueFd fd = LM_TRY(open_uffd());
  uffdio_api api{UFFD_API, 0, 0};
  if (::ioctl(fd.get(), UFFDIO_API, &api) != 0) return Error::from_errno("UFFDIO_API (probe)");
  return uint64_t(api.features);
}

Result<void> register_uffd(MappedRam& r, uint64_t addr, uint64_t size) {
  uint64_t supported = LM_TRY(probe_uffd_features());
  r.uffd = LM_TRY(open_uffd());
  uffdio_api api{UFFD_API, supported & (UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_THREAD_ID), 0};
  if (::ioctl(r.uffd.get(), UFFDIO_API, &api) != 0) return Error::from_errno("UFFDIO_API");
  r.features = api.features;
  r.minor = api.features & UFFD_FEATURE_MINOR_SHMEM;
  uffdio_register reg{};
  reg.range.start = addr;
  reg.range.len = size;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING | (r.minor ? UFFDIO_REGISTER_MODE_MINOR : 0);
  if (::ioctl(r.uffd.get(), UFFDIO_REGISTER, &reg) != 0)
    return Error::from_errno(strf("UFFDIO_REGISTER guest RAM 0x%lx size %lu", (unsigned long)addr, (unsigned long)size));
  return ok();
}

constexpr uint64_t kHugePage = 2ull << 20;

uint64_t read_u64_file(const char* path) {
  FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  unsigned long long v = 0;
  if (std::fscanf(f, "%llu", &v) != 1) v = 0;
  std::fclose(f);
  return v;
}

bool thp_disabled() {
  FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
  if (!f) return true;
  char line[128] = {};
  bool never = std::fgets(line, sizeof line, f) && std::strstr(line, "[never]");
  std::fclose(f);
  return never;
}

// Why hugetlb cannot hold this RAM, or empty.
std::string hugetlb_refusal(uint64_t addr, uint64_t size) {
  if ((addr | size) % kHugePage != 0) return "RAM address or size is not 2 MiB aligned";
  const uint64_t free_pages = read_u64_file("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
  if (free_pages * kHugePage < size)
    return strf("%llu free reserved 2 MiB pages, %llu needed", (unsigned long long)free_pages,
                (unsigned long long)(size / kHugePage));
  return {};
}

Result<MappedRam> map_memfd(RamKind kind, uint64_t addr, uint64_t size) {
  MappedRam r;
  r.kind = kind;
  r.bytes = size;
  const unsigned flags = MFD_CLOEXEC | (kind == RamKind::hugetlb ? MFD_HUGETLB | MFD_HUGE_2MB : 0);
  r.memfd.reset(::memfd_create("livemig-guest-ram", flags));
  if (!r.memfd.valid()) return Error::from_errno(strf("memfd_create (%s)", std::string(ram_kind_name(kind)).c_str()));
  if (::ftruncate(r.memfd.get(), off_t(size)) != 0)
    return Error::from_errno(strf("ftruncate memfd to %lu bytes", (unsigned long)size));
  r.base = LM_TRY(map_guest_ram(addr, size, r.memfd.get()));
  return r;
}

Result<MappedRam> map_anon_thp(uint64_t addr, uint64_t size) {
  MappedRam r;
  r.kind = RamKind::anon_thp;
  r.bytes = size;
  r.base = LM_TRY(map_guest_ram(addr, size, -1));
  if (::madvise(r.base, size, MADV_HUGEPAGE) != 0)
    return Error::from_errno(strf("madvise(MADV_HUGEPAGE) guest RAM 0x%lx size %lu", (unsigned long)addr,
                                  (unsigned long)size));
  return r;
}

// One kind of RAM, written in when asked (the time it took is reported).
Result<MappedRam> make_ram(RamKind kind, uint64_t addr, uint64_t size, bool populate) {
  MappedRam r = LM_TRY(kind == RamKind::anon_thp ? map_anon_thp(addr, size) : map_memfd(kind, addr, size));
  if (!populate) return r;
  r.population_ns = LM_TRY(populate_for_write(r.base, size));
  return r;
}

// The first kind offered that works: hugetlb, anon_thp, shmem (post-copy:
// shmem with its userfaultfd, never populated). A kind that fails makes room
// for the next; only shmem's failure is the guest's.
Result<MappedRam> map_ram(uint64_t addr, uint64_t size, uint16_t offer_flags) {
  const bool populate = (offer_flags & kOfferPopulate) && !(offer_flags & kOfferUffd);
  if (offer_flags & kOfferUffd) {
    MappedRam r = LM_TRY(make_ram(RamKind::shmem, addr, size, false));
    LM_TRY(register_uffd(r, addr, size));
    return r;
  }
  if ((offer_flags & kOfferHugetlb) && hugetlb_refusal(addr, size).empty()) {
    auto r = make_ram(RamKind::hugetlb, addr, size, populate);
    if (r) return r;
  }
  if ((offer_flags & kOfferAnonThp) && !thp_disabled()) {
    auto r = make_ram(RamKind::anon_thp, addr, size, populate);
    if (r) return r;
  }
  return make_ram(RamKind::shmem, addr, size, populate);
}

}  // namespace

Result<ResumeRam> handoff_resume(const std::string& path, int timeout_ms) {
  std::string what = strf("engine on %s", path.c_str());
  UniqueFd conn = LM_TRY_CTX(unix_connect(path, SOCK_SEQPACKET, timeout_ms), "resume handoff");
  LM_TRY(wait_readable(conn.get(), timeout_ms, "offer of " + what));
  HandoffOffer offer{};
  LM_TRY(recv_message(conn.get(), &offer, sizeof offer, nullptr, 0, what));
  if (offer.magic != kHandoffMagic || offer.version != kHandoffVersion)
    return Error::msg(strf("%s: bad offer (magic 0x%x, version %u)", what.c_str(), offer.magic, offer.version));

  HandoffReply reply{kHandoffMagic, kHandoffVersion, 0, int32_t(::getpid()), 0, 0, 0, 0, 0, {}};
  auto mapped = map_ram(offer.ram_addr, offer.ram_size, offer.flags);
  if (!mapped) {
    reply.error = mapped.error().code ? mapped.error().code : -1;
    copy_message(reply.message, mapped.error().message);
    (void)send_with_fds(conn.get(), &reply, sizeof reply, nullptr, 0, what);
    return std::move(mapped).error();
  }
  int fds[2] = {mapped->memfd.get(), mapped->uffd.get()};
  size_t nfds = mapped->uffd.valid() ? 2 : mapped->memfd.valid() ? 1 : 0;
  if (mapped->uffd.valid()) reply.flags |= kReplyHasUffd;
  if (mapped->minor) reply.flags |= kReplyMinor;
  reply.uffd_features = mapped->features;
  reply.population_ns = mapped->population_ns;
  reply.ram_kind = uint32_t(mapped->kind);
  LM_TRY(send_with_fds(conn.get(), &reply, sizeof reply, fds, nfds, what));

  // The engine may take long to fill RAM before go: no timeout here, only a
  // closed connection ends the wait.
  LM_TRY(wait_readable(conn.get(), -1, "go from " + what));
  HandoffGo go{};
  LM_TRY(recv_message(conn.get(), &go, sizeof go, nullptr, 0, what));
  if (go.magic != kHandoffMagic) return Error::msg(what + ": bad go message");
  if (go.command != uint32_t(HandoffCommand::go)) return Error::msg(what + " aborted the resume");
  ResumeRam out;
  out.base = mapped->release();
  out.ram_addr = offer.ram_addr;
  out.ram_size = offer.ram_size;
  out.conn = std::move(conn);
  return out;
}

void handoff_report_running(int conn, const Result<void>& outcome, uint64_t resumed_ns) {
  HandoffRunning msg{kHandoffMagic, outcome.ok() ? 0 : 1, resumed_ns, {}};
  if (!outcome.ok()) copy_message(msg.message, outcome.error().message);
  (void)send_all(conn, &msg, sizeof msg, "engine");
}

Result<void> handoff_read_release(int conn) {
  HandoffGo msg{};
  LM_TRY(recv_message(conn, &msg, sizeof msg, nullptr, 0, "the engine that resumed this guest"));
  if (msg.magic != kHandoffMagic || msg.command != uint32_t(HandoffCommand::release))
    return Error::msg(strf("the engine that resumed this guest sent command %u, not release", msg.command));
  return ok();
}

}  // namespace lm::guest
