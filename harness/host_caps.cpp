#include "harness/host_caps.hpp"

#include "transport/channel.hpp"

#include <fcntl.h>
#include <linux/io_uring.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/fd.hpp"
#include "common/strf.hpp"
#include "dirtytrack/tracker.hpp"
#include "livemig_config.h"

namespace lm {

namespace {

using dt::Capability;

Capability yes(std::string d) { return {true, std::move(d)}; }
Capability no(std::string d) { return {false, std::move(d)}; }

std::string slurp(const char* path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

void probe_io_uring(HostCaps& h) {
  std::string disabled = slurp("/proc/sys/kernel/io_uring_disabled");
  io_uring_params params{};
  UniqueFd ring(int(::syscall(SYS_io_uring_setup, 4, &params)));
  if (!ring.valid()) {
    int err = errno;
    h.io_uring = no(strf("io_uring_setup: %s%s", std::strerror(err),
                         disabled.empty() || disabled == "0" ? ""
                                                             : (" (kernel.io_uring_disabled=" + disabled + ")").c_str()));
    return;
  }
  constexpr unsigned kOps = 256;
  std::vector<char> buf(sizeof(io_uring_probe) + kOps * sizeof(io_uring_probe_op), 0);
  auto* probe = reinterpret_cast<io_uring_probe*>(buf.data());
  if (::syscall(SYS_io_uring_register, ring.get(), IORING_REGISTER_PROBE, probe, kOps) != 0) {
    h.io_uring = no(strf("IORING_REGISTER_PROBE: %s", std::strerror(errno)));
    return;
  }
  const std::pair<const char*, unsigned> wanted[] = {
      {"SEND", IORING_OP_SEND},           {"RECV", IORING_OP_RECV},       {"SENDMSG", IORING_OP_SENDMSG},
      {"RECVMSG", IORING_OP_RECVMSG},     {"SEND_ZC", IORING_OP_SEND_ZC}, {"SENDMSG_ZC", IORING_OP_SENDMSG_ZC},
      {"READ_FIXED", IORING_OP_READ_FIXED}, {"PROVIDE_BUFFERS", IORING_OP_PROVIDE_BUFFERS},
      {"POLL_ADD", IORING_OP_POLL_ADD},   {"TIMEOUT", IORING_OP_TIMEOUT}, {"CONNECT", IORING_OP_CONNECT},
      {"ACCEPT", IORING_OP_ACCEPT},
  };
  std::string missing;
  for (auto [name, op] : wanted) {
    bool ok = op <= probe->last_op && (probe->ops[op].flags & IO_URING_OP_SUPPORTED);
    h.io_uring_ops.push_back({name, ok});
    if (!ok) missing += std::string(missing.empty() ? "" : ",") + name;
  }
#if LM_HAVE_URING
  const char* lib = "liburing built in";
#else
  const char* lib = "but liburing was not found at build time: the io_uring transport is not built";
#endif
  h.io_uring = missing.empty() ? yes(strf("kernel supports every opcode used (features 0x%x); %s", params.features, lib))
                               : no(strf("kernel lacks opcodes: %s", missing.c_str()));
}

void probe_hugepages(HostCaps& h) {
  std::ifstream in("/proc/meminfo");
  std::string line;
  long total = -1, free_ = -1, size_kb = 0;
  while (std::getline(in, line)) {
    // "Key:   123 kB": strtol skips the blanks and stops at the unit.
    if (line.rfind("HugePages_Total:", 0) == 0) total = std::strtol(line.c_str() + 16, nullptr, 10);
    if (line.rfind("HugePages_Free:", 0) == 0) free_ = std::strtol(line.c_str() + 15, nullptr, 10);
    if (line.rfind("Hugepagesize:", 0) == 0) size_kb = std::strtol(line.c_str() + 13, nullptr, 10);
  }
  std::string thp = slurp("/sys/kernel/mm/transparent_hugepage/enabled");
  if (total <= 0)
    h.hugepages = no(strf("no hugetlb pages reserved (HugePages_Total=%ld, %ld kB); THP: %s", total, size_kb,
                          thp.c_str()));
  else
    h.hugepages = yes(strf("%ld of %ld free (%ld kB); THP: %s", free_, total, size_kb, thp.c_str()));
}

void probe_cgroup(HostCaps& h) {
  std::string controllers = slurp("/sys/fs/cgroup/cgroup.controllers");
  if (controllers.empty()) {
    // Name the cgroup v1 hierarchies mounted instead, if any.
    std::ifstream mounts("/proc/mounts");
    std::string line, v1;
    while (std::getline(mounts, line)) {
      std::istringstream in(line);
      std::string dev, dir, type;
      in >> dev >> dir >> type;
      if (type == "cgroup") v1 += (v1.empty() ? "" : ", ") + dir;
    }
    h.cgroup_v2 = no(v1.empty() ? "no cgroup v2 hierarchy at /sys/fs/cgroup"
                                : "no cgroup v2 hierarchy at /sys/fs/cgroup (cgroup v1 mounted: " + v1 +
                                      "); auto-converge uses the cgroup v1 cpu controller if mounted, else SIGSTOP/SIGCONT");
    return;
  }
  bool cpu = (" " + controllers + " ").find(" cpu ") != std::string::npos;
  h.cgroup_v2 = cpu ? yes("controllers: " + controllers)
                    : no("no cpu controller (auto-converge falls back to SIGSTOP/SIGCONT); controllers: " +
                         controllers);
}

void probe_kvm(HostCaps& h) {
  UniqueFd fd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    h.kvm = no(strf("open /dev/kvm: %s", std::strerror(errno)));
    return;
  }
  int version = ::ioctl(fd.get(), 0xAE00 /* KVM_GET_API_VERSION */, 0);
  h.kvm = yes(strf("/dev/kvm opens, API version %d", version));
}

}  // namespace

HostCaps probe_host() {
  HostCaps h;
  utsname u{};
  ::uname(&u);
  h.kernel = u.release;
  h.cpus = std::thread::hardware_concurrency();
  h.dirtytrack = dt::probe_dirtytrack();
  probe_io_uring(h);
#if LM_HAVE_DPDK
  h.dpdk = yes("libdpdk found at build time");
#else
  h.dpdk = no("libdpdk not found at build time (or -Ddpdk=disabled): the DPDK transport is not built");
#endif
  probe_hugepages(h);
  probe_cgroup(h);
  probe_kvm(h);
  for (const auto& b : dt::tracker_backends()) h.trackers.push_back({std::string(b.name), b.probe(h.dirtytrack)});
  for (const transport::Backend* b : transport::backends()) {
    transport::Probe p = b->probe();
    h.transports.push_back({std::string(b->name), {p.available, p.reason}});
  }
  return h;
}

std::vector<CapRow> cap_rows(const HostCaps& h) {
  const auto& d = h.dirtytrack;
  std::vector<CapRow> rows = {
      {"userfaultfd", d.userfaultfd},
      {"uffd WP_ASYNC", d.uffd_wp_async},
      {"uffd WP_UNPOPULATED", d.uffd_wp_unpopulated},
      {"uffd MISSING shmem", d.uffd_missing_shmem},
      {"uffd MINOR shmem", d.uffd_minor_shmem},
      {"PAGEMAP_SCAN", d.pagemap_scan},
      {"soft-dirty", d.soft_dirty},
      {"ptrace", d.ptrace},
      {"pidfd_getfd", d.pidfd_getfd},
      {"process_vm_readv", d.process_vm_readv},
      {"io_uring", h.io_uring},
      {"DPDK", h.dpdk},
      {"hugepages", h.hugepages},
      {"cgroup v2", h.cgroup_v2},
      {"/dev/kvm", h.kvm},
  };
  for (const auto& [name, cap] : h.trackers) rows.push_back({"tracker " + name, cap});
  for (const auto& [name, cap] : h.transports) rows.push_back({"transport " + name, cap});
  return rows;
}

std::string format_table(const HostCaps& h) {
  std::string out = strf("livemig check: kernel %s, %u CPUs\n\n", h.kernel.c_str(), h.cpus);
  for (const auto& r : cap_rows(h))
    out += strf("  %-22s %-4s %s\n", r.name.c_str(), r.cap.available ? "yes" : "no", r.cap.detail.c_str());
  if (!h.io_uring_ops.empty()) {
    out += "\n  io_uring opcodes:";
    for (const auto& [name, ok] : h.io_uring_ops) out += strf(" %s=%s", name.c_str(), ok ? "yes" : "no");
    out += "\n";
  }
  std::string chosen = "none";
  for (const auto& [name, cap] : h.trackers)
    if (cap.available) {
      chosen = name;
      break;
    }
  out += strf("\n  tracker 'auto' selects: %s\n", chosen.c_str());
  return out;
}

void write_json(JsonWriter& w, const HostCaps& h) {
  w.begin_object();
  w.field("kernel", h.kernel);
  w.field("cpus", h.cpus);
  w.field("uffd_features", h.dirtytrack.uffd_features);
  w.begin_object("capabilities");
  for (const auto& r : cap_rows(h)) {
    w.begin_object(r.name);
    w.field("available", r.cap.available);
    w.field("detail", r.cap.detail);
    w.end_object();
  }
  w.end_object();
  w.begin_object("io_uring_ops");
  for (const auto& [name, ok] : h.io_uring_ops) w.field(name, ok);
  w.end_object();
  std::string chosen;
  for (const auto& [name, cap] : h.trackers)
    if (cap.available && chosen.empty()) chosen = name;
  if (chosen.empty()) w.null_field("auto_tracker");
  else w.field("auto_tracker", chosen);
  w.end_object();
}

}  // namespace lm
