#include "transport/dpdk/eal.hpp"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <mutex>

#include <rte_eal.h>
#include <rte_errno.h>

namespace lm::dpdk {

namespace {
// The one process-global of the backend, mirroring DPDK's own.
std::mutex eal_mu;
Eal* eal_instance = nullptr;
int eal_pid = 0;
}  // namespace

Result<void> Eal::check_not_forked() {
  std::lock_guard lk(eal_mu);
  if (eal_instance && eal_pid != int(getpid()))
    return Error::msg(strf("DPDK was initialised in process %d; pid %d is a child forked after that and cannot "
                           "use it (start the peer with exec, not fork)", eal_pid, int(getpid())));
  return ok();
}

Result<Eal*> Eal::init(const EalConfig& cfg) {
  LM_TRY(check_not_forked());
  std::lock_guard lk(eal_mu);
  Eal*& instance = eal_instance;
  if (instance) {
    const EalConfig& have = instance->cfg_;
    if (have.huge_pages != cfg.huge_pages || have.pci != cfg.pci ||
        (cfg.single_file_segments && !have.single_file_segments))
      return Error::msg("DPDK EAL already initialised in this process with a different configuration");
    return instance;
  }
  std::vector<std::string> args = {"livemig", "-l", cfg.cores, "-m", std::to_string(cfg.memory_mb),
                                    "--file-prefix",
                                    cfg.file_prefix.empty() ? strf("livemig-%d", int(getpid())) : cfg.file_prefix,
                                    "--log-level", cfg.log_level};
  if (!cfg.huge_pages) args.push_back("--no-huge");
  if (!cfg.pci) args.push_back("--no-pci");
  if (cfg.single_file_segments) args.push_back("--single-file-segments");
  for (auto& e : cfg.extra) args.push_back(e);
  std::string joined;
  for (auto& a : args) joined += (joined.empty() ? "" : " ") + a;
  // Lives as long as the process, like the EAL (which may keep argv pointers).
  auto* eal = new Eal(cfg, std::move(args));
  std::vector<char*> argv;
  for (auto& a : eal->argv_) argv.push_back(a.data());
  argv.push_back(nullptr);
  // rte_eal_init pins the calling thread to the main lcore (CPU 0 for "-l 0"),
  // and every thread it creates later inherits that: the poller, the
  // application's threads, a whole engine on one CPU. Measured before this
  // restore: both processes of a memif stream, pollers included, ran on CPU 0
  // with half their time spent waiting for it.
  cpu_set_t before;
  bool had_affinity = pthread_getaffinity_np(pthread_self(), sizeof before, &before) == 0;
  int rc = rte_eal_init(int(argv.size() - 1), argv.data());
  if (had_affinity) pthread_setaffinity_np(pthread_self(), sizeof before, &before);
  if (rc < 0) {
    int err = rte_errno;
    delete eal;
    return Error::sys(err, strf("rte_eal_init(%s)", joined.c_str()));
  }
  instance = eal;
  eal_pid = int(getpid());
  return instance;
}

}  // namespace lm::dpdk
