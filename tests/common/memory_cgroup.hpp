// A v1 memory cgroup with a limit, for tests that let a peer or workload
// claim memory: the test moves its child process in (add()), and the
// destructor removes the cgroup once the child is gone (the caller ends it
// first). Missing controller or permission: create() says why, and the test
// skips with that reason.
#pragma once

#include <sys/types.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>

#include "common/error.hpp"

namespace lm::test {

class MemoryCgroup {
 public:
  static constexpr const char* kRoot = "/sys/fs/cgroup/memory";

  static Result<MemoryCgroup> create(const std::string& name, uint64_t limit_bytes) {
    if (access((std::string(kRoot) + "/memory.limit_in_bytes").c_str(), F_OK) != 0)
      return Error::msg(strf("no cgroup v1 memory controller at %s", kRoot));
    MemoryCgroup g;
    g.path_ = strf("%s/%s-%d", kRoot, name.c_str(), int(getpid()));
    if (mkdir(g.path_.c_str(), 0755) != 0 && errno != EEXIST) return Error::from_errno("mkdir " + g.path_);
    LM_TRY(g.write("memory.limit_in_bytes", std::to_string(limit_bytes)));
    (void)g.write("memory.memsw.limit_in_bytes", std::to_string(limit_bytes));  // absent without swap accounting
    return g;
  }

  // Moves process `pid` (the test's child) into the cgroup.
  Result<void> add(pid_t pid) { return write("cgroup.procs", std::to_string(pid)); }
  // The cgroup's peak memory use so far.
  uint64_t max_usage_bytes() const {
    std::ifstream f(path_ + "/memory.max_usage_in_bytes");
    uint64_t v = 0;
    f >> v;
    return v;
  }
  const std::string& path() const { return path_; }

  MemoryCgroup(MemoryCgroup&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  MemoryCgroup& operator=(MemoryCgroup&&) = delete;
  ~MemoryCgroup() {
    if (!path_.empty()) (void)rmdir(path_.c_str());  // the child has exited: the cgroup is empty
  }

 private:
  MemoryCgroup() = default;
  Result<void> write(const std::string& file, const std::string& value) const {
    std::ofstream f(path_ + "/" + file);
    f << value;
    f.flush();
    if (!f) return Error::msg(strf("write '%s' to %s/%s failed", value.c_str(), path_.c_str(), file.c_str()));
    return ok();
  }
  std::string path_;
};

}  // namespace lm::test
