#include "engine/throttle.hpp"

#include <cstdlib>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

namespace lm::engine {

std::string_view throttle_mechanism_name(ThrottleMechanism m) {
  switch (m) {
    case ThrottleMechanism::cgroup_v2: return "cgroup-v2 cpu.max";
    case ThrottleMechanism::cgroup_v1: return "cgroup-v1 cpu.cfs_quota_us";
    case ThrottleMechanism::signals: return "SIGSTOP/SIGCONT duty cycle";
  }
  return "unknown";
}

namespace {

constexpr unsigned kPeriodUs = 100000;

Result<void> write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  if (!f) return Error::from_errno(strf("open %s", path.c_str()));
  f << text;
  f.flush();
  if (!f) return Error::from_errno(strf("write '%s' to %s", text.c_str(), path.c_str()));
  return ok();
}

// Where the cpu controller lives: a v2 hierarchy that offers "cpu", or a v1
// hierarchy mounted with the cpu option. Empty when neither.
std::pair<std::string, ThrottleMechanism> find_cpu_controller() {
  std::ifstream mounts("/proc/self/mounts");
  std::string dev, dir, type, opts;
  std::string v1;
  for (std::string line; std::getline(mounts, line);) {
    std::istringstream in(line);
    in >> dev >> dir >> type >> opts;
    if (type == "cgroup2") {
      std::ifstream ctl(dir + "/cgroup.controllers");
      std::string word;
      while (ctl >> word)
        if (word == "cpu") return {dir, ThrottleMechanism::cgroup_v2};
    } else if (type == "cgroup") {
      std::istringstream o(opts);
      for (std::string opt; std::getline(o, opt, ',');)
        if (opt == "cpu") v1 = dir;
    }
  }
  if (!v1.empty()) return {v1, ThrottleMechanism::cgroup_v1};
  return {"", ThrottleMechanism::signals};
}

// The process's current cgroup path in that hierarchy ("/" for the root).
std::string current_cgroup(pid_t pid, ThrottleMechanism m) {
  std::ifstream f(strf("/proc/%d/cgroup", pid));
  for (std::string line; std::getline(f, line);) {
    auto c1 = line.find(':');
    auto c2 = line.find(':', c1 + 1);
    if (c1 == std::string::npos || c2 == std::string::npos) continue;
    std::string controllers = line.substr(c1 + 1, c2 - c1 - 1);
    std::string path = line.substr(c2 + 1);
    if (m == ThrottleMechanism::cgroup_v2 && line.rfind("0::", 0) == 0) return path;
    if (m == ThrottleMechanism::cgroup_v1) {
      std::istringstream cs(controllers);
      for (std::string c; std::getline(cs, c, ',');)
        if (c == "cpu") return path;
    }
  }
  return "";
}

unsigned thread_count(pid_t pid) {
  std::ifstream f(strf("/proc/%d/status", pid));
  for (std::string line; std::getline(f, line);)
    if (line.rfind("Threads:", 0) == 0) return unsigned(std::strtoul(line.c_str() + 8, nullptr, 10));
  return 1;
}

}  // namespace

Result<std::unique_ptr<Throttler>> Throttler::create(pid_t pid, bool allow_cgroup) {
  if (kill(pid, 0) != 0) return Error::from_errno(strf("throttle pid %d", pid));
  if (allow_cgroup) {
    auto [mount, mech] = find_cpu_controller();
    if (!mount.empty()) {
      std::unique_ptr<Throttler> t(new Throttler(pid, mech));
      if (t->setup_cgroup(mount, mech).ok()) return t;
      // Not permitted here (e.g. a delegated hierarchy we may not write): fall back.
    }
  }
  std::unique_ptr<Throttler> t(new Throttler(pid, ThrottleMechanism::signals));
  t->duty_thread_ = std::thread([p = t.get()] { p->duty_cycle_loop(); });
  return t;
}

Result<void> Throttler::setup_cgroup(const std::string& mount, ThrottleMechanism m) {
  std::string original = current_cgroup(pid_, m);
  if (original.empty()) return Error::msg(strf("no cpu cgroup found for pid %d", pid_));
  original_procs_ = mount + (original == "/" ? "" : original) + "/cgroup.procs";
  if (m == ThrottleMechanism::cgroup_v2) {
    // Controllers must be enabled for the children of the root.
    LM_TRY(write_file(mount + "/cgroup.subtree_control", "+cpu"));
  }
  cgroup_dir_ = strf("%s/livemig-throttle-%d-%d", mount.c_str(), getpid(), pid_);
  if (mkdir(cgroup_dir_.c_str(), 0755) != 0 && errno != EEXIST) {
    auto e = Error::from_errno(strf("mkdir %s", cgroup_dir_.c_str()));
    cgroup_dir_.clear();
    return e;
  }
  if (auto r = write_file(cgroup_dir_ + "/cgroup.procs", std::to_string(pid_)); !r) {
    rmdir(cgroup_dir_.c_str());
    cgroup_dir_.clear();
    return r;
  }
  return ok();
}

void Throttler::duty_cycle_loop() {
  using namespace std::chrono;
  while (!duty_stop_.load()) {
    unsigned p = duty_percent_.load();
    if (p == 0) {
      std::this_thread::sleep_for(milliseconds(10));
      continue;
    }
    auto stop_for = microseconds(kPeriodUs * p / 100);
    kill(pid_, SIGSTOP);
    duty_stops_++;
    std::this_thread::sleep_for(stop_for);
    kill(pid_, SIGCONT);
    std::this_thread::sleep_for(microseconds(kPeriodUs) - stop_for);
  }
  kill(pid_, SIGCONT);
}

Result<void> Throttler::set_percent(unsigned percent) {
  if (percent > 99) percent = 99;
  percent_ = percent;
  switch (mechanism_) {
    case ThrottleMechanism::signals:
      duty_percent_ = percent;
      return ok();
    case ThrottleMechanism::cgroup_v2: {
      if (percent == 0) return write_file(cgroup_dir_ + "/cpu.max", "max");
      unsigned quota = kPeriodUs * (100 - percent) / 100 * thread_count(pid_);
      return write_file(cgroup_dir_ + "/cpu.max", strf("%u %u", quota, kPeriodUs));
    }
    case ThrottleMechanism::cgroup_v1: {
      LM_TRY(write_file(cgroup_dir_ + "/cpu.cfs_period_us", std::to_string(kPeriodUs)));
      if (percent == 0) return write_file(cgroup_dir_ + "/cpu.cfs_quota_us", "-1");
      unsigned quota = kPeriodUs * (100 - percent) / 100 * thread_count(pid_);
      return write_file(cgroup_dir_ + "/cpu.cfs_quota_us", std::to_string(quota));
    }
  }
  return ok();
}

Result<uint64_t> Throttler::throttled_periods() const {
  if (mechanism_ == ThrottleMechanism::signals) return duty_stops_.load();
  std::ifstream f(cgroup_dir_ + "/cpu.stat");
  std::string key;
  uint64_t value = 0;
  while (f >> key >> value)
    if (key == "nr_throttled") return value;
  return Error::msg(strf("%s/cpu.stat has no nr_throttled", cgroup_dir_.c_str()));
}

Result<void> Throttler::release() {
  if (released_) return ok();
  released_ = true;
  if (mechanism_ == ThrottleMechanism::signals) {
    duty_stop_ = true;
    if (duty_thread_.joinable()) duty_thread_.join();
    return ok();
  }
  Result<void> result;
  if (kill(pid_, 0) == 0) result = write_file(original_procs_, std::to_string(pid_));
  if (!cgroup_dir_.empty() && rmdir(cgroup_dir_.c_str()) != 0 && result.ok())
    result = Error::from_errno(strf("rmdir %s", cgroup_dir_.c_str()));
  return result;
}

Throttler::~Throttler() { (void)release(); }

}  // namespace lm::engine
