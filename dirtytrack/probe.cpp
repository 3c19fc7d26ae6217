#include "dirtytrack/probe.hpp"

#include <cstdlib>
#include <fcntl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "common/fd.hpp"
#include "common/strf.hpp"
#include "dirtytrack/kernel_abi.hpp"

namespace lm::dt {

namespace {

Capability yes(std::string detail) { return {true, std::move(detail)}; }
Capability no(std::string why) { return {false, std::move(why)}; }
std::string errtext(int err) { return std::strerror(err); }

// An anonymous mapping owned for the length of a probe.
struct Pages {
  explicit Pages(size_t n) : len(n * 4096) {
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    base = p == MAP_FAILED ? nullptr : static_cast<char*>(p);
  }
  ~Pages() {
    if (base) ::munmap(base, len);
  }
  char* base;
  size_t len;
};

// One PAGEMAP_SCAN of our own [start, start + len) into `regions`.
long scan_self(int pagemap, uint64_t start, uint64_t len, page_region* regions, uint64_t n, uint64_t flags,
               uint64_t category) {
  pm_scan_arg arg{};
  arg.size = sizeof arg;
  arg.flags = flags;
  arg.start = start;
  arg.end = start + len;
  arg.vec = uint64_t(regions);
  arg.vec_len = n;
  arg.category_mask = arg.return_mask = category;
  return ::ioctl(pagemap, PAGEMAP_SCAN, &arg);
}

std::string read_first_line(const char* path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return {};
  return line;
}

// "CONFIG_X=y" / "# CONFIG_X is not set" from /proc/config.gz, when readable.
std::string kernel_config(const char* option) {
  FILE* p = ::popen("zcat /proc/config.gz 2>/dev/null", "r");
  if (!p) return {};
  std::string want_set = std::string(option) + "=";
  std::string want_unset = std::string("# ") + option + " is not set";
  char line[512];
  std::string found;
  while (std::fgets(line, sizeof line, p)) {
    std::string s(line);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    if (s.rfind(want_set, 0) == 0 || s == want_unset) found = s;
  }
  ::pclose(p);
  return found;
}

void probe_userfaultfd(DirtyTrackCaps& c) {
  UniqueFd fd(int(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)));
  if (!fd.valid()) {
    int err = errno;
    c.userfaultfd = no(strf("userfaultfd(): %s%s", errtext(err).c_str(),
                            err == EPERM ? " (vm.unprivileged_userfaultfd=0 and no CAP_SYS_PTRACE)"
                            : err == ENOSYS ? " (CONFIG_USERFAULTFD not set)"
                                            : ""));
    const char* why = "needs userfaultfd";
    c.uffd_wp_async = c.uffd_wp_unpopulated = c.uffd_missing_shmem = c.uffd_minor_shmem = no(why);
    return;
  }
  uffdio_api api{};
  api.api = UFFD_API;
  if (::ioctl(fd.get(), UFFDIO_API, &api) != 0) {
    c.userfaultfd = no(strf("UFFDIO_API: %s", errtext(errno).c_str()));
    return;
  }
  c.uffd_features = api.features;
  c.userfaultfd = yes(strf("features 0x%llx", (unsigned long long)api.features));
  auto feature = [&](uint64_t bit, const char* name) {
    return (api.features & bit) ? yes(strf("%s offered", name))
                                : no(strf("kernel does not offer %s (features 0x%llx)", name,
                                          (unsigned long long)api.features));
  };
  c.uffd_wp_unpopulated = feature(UFFD_FEATURE_WP_UNPOPULATED, "UFFD_FEATURE_WP_UNPOPULATED");
  c.uffd_missing_shmem = feature(UFFD_FEATURE_MISSING_SHMEM, "UFFD_FEATURE_MISSING_SHMEM");
  c.uffd_minor_shmem = feature(UFFD_FEATURE_MINOR_SHMEM, "UFFD_FEATURE_MINOR_SHMEM");
  c.uffd_wp_async = feature(UFFD_FEATURE_WP_ASYNC, "UFFD_FEATURE_WP_ASYNC");
}

// End to end on our own memory: register 4 pages for async WP, protect
// them, write page 2, and expect PAGEMAP_SCAN to return exactly page 2.
Capability probe_wp_async_scan(const DirtyTrackCaps& c) {
  if (!c.uffd_wp_async.available) return c.uffd_wp_async;
  if (!c.pagemap_scan.available) return no("needs PAGEMAP_SCAN");
  UniqueFd uffd(int(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY)));
  if (!uffd.valid()) return no(strf("userfaultfd(): %s", errtext(errno).c_str()));
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
  if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0)
    return no(strf("UFFDIO_API with WP_ASYNC|WP_UNPOPULATED: %s", errtext(errno).c_str()));
  Pages pages(4);
  if (!pages.base) return no("mmap failed");
  std::memset(pages.base, 1, pages.len);
  uffdio_register reg{};
  reg.range = {uint64_t(pages.base), pages.len};
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(uffd.get(), UFFDIO_REGISTER, &reg) != 0)
    return no(strf("UFFDIO_REGISTER (WP): %s", errtext(errno).c_str()));
  uffdio_writeprotect wp{};
  wp.range = reg.range;
  wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
  if (::ioctl(uffd.get(), UFFDIO_WRITEPROTECT, &wp) != 0)
    return no(strf("UFFDIO_WRITEPROTECT: %s", errtext(errno).c_str()));
  pages.base[2 * 4096] = 7;
  UniqueFd pm(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  page_region regions[4];
  long n = scan_self(pm.get(), uint64_t(pages.base), pages.len, regions, 4, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
                     PAGE_IS_WRITTEN);
  if (n < 0) return no(strf("PAGEMAP_SCAN on a WP_ASYNC range: %s", errtext(errno).c_str()));
  if (n != 1 || regions[0].start != uint64_t(pages.base) + 2 * 4096 || regions[0].end != regions[0].start + 4096)
    return no(strf("PAGEMAP_SCAN found %ld written regions instead of exactly the one written page", n));
  return yes("async write-protect + PAGEMAP_SCAN found exactly the written page");
}

void probe_pagemap_scan(DirtyTrackCaps& c) {
  UniqueFd pm(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!pm.valid()) {
    c.pagemap_scan = no(strf("open /proc/self/pagemap: %s", errtext(errno).c_str()));
    return;
  }
  Pages pages(2);
  pages.base[0] = 1;  // page 0 present, page 1 untouched
  page_region regions[2];
  long n = scan_self(pm.get(), uint64_t(pages.base), pages.len, regions, 2, 0, PAGE_IS_PRESENT);
  if (n < 0) {
    int err = errno;
    c.pagemap_scan = no(strf("ioctl PAGEMAP_SCAN: %s%s", errtext(err).c_str(),
                             err == ENOTTY || err == EINVAL ? " (the kernel predates Linux 6.7)" : ""));
    return;
  }
  if (n != 1 || regions[0].start != uint64_t(pages.base) || regions[0].end != uint64_t(pages.base) + 4096) {
    c.pagemap_scan = no(strf("PAGEMAP_SCAN answered %ld regions for one present page", n));
    return;
  }
  c.pagemap_scan = yes("ioctl on /proc/PID/pagemap works");
}

Capability soft_dirty_capability() {
  Pages pages(1);
  if (!pages.base) {
    return no("mmap failed");
  }
  UniqueFd pm(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  UniqueFd clear(::open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC));
  if (!pm.valid() || !clear.valid()) {
    return no(strf("open /proc/self/pagemap or clear_refs: %s", errtext(errno).c_str()));
  }
  volatile char* p = pages.base;
  p[0] = 1;
  if (::write(clear.get(), "4", 1) != 1) {
    return no(strf("write 4 to clear_refs: %s", errtext(errno).c_str()));
  }
  p[0] = 2;  // must set the soft-dirty bit again
  uint64_t entry = 0;
  if (::pread(pm.get(), &entry, sizeof entry, off_t(uint64_t(pages.base) / 4096 * 8)) != sizeof entry) {
    return no(strf("read pagemap: %s", errtext(errno).c_str()));
  }
  if (!(entry & kPagemapPresent)) {
    return no("probe page not present after a write");
  }
  if (!(entry & kPagemapSoftDirty)) {
    std::string config = kernel_config("CONFIG_MEM_SOFT_DIRTY");
    std::string evidence = config.empty() ? "the kernel config is not readable to confirm"
                                          : "/proc/config.gz: " + config;
    return no(strf("not compiled in: clear_refs \"4\" is accepted but pagemap bit 55 stays 0 after a write (%s)",
                   evidence.c_str()));
  }
  return yes("pagemap bit 55 set by a write after clear_refs");
}

void probe_ptrace(DirtyTrackCaps& c) {
  std::string scope = read_first_line("/proc/sys/kernel/yama/ptrace_scope");
  std::string yama = scope.empty() ? "Yama not built in: same uid or CAP_SYS_PTRACE may trace"
                                   : strf("Yama ptrace_scope=%s%s", scope.c_str(),
                                          scope == "0"   ? " (classic)"
                                          : scope == "1" ? " (descendants only unless CAP_SYS_PTRACE)"
                                          : scope == "2" ? " (CAP_SYS_PTRACE only)"
                                                         : " (no ptrace at all)");
  // A plain fork (no exec: a child of our own code to seize): the child runs
  // only async-signal-safe calls, and dies with the probing thread.
  const pid_t parent = ::getpid();
  pid_t child = ::fork();
  if (child < 0) {
    c.ptrace = no(strf("fork: %s", errtext(errno).c_str()));
    return;
  }
  if (child == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    for (;;) ::pause();
  }
  bool seized = ::ptrace(PTRACE_SEIZE, child, nullptr, nullptr) == 0;
  int err = errno;
  if (seized) ::ptrace(PTRACE_DETACH, child, nullptr, nullptr);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  bool capable = false;
  {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line))
      if (line.rfind("CapEff:", 0) == 0) capable = (std::strtoull(line.c_str() + 7, nullptr, 16) >> 19) & 1;
  }
  if (!seized || scope == "3") {
    c.ptrace = no(strf("PTRACE_SEIZE of a child: %s; %s", seized ? "ok" : errtext(err).c_str(), yama.c_str()));
    return;
  }
  c.ptrace = yes(strf("%s; CAP_SYS_PTRACE %s", yama.c_str(), capable ? "held" : "not held"));
}

void probe_pidfd_getfd(DirtyTrackCaps& c) {
  UniqueFd pidfd(int(::syscall(434 /* pidfd_open */, ::getpid(), 0)));
  if (!pidfd.valid()) {
    c.pidfd_getfd = no(strf("pidfd_open: %s", errtext(errno).c_str()));
    return;
  }
  UniqueFd probe(::open("/proc/self/stat", O_RDONLY | O_CLOEXEC));
  UniqueFd dup(int(::syscall(438 /* pidfd_getfd */, pidfd.get(), probe.get(), 0)));
  if (!dup.valid()) {
    int err = errno;
    c.pidfd_getfd = no(strf("pidfd_getfd: %s%s", errtext(err).c_str(), err == ENOSYS ? " (Linux < 5.6)" : ""));
    return;
  }
  c.pidfd_getfd = yes("pidfd_open + pidfd_getfd work");
}

void probe_process_vm_readv(DirtyTrackCaps& c) {
  char src[64] = "livemig", dst[64] = {};
  iovec local{dst, sizeof dst}, remote{src, sizeof src};
  ssize_t n = ::process_vm_readv(::getpid(), &local, 1, &remote, 1, 0);
  if (n != ssize_t(sizeof src) || std::strcmp(dst, "livemig") != 0) {
    c.process_vm_readv = no(strf("process_vm_readv: %s", n < 0 ? errtext(errno).c_str() : "short read"));
    return;
  }
  c.process_vm_readv = yes("works");
}

}  // namespace

Capability probe_soft_dirty() { return soft_dirty_capability(); }

DirtyTrackCaps probe_dirtytrack(SoftDirtyProbe soft_dirty) {
  DirtyTrackCaps c;
  probe_userfaultfd(c);
  probe_pagemap_scan(c);
  c.uffd_wp_async = probe_wp_async_scan(c);
  c.soft_dirty = soft_dirty == SoftDirtyProbe::run ? soft_dirty_capability() : no("not probed");
  probe_ptrace(c);
  probe_pidfd_getfd(c);
  probe_process_vm_readv(c);
  return c;
}

}  // namespace lm::dt
