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

// Where a group's VMs wait, each with its destination ready and nothing
// tracked yet (SourceOptions::before_tracking): every VM until all are
// ready (a VM that failed before counts as arrived), so that parallel
// pre-copies overlap and no destination is still being prepared when a
// serial-correlated VM 1 freezes; then a serial-correlated VM 2..m until
// the group gives it its turn or stops.
// How often a VM waiting for its turn tells its destination it is alive
// (its mappings announced again: a read of its maps and a small message per
// channel). The destination's timeout is its own, unknown here: 1 s left a
// destination with --timeout-ms 1500 (the group CLI tests') half a second,
// and one such wait timed out under ASan with two tests at a time.
constexpr transport::Timeout kKeepAliveEvery{250};

class StartLine {
 public:
  explicit StartLine(size_t vms) : waiting_for_(vms), turns_(vms, Turn::wait) {}
  void arrive_and_wait(std::stop_token stop) {
    std::unique_lock g(lock_);
    arrive_locked();
    all_.wait(g, stop, [&] { return waiting_for_ == 0; });
  }
  void arrive() {
    std::lock_guard g(lock_);
    arrive_locked();
  }
  // VM i's turn: ok to go on (also on its own cancel, which its source
  // then reports), or the reason the group stopped before it. Its
  // destination waits for its first page meanwhile: `keep_alive` every
  // `every` tells it the source is alive.
  Result<void> wait_turn(size_t i, std::stop_token stop, std::chrono::milliseconds every,
                         const std::function<Result<void>()>& keep_alive) {
    std::unique_lock g(lock_);
    while (!all_.wait_for(g, stop, every, [&] { return turns_[i] != Turn::wait; })) {
      if (stop.stop_requested()) return ok();
      g.unlock();
      LM_TRY(keep_alive());
      g.lock();
    }
    if (turns_[i] == Turn::stop) return Error::msg(why_);
    return ok();
  }
  void give_turn(size_t i) {
    std::lock_guard g(lock_);
    if (turns_[i] == Turn::wait) turns_[i] = Turn::go;
    all_.notify_all();
  }
  // Every VM still waiting for its turn ends without one.
  void stop_waiting(const std::string& why) {
    std::lock_guard g(lock_);
    why_ = why;
    for (auto& t : turns_)
      if (t == Turn::wait) t = Turn::stop;
    all_.notify_all();
  }

 private:
  enum class Turn { wait, go, stop };
  void arrive_locked() {
    if (waiting_for_ > 0 && --waiting_for_ == 0) all_.notify_all();
  }
  std::mutex lock_;
  std::condition_variable_any all_;
  size_t waiting_for_;
  std::vector<Turn> turns_;
  std::string why_;
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
    for (size_t i = 0; i < vms_.size(); i++) out_.figures[i].mode = vms_[i].source.mode;  // as asked
    // What cannot work is refused before any VM starts.
    for (size_t i = 0; i < vms_.size(); i++)
      if (auto why = cannot_work(i); !why.empty()) {
        record_failure(i, why);
        finish();
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

  // Why VM i cannot be migrated as given (empty: it can).
  std::string cannot_work(size_t i) const {
    const SourceOptions& s = vms_[i].source;
    if (s.mode != MigrationMode::precopy && s.exec_state == ExecStateKind::image)
      return strf("refused: %s resumes the VM at its destination, but this VM is migrated as an image (no guest "
                  "RAM given), which no destination resumes or serves faults from",
                  std::string(mode_name(s.mode)).c_str());
    if (o_.strategy == GroupStrategy::serial_correlated && i > 0 && s.pid <= 0)
      return "refused: serial-correlated stops the other VMs by pid; this VM has none";
    return {};
  }

  // One VM's whole migration, on the calling thread.
  void migrate(size_t i) {
    GroupVm& vm = vms_[i];
    GroupVmFigures& f = out_.figures[i];
    MigrationResult& r = out_.vms[i];
    auto on_phase = vm.source.on_phase;
    std::stop_token stop = vm.source.cancel ? vm.source.cancel->token() : std::stop_token{};
    bool arrived = false;
    if (start_line_)
      vm.source.before_tracking = [this, i, &f, &arrived, stop,
                                   every = std::min(vm.source.timeout / 3, kKeepAliveEvery)](
                                      const std::function<Result<void>()>& keep_alive) -> Result<void> {
        f.ready_ms = now_ms();
        arrived = true;
        if (!takes_turns(i)) {
          start_line_->arrive_and_wait(stop);
          if (o_.strategy == GroupStrategy::serial_correlated && failed())  // VM 1: another failed before ready
            return Error::msg(not_migrated());
          return ok();
        }
        start_line_->arrive();
        return start_line_->wait_turn(i, stop, every, keep_alive);
      };
    SourcePhase last = SourcePhase::setup;
    vm.source.on_phase = [this, &f, &last, on_phase](SourcePhase p) {
      if ((p == SourcePhase::precopy || p == SourcePhase::stop_and_copy) && f.sending_ms == 0) f.sending_ms = now_ms();
      if (p == SourcePhase::verify && f.completed_ms == 0) f.completed_ms = now_ms();
      if (p == SourcePhase::rolled_back || p == SourcePhase::lost) {
        f.failed_in = last;
        f.lost = p == SourcePhase::lost;
      }
      last = p;
      if (on_phase) on_phase(p);
    };
    // The next VM's turn comes as this one runs at its destination: a
    // post-copy VM's remaining pages then share the link with its copy.
    vm.source.on_resumed = [this, i, &f, on_resumed = vm.source.on_resumed] {
      if (f.resumed_ms == 0) {
        f.resumed_ms = now_ms();
        if (takes_turns(i + 1)) next_turn(i + 1);
      }
      if (on_resumed) on_resumed();
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
    if (takes_turns(i + 1)) {
      if (!r.completed) start_line_->stop_waiting(not_migrated());
      else if (f.resumed_ms == 0) next_turn(i + 1);  // else given as it resumed
    }
  }

  // Serial-correlated: VM i's copy starts as soon as VM i-1 runs at its
  // destination (its verification and release overlap the next copy, which
  // is all the link carries), unless a VM failed or the group was stopped.
  void next_turn(size_t i) {
    if (failed()) {
      start_line_->stop_waiting(not_migrated());
      return;
    }
    if (stopped()) {
      record_failure(i, "not started: " + o_.cancel->reason());
      start_line_->stop_waiting(not_migrated());
      return;
    }
    start_line_->give_turn(i);
  }

  // Serial-correlated VMs 2..m wait for their turn after the start line.
  bool takes_turns(size_t i) const {
    return o_.strategy == GroupStrategy::serial_correlated && i > 0 && i < vms_.size();
  }

  bool failed() {
    std::lock_guard g(lock_);
    return out_.failed_vm.has_value();
  }
  std::string not_migrated() {
    std::lock_guard g(lock_);
    return not_migrated_text();
  }
  std::string not_migrated_text() const {
    return "not migrated: the group stopped first (" + out_.failure + "); it runs on at its source";
  }

  void record_failure(size_t i, const std::string& why) {
    std::lock_guard g(lock_);
    if (out_.failed_vm) return;
    out_.failed_vm = i;
    out_.failure = group_failure(strf("VM %zu", i + 1), out_.figures[i], why);
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

  // Every VM connects and its destination prepares at once; VM 1 pre-copies
  // once all are ready, the others wait for their turn (nothing tracked, so
  // what they write meanwhile is not sent twice). They are stopped when VM 1
  // freezes and copied one after another, each once the one before it
  // resumed: the frozen VMs' downtime is their copies, as in the model, not
  // their setups nor the verification of the VMs before them.
  void correlated() {
    // Stopped, they dirty nothing: pre-copy sends everything in round 0,
    // then the final copy. A hybrid VM pre-copies while it runs, which a
    // stopped one no longer does: it switches over at once, as post-copy.
    for (size_t i = 1; i < vms_.size(); i++) {
      vms_[i].source.convergence.max_rounds = 1;
      if (vms_[i].source.mode == MigrationMode::hybrid) vms_[i].source.mode = MigrationMode::postcopy;
    }
    auto before_freeze = vms_[0].source.before_freeze;
    vms_[0].source.before_freeze = [this, before_freeze] {
      for (size_t i = 1; i < vms_.size(); i++)
        if (::kill(vms_[i].source.pid, SIGSTOP) == 0) held_.push_back(i);
      freeze_ms_ = now_ms();
      if (before_freeze) before_freeze();
    };
    start_line_ = std::make_unique<StartLine>(vms_.size());
    std::vector<std::jthread> others;
    for (size_t i = 1; i < vms_.size(); i++) others.emplace_back([this, i] { migrate(i); });
    migrate(0);
    // Each VM, as it ends, gave the next its turn or stopped the rest.
    for (size_t i = 1; i < vms_.size(); i++) {
      others[i - 1].join();
      run_on_if_held(i);
    }
  }

  void finish() {
    // Whatever the group stopped and did not migrate runs on.
    while (!held_.empty()) run_on_if_held(held_.front());
    for (size_t i = 0; i < vms_.size(); i++) {
      if (!out_.figures[i].started) {
        out_.vms[i].completed = false;
        out_.vms[i].error = not_migrated_text();  // every thread ended
      }
    }
    double first = -1, last = 0;
    for (size_t i = 0; i < vms_.size(); i++) {
      GroupVmFigures& f = out_.figures[i];
      const MigrationResult& r = out_.vms[i];
      if (!f.started) continue;
      first = first < 0 ? f.start_ms : std::min(first, f.start_ms);
      if (!r.completed) continue;
      last = std::max(last, f.completed_ms);
      f.downtime_ms = o_.strategy == GroupStrategy::serial_correlated && i > 0 ? f.resumed_ms - freeze_ms_
                                                                               : r.downtime_ms;
      out_.downtime_ms = std::max(out_.downtime_ms, f.downtime_ms);
    }
    out_.total_time_ms = first >= 0 && last > 0 ? last - first : 0;  // 0: none completed
    out_.migration_time_ms = migrating_ms();
    out_.freeze_ms = freeze_ms_;
    out_.link = link_->figures();
    out_.link_bytes_per_s = out_.link.busy_s > 0 ? double(out_.link.pages) * 4096 / out_.link.busy_s : 0;
  }

  // The length of the union of the completed VMs' [sending, completed].
  double migrating_ms() const {
    std::vector<std::pair<double, double>> spans;
    for (size_t i = 0; i < vms_.size(); i++)
      if (out_.vms[i].completed && out_.figures[i].sending_ms > 0)
        spans.emplace_back(out_.figures[i].sending_ms, out_.figures[i].completed_ms);
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

std::string group_failure(const std::string& vm, const GroupVmFigures& f, const std::string& error) {
  if (!f.failed_in) return vm + ": " + error;
  const std::string phase(source_phase_name(*f.failed_in));
  if (f.lost) return strf("%s lost after its resume (failed in %s): %s", vm.c_str(), phase.c_str(), error.c_str());
  return strf("%s failed in %s and rolled back: %s", vm.c_str(), phase.c_str(), error.c_str());
}

GroupResult run_group(std::vector<GroupVm> vms, const GroupOptions& options) {
  GroupRun run(std::move(vms), options);
  GroupResult g = run.run();
  predict_group(g);
  return g;
}

void predict_group(GroupResult& g) {
  ModelInput& in = g.model_input;
  in = {};
  g.model.reset();
  g.no_model.clear();
  for (size_t i = 0; i < g.figures.size(); i++)
    if (g.figures[i].mode != MigrationMode::precopy) {
      g.no_model = strf("the model is pre-copy's; VM %zu is %s", i + 1,
                        std::string(mode_name(g.figures[i].mode)).c_str());
      return;
    }
  in.vms = unsigned(g.vms.size());
  in.multi = g.strategy == GroupStrategy::parallel ? MultiVm::parallel
             : g.strategy == GroupStrategy::serial ? MultiVm::serial
                                                   : MultiVm::serial_correlated;
  in.link_bytes_per_s = g.link_bytes_per_s;
  // Vm and T_res: the mean over the VMs that measured them; D, the
  // threshold and n_max of the VMs that pre-copied while running: in
  // serial-correlated only VM 1 does (the others are stopped before their
  // one round, their D is 0 and their max-rounds 1 by construction).
  const size_t precopying = g.strategy == GroupStrategy::serial_correlated ? 1 : g.vms.size();
  unsigned n = 0, np = 0;
  for (size_t i = 0; i < g.vms.size(); i++) {
    const MigrationResult& r = g.vms[i];
    if (r.model_input.vm_bytes <= 0) continue;
    n++;
    in.vm_bytes += r.model_input.vm_bytes;
    in.resume_s += r.downtime_breakdown.resume / 1e3;
    if (i >= precopying) continue;
    np++;
    in.dirty_pages_per_s += r.model_input.dirty_pages_per_s;
    in.max_rounds = r.model_input.max_rounds;
    in.min_rounds = r.model_input.min_rounds;
    in.threshold_bytes += r.model_input.threshold_bytes;  // its own: what its rate drains in its target
  }
  if (n == 0 || np == 0 || in.link_bytes_per_s <= 0) {
    g.no_model = "nothing measured";
    return;
  }
  in.dirty_pages_per_s /= np;
  in.vm_bytes /= n;
  in.resume_s /= n;
  in.threshold_bytes /= np;
  g.model = predict(in);
}

}  // namespace lm::engine
