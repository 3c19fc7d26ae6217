#include "engine/group.hpp"

#include <signal.h>

#include <algorithm>
#include <condition_variable>
#include <stop_token>
#include <mutex>
#include <thread>

#include "common/clock.hpp"

namespace lm::engine {

namespace {

// Parallel VMs start their first round together, whenever each destination
// became ready: a VM that failed before it counts as arrived.
class StartLine {
 public:
  explicit StartLine(size_t vms) : waiting_for_(vms) {}
  void arrive_and_wait(std::stop_token stop) {
    std::unique_lock g(lock_);
    arrive_locked();
    all_.wait(g, stop, [&] { return waiting_for_ == 0; });
  }
  void arrive() {
    std::lock_guard g(lock_);
    arrive_locked();
  }

 private:
  void arrive_locked() {
    if (waiting_for_ > 0 && --waiting_for_ == 0) all_.notify_all();
  }
  std::mutex lock_;
  std::condition_variable_any all_;
  size_t waiting_for_;
};

class GroupRun {
 public:
  GroupRun(std::vector<GroupVm> vms, const GroupOptions& o)
      : o_(o), vms_(std::move(vms)), link_(std::make_shared<LinkShare>(o.link)) {
    out_.strategy = o.strategy;
    out_.vms.resize(vms_.size());
    out_.figures.resize(vms_.size());
    for (auto& vm : vms_) vm.source.link_share = link_->join(vm.weight);
  }

  GroupResult run() {
    if (vms_.empty()) {
      out_.failed_vm = 0;
      out_.failure = "a group migrates at least one VM";
      return std::move(out_);
    }
    switch (o_.strategy) {
      case GroupStrategy::parallel: parallel(); break;
      case GroupStrategy::serial: serial(0); break;
      case GroupStrategy::serial_correlated: correlated(); break;
    }
    finish();
    return std::move(out_);
  }

 private:
  double now_ms() const { return clock_.elapsed_ms(); }

  // One VM's whole migration, on the calling thread.
  void migrate(size_t i) {
    GroupVm& vm = vms_[i];
    GroupVmFigures& f = out_.figures[i];
    MigrationResult& r = out_.vms[i];
    auto on_phase = vm.source.on_phase;
    std::stop_token stop = vm.source.cancel ? vm.source.cancel->token() : std::stop_token{};
    bool arrived = false;
    vm.source.on_phase = [this, &f, &arrived, stop, on_phase](SourcePhase p) {
      if ((p == SourcePhase::precopy || p == SourcePhase::stop_and_copy) && !arrived) {
        arrived = true;
        if (start_line_) start_line_->arrive_and_wait(stop);
        f.sending_ms = now_ms();
      }
      if (p == SourcePhase::verify && f.resumed_ms == 0) f.resumed_ms = now_ms();
      if (on_phase) on_phase(p);
    };
    f.started = true;
    f.start_ms = now_ms();
    SourceMigration source(vm.source);
    auto migrated = vm.dial ? source.run(vm.dial, vm.peer, r) : source.run(vm.address, r);
    if (!arrived && start_line_) start_line_->arrive();
    if (!migrated) {
      r.completed = false;
      if (r.error.empty()) r.error = migrated.error().message;
      record_failure(i, r.error);
    }
  }

  void record_failure(size_t i, const std::string& why) {
    std::lock_guard g(lock_);
    if (out_.failed_vm) return;
    out_.failed_vm = i;
    out_.failure = strf("VM %zu: %s", i + 1, why.c_str());
  }

  bool stopped() const { return o_.cancel && o_.cancel->requested(); }

  void parallel() {
    start_line_ = std::make_unique<StartLine>(vms_.size());
    std::vector<std::jthread> threads;
    for (size_t i = 0; i < vms_.size(); i++) threads.emplace_back([this, i] { migrate(i); });
  }

  // From VM `first` on, one after another, until one fails.
  void serial(size_t first) {
    for (size_t i = first; i < vms_.size(); i++) {
      if (stopped()) {
        record_failure(i, "not started: " + o_.cancel->reason());
        return;
      }
      migrate(i);
      run_on_if_held(i);
      if (!out_.vms[i].completed) return;
    }
  }

  // A VM the group stopped (serial-correlated) runs on once its migration
  // ended, unless that left its source stopped or killed (the copy runs at
  // the destination: never two).
  void run_on_if_held(size_t i) {
    auto it = std::find(held_.begin(), held_.end(), i);
    if (it == held_.end()) return;
    held_.erase(it);
    if (!out_.vms[i].completed || vms_[i].source.after == AfterMigration::keep) ::kill(vms_[i].source.pid, SIGCONT);
  }

  // VM 1 pre-copies; the others are stopped when it freezes and copied after it.
  void correlated() {
    for (size_t i = 1; i < vms_.size(); i++) {
      if (vms_[i].source.pid <= 0) {
        record_failure(i, "serial-correlated stops the other VMs by pid; this VM has none");
        return;
      }
      // Stopped, it dirties nothing: round 0 holds everything, then the final copy.
      vms_[i].source.convergence.max_rounds = 1;
    }
    auto before_freeze = vms_[0].source.before_freeze;
    vms_[0].source.before_freeze = [this, before_freeze] {
      for (size_t i = 1; i < vms_.size(); i++)
        if (::kill(vms_[i].source.pid, SIGSTOP) == 0) held_.push_back(i);
      freeze_ms_ = now_ms();
      if (before_freeze) before_freeze();
    };
    migrate(0);
    if (out_.vms[0].completed) serial(1);
  }

  void finish() {
    // Whatever the group stopped and did not migrate runs on.
    while (!held_.empty()) run_on_if_held(held_.front());
    for (size_t i = 0; i < vms_.size(); i++) {
      if (!out_.figures[i].started) {
        out_.vms[i].completed = false;
        out_.vms[i].error = "not migrated: the group stopped first (" + out_.failure + ")";
      }
    }
    double first = -1, last = 0;
    for (size_t i = 0; i < vms_.size(); i++) {
      GroupVmFigures& f = out_.figures[i];
      const MigrationResult& r = out_.vms[i];
      if (!f.started) continue;
      first = first < 0 ? f.start_ms : std::min(first, f.start_ms);
      if (!r.completed) continue;
      last = std::max(last, f.resumed_ms);
      f.downtime_ms = o_.strategy == GroupStrategy::serial_correlated && i > 0 ? f.resumed_ms - freeze_ms_
                                                                               : r.downtime_ms;
      out_.downtime_ms = std::max(out_.downtime_ms, f.downtime_ms);
    }
    out_.total_time_ms = first >= 0 ? last - first : 0;
    out_.migration_time_ms = migrating_ms();
    out_.link = link_->figures();
    out_.link_bytes_per_s = out_.link.busy_s > 0 ? double(out_.link.pages) * 4096 / out_.link.busy_s : 0;
  }

  // The length of the union of the completed VMs' [sending, resumed].
  double migrating_ms() const {
    std::vector<std::pair<double, double>> spans;
    for (size_t i = 0; i < vms_.size(); i++)
      if (out_.vms[i].completed && out_.figures[i].sending_ms > 0)
        spans.emplace_back(out_.figures[i].sending_ms, out_.figures[i].resumed_ms);
    std::sort(spans.begin(), spans.end());
    double sum = 0, end = -1;
    for (auto [a, b] : spans) {
      if (b <= end) continue;
      sum += b - std::max(a, end);
      end = b;
    }
    return sum;
  }

  const GroupOptions& o_;
  std::vector<GroupVm> vms_;
  std::shared_ptr<LinkShare> link_;
  GroupResult out_;
  Stopwatch clock_;
  std::mutex lock_;
  std::unique_ptr<StartLine> start_line_;  // parallel
  std::vector<size_t> held_;  // VMs the group stopped (serial-correlated)
  double freeze_ms_ = 0;
};

}  // namespace

GroupResult run_group(std::vector<GroupVm> vms, const GroupOptions& options) {
  GroupRun run(std::move(vms), options);
  GroupResult g = run.run();
  predict_group(g);
  return g;
}

void predict_group(GroupResult& g) {
  ModelInput& in = g.model_input;
  in = {};
  in.vms = unsigned(g.vms.size());
  in.multi = g.strategy == GroupStrategy::parallel ? MultiVm::parallel
             : g.strategy == GroupStrategy::serial ? MultiVm::serial
                                                   : MultiVm::serial_correlated;
  in.link_bytes_per_s = g.link_bytes_per_s;
  // D, Vm and T_res: the mean over the VMs that measured them.
  unsigned n = 0;
  for (const auto& r : g.vms) {
    if (r.model_input.vm_bytes <= 0) continue;
    n++;
    in.dirty_pages_per_s += r.model_input.dirty_pages_per_s;
    in.vm_bytes += r.model_input.vm_bytes;
    in.resume_s += r.downtime_breakdown.resume / 1e3;
    in.max_rounds = r.model_input.max_rounds;
    in.threshold_bytes += r.model_input.threshold_bytes;  // its own: what its rate drains in its target
  }
  if (n == 0 || in.link_bytes_per_s <= 0) return;
  in.dirty_pages_per_s /= n;
  in.vm_bytes /= n;
  in.resume_s /= n;
  in.threshold_bytes /= n;
  g.model = predict(in);
}

}  // namespace lm::engine
