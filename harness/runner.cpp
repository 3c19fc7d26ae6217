#include "harness/runner.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <thread>

#include "common/clock.hpp"
#include "common/secret.hpp"
#include "dirtytrack/target_check.hpp"
#include "engine/prepaging.hpp"
#include "engine/destination.hpp"
#include "engine/image_sink.hpp"
#include "harness/redis_workload.hpp"
#include "engine/source.hpp"
#include "engine/group.hpp"
#include "harness/guest/client.hpp"
#include "harness/guest_ram_sink.hpp"
#include "harness/rig.hpp"
#include "transport/tls_channel.hpp"

namespace lm::engine {

namespace {

// A temporary directory for the run's unix sockets, removed at the end;
// in $TMPDIR if set (tests give each run its own), else /tmp.
class WorkDir {
 public:
  static Result<WorkDir> create() {
    const char* tmp = std::getenv("TMPDIR");
    std::string parent = tmp && *tmp ? tmp : "/tmp";
    std::string tmpl = parent + "/livemig-run-XXXXXX";
    if (!mkdtemp(tmpl.data())) return Error::from_errno("create a work directory in " + parent);
    WorkDir w;
    w.path_ = tmpl;
    return w;
  }
  WorkDir(WorkDir&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  ~WorkDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  WorkDir() = default;
  std::string path_;
};

// Workload progress rate (guest steps per second) over `window`.
Result<double> measure_rate(guest::ControlClient& control, std::chrono::milliseconds window) {
  auto a = LM_TRY(control.status());
  Stopwatch sw;
  std::this_thread::sleep_for(window);
  auto b = LM_TRY(control.status());
  return double(b.steps - a.steps) / sw.elapsed_s();
}

}  // namespace

std::string transport_address(const MigrationConfig& m) { return m.transport + ":" + m.address; }

Result<std::string> find_guest_binary() {
  if (const char* env = std::getenv("LM_GUEST_BIN"); env && *env) return std::string(env);
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return Error::sys(ec.value(), "find livemig's own path");
  for (auto candidate : {self.parent_path() / "guest" / "livemig-guest", self.parent_path() / "livemig-guest"})
    if (std::filesystem::exists(candidate, ec)) return candidate.string();
  return Error::msg(strf("livemig-guest not found next to %s; set LM_GUEST_BIN", self.c_str()));
}

namespace {

// What the runner migrates, whatever started it.
struct Target {
  pid_t pid = 0;
  dt::Scope scope;
  ExecStateKind exec_state = ExecStateKind::guest_ram;
  std::function<Result<uint64_t>()> progress;  // steps or commands so far
};

Result<double> rate_over(const Target& t, std::chrono::milliseconds window) {
  uint64_t a = LM_TRY(t.progress());
  Stopwatch sw;
  std::this_thread::sleep_for(window);
  uint64_t b = LM_TRY(t.progress());
  return double(b - a) / sw.elapsed_s();
}

// The workload a scenario migrates, started and owned here; its destructor
// ends whatever runs on.
struct Workload {
  std::optional<guest::GuestProcess> guest;
  std::optional<RedisWorkload> redis;
  Target target;
};

Result<void> start_workload(const ScenarioConfig& config, const RunOptions& options, const WorkDir& work,
                            Workload& w) {
  Target& target = w.target;
  if (config.workload.kind == WorkloadKind::guest) {
    guest::GuestOptions gopts;
    gopts.ram_bytes = config.workload.ram_bytes;
    gopts.rate = config.workload.rate;
    gopts.pattern = config.workload.pattern;
    gopts.content = config.workload.content;
    gopts.write = config.workload.write;
    gopts.threads = config.workload.threads;
    gopts.seed = config.workload.seed;
    gopts.prefill = config.workload.prefill;
    gopts.extra_args = {"--ram-pages", config.workload.ram_pages};
    if (!config.workload.cpus.empty()) gopts.extra_args.insert(gopts.extra_args.end(), {"--cpus", config.workload.cpus});
    w.guest.emplace(LM_TRY_CTX(guest::GuestProcess::spawn(options.guest_binary, gopts, work.path()),
                               "start the source guest"));
    target.pid = w.guest->pid();
    target.scope.kind = dt::ScopeKind::ranges;
    target.scope.ranges = {{w.guest->ram_addr(), w.guest->ram_addr() + w.guest->ram_size()}};
    target.progress = [&w]() -> Result<uint64_t> {
      // A guest held stopped (a serial-correlated group's) cannot answer, nor
      // can one held by a tracer ('t': the engine freezing it, or its
      // threads left in a tracing stop): its control request would wait 60 s.
      if (auto state = dt::process_state(w.guest->pid()); state && (*state == 'T' || *state == 't'))
        return Error{EAGAIN, strf("guest pid %d is stopped: no progress sample", int(w.guest->pid()))};
      return LM_TRY(w.guest->control().status()).steps;
    };
    return ok();
  }
  RedisOptions ropts{config.workload.redis_keys, config.workload.redis_value_bytes, config.workload.redis_clients};
  w.redis.emplace(LM_TRY_CTX(RedisWorkload::start(ropts), "start the redis workload"));
  LM_TRY(w.redis->start_writers());
  target.pid = w.redis->server_pid();
  target.scope.kind = dt::ScopeKind::migratable;
  target.exec_state = ExecStateKind::image;
  target.progress = [&w] { return w.redis->commands_processed(); };
  return ok();
}

// Fills the workload's rate during pre-copy: sampled again on entering it
// (the tracker runs from then on) and before the freeze, so that it covers
// the collect intervals the model's D is measured over; a tracked guest runs
// slower than during the setup before it (its writes fault).
struct FreezeSample {
  Result<uint64_t> before = uint64_t(0);
  Stopwatch migrating;
  uint64_t at_freeze = 0;
  double seconds_to_freeze = 0;
};

void set_source_callbacks(SourceOptions& sopts, const RunOptions& options, const Target& target,
                          FreezeSample& sample) {
  sopts.cancel = options.cancel;
  sopts.on_phase = [&target, &sample, inner = options.on_source_phase](SourcePhase p) {
    if (p == SourcePhase::precopy) {
      sample.before = target.progress();
      sample.migrating.reset();
    }
    if (inner) inner(p);
  };
  sopts.before_freeze = [&] {
    if (auto p = target.progress(); p) sample.at_freeze = *p;
    sample.seconds_to_freeze = sample.migrating.elapsed_s();
  };
  if (options.progress == ProgressLine::on) {
    sopts.on_round = [](const SourceProgress& p) {
      std::fprintf(stderr, "\rround %u  pages left %llu  sent %.2f GB  %.2f Gbit/s  expected downtime %.0f ms   ",
                   p.round, (unsigned long long)p.pages_left, double(p.bytes_sent) / 1e9, p.gbps,
                   p.expected_downtime_ms);
    };
  }
}

// The error of a failed migration: the cancel's reason, or either side's.
void record_failure(const RunOptions& options, const Result<void>& migrated,
                    const Result<DestinationOutcome>& outcome, MigrationResult& result) {
  result.completed = false;
  if (options.cancel && options.cancel->requested())
    result.error = options.cancel->reason();  // the cause; both sides' errors only echo it
  else if (result.error.empty())
    result.error = !migrated.ok() ? migrated.error().message : outcome.error().message;
  else if (!outcome.ok()) {
    const std::string& why = outcome.error().message;
    result.error += " (" + (why.starts_with("destination: ") ? why : "destination: " + why) + ")";
  }
}

// What the destination measured, and the resumed guest's own check.
void record_destination(const ScenarioConfig& config, DestinationOutcome& dest, GuestRamSink* guest_sink,
                        MigrationResult& result, const std::string& dst_netns) {
  result.cpu_seconds_destination = dest.cpu_seconds;
  if (dest.postcopy) {  // post-copy figures measured at the destination
    result.prepaging = std::string(prepaging_name(config.postcopy.prepaging));
    result.postcopy_requests = dest.postcopy->demand_faults;
    result.postcopy_zero_faults = dest.postcopy->zero_faults;
    result.postcopy_stale_refreshed = dest.postcopy->stale_refreshed;
    result.pages_pushed_ahead = dest.postcopy->pages_by_push;
    result.fault_latency_us = latency_stats(dest.postcopy->fault_latency_us);
    result.workload_rate_postcopy = dest.postcopy_rate;
  }
  // A resumed guest runs on and its own check must pass.
  auto resumed = guest_sink ? guest_sink->take_guest() : nullptr;
  if (!resumed) return;
  if (!dst_netns.empty()) {
    const uint64_t ns = rig::netns_inode("/run/netns/" + dst_netns);
    result.resumed_guest_in_dst_netns = ns && ns == rig::netns_inode(strf("/proc/%d/ns/net", int(resumed->pid())));
  }
  if (auto rate = measure_rate(resumed->control(), std::chrono::milliseconds(500)); rate)
    result.workload_rate_after = *rate;
  auto guest_verify = resumed->control().verify();
  if (!guest_verify) {
    result.verify_ok = false;
    result.completed = false;
    result.error = "the guest's own verify failed after resume: " + guest_verify.error().message;
  }
  (void)resumed->stop(5000);
}

}  // namespace

SourceOptions source_options(const ScenarioConfig& config) {
  SourceOptions o;
  o.tracker = config.migration.tracker;
  o.policy = config.migration.policy;
  o.channels = config.migration.channels;
  o.workers = config.migration.workers;
  o.batch_pages = config.migration.batch_pages;
  o.protect_chunk_bytes = config.migration.protect_chunk_bytes;
  o.hold_hot_pages = config.migration.hold_hot_pages;
  o.convergence = config.convergence;
  o.auto_converge = config.auto_converge;
  o.verify = config.verify;
  o.mode = config.migration.mode;
  o.postcopy = config.postcopy;
  return o;
}

Result<void> apply_security(const SecurityConfig& security, transport::SessionConfig& session) {
  session.unauthenticated =
      security.insecure ? transport::Unauthenticated::allowed : transport::Unauthenticated::loopback_only;
  if (!security.psk_file.empty()) {
    if (security.psk_file == kGeneratePsk)
      return Error::msg("security.psk-file = \"generate\" is for livemig run, which holds both sides; give "
                        "livemig dest and livemig source the same key file");
    session.psk = LM_TRY(read_key_file(security.psk_file));
  }
  if (!security.tls) return ok();
  if (!security.tls_creds.empty()) {
    session.channel.tls = LM_TRY(transport::TlsConfig::x509(security.tls_creds));
  } else if (!session.psk.empty()) {
    // TLS-PSK gets a key of its own, derived from the file's (the handshake's MAC derives another).
    std::string tls_key = derive_key(session.psk, "livemig tls-psk");
    session.channel.tls = LM_TRY(transport::TlsConfig::psk(std::as_bytes(std::span(tls_key))));
    wipe_key(tls_key);
  } else {
    return Error::msg("--tls needs credentials: --tls-creds DIR (mutual X.509) or --psk-file FILE (TLS-PSK)");
  }
  return ok();
}

namespace {

// One VM's destination, in this process on its own thread: a guest resumes
// from the pages; redis leaves an image.
struct VmDestination {
  DestinationOptions options;
  std::shared_ptr<GuestRamSink> guest_sink;
  std::unique_ptr<Destination> destination;
  std::optional<Result<DestinationOutcome>> outcome;
  std::thread thread;

  ~VmDestination() {
    if (thread.joinable()) {
      options.cancel->request("the run ended");
      thread.join();
    }
  }
  // The source gave up (`failed`): the destination stops waiting for it.
  Result<DestinationOutcome>& join(const Result<void>& migrated) {
    if (!migrated) options.cancel->request("the source stopped: " + migrated.error().message);
    thread.join();
    return *outcome;
  }
};

// The run's key: security.psk-file = "generate" writes a fresh one in the
// private (0700) work directory.
Result<SecurityConfig> run_security(const ScenarioConfig& config, const WorkDir& work) {
  SecurityConfig security = config.security;
  if (security.psk_file == kGeneratePsk) {
    security.psk_file = work.path() + "/psk";
    LM_TRY(write_random_key_file(security.psk_file));
  }
  return security;
}

// `channel_extra`: the transport's own options (ChannelOptions::extra).
Result<void> start_destination(const ScenarioConfig& config, const RunOptions& options, const WorkDir& work,
                               const Target& target, const SecurityConfig& security, VmDestination& d,
                               const std::string& channel_extra = {}) {
  DestinationOptions& dopts = d.options;
  dopts.listen = transport_address(config.migration);
  dopts.session.channel.extra = channel_extra;
  if (target.exec_state == ExecStateKind::guest_ram)
    dopts.sink = d.guest_sink = std::make_shared<GuestRamSink>(GuestRamSinkOptions{options.guest_binary, work.path()});
  else
    dopts.sink = std::make_shared<ImageSink>(config.limits.max_ram_bytes);
  dopts.reconnect_timeout = config.postcopy.reconnect_timeout;
  LM_TRY(apply_security(security, dopts.session));
  dopts.limits = config.limits;
  // The source decides what an interruption means (options.cancel); the
  // destination stops only once the source gave up, e.g. while it still
  // waits for a session the source never opened.
  dopts.cancel = std::make_shared<Cancel>();
  d.destination = LM_TRY(Destination::listen(dopts));
  d.thread = std::thread([&d] { d.outcome = d.destination->run(); });
  return ok();
}

// The source's options for `target`, sharing the destination's session settings.
SourceOptions vm_source_options(const ScenarioConfig& config, const RunOptions& options, const Target& target,
                                const VmDestination& d, FreezeSample& sample) {
  SourceOptions sopts = source_options(config);
  sopts.destination_shares_cpus = true;  // the runner starts both ends on this machine
  sopts.session.psk = d.options.session.psk;
  sopts.session.unauthenticated = d.options.session.unauthenticated;
  sopts.session.channel.tls = d.options.session.channel.tls;
  sopts.session.channel.extra = d.options.session.channel.extra;
  sopts.pid = target.pid;
  sopts.scope = target.scope;
  sopts.exec_state = target.exec_state;
  // An image is a live snapshot: the source runs on (the workload ends it later).
  sopts.after = target.exec_state == ExecStateKind::image ? AfterMigration::keep : AfterMigration::kill;
  if (sopts.mode == MigrationMode::hybrid) sopts.convergence.max_rounds = config.postcopy.precopy_rounds;
  sample.before = target.progress();
  set_source_callbacks(sopts, options, target, sample);
  return sopts;
}

// After the source returned: the destination's side, the rates, the guest's check.
void finish_vm(const ScenarioConfig& config, const RunOptions& options, const Result<void>& migrated,
               VmDestination& d, const FreezeSample& sample, MigrationResult& result,
               const std::string& dst_netns = {}) {
  auto& outcome = d.join(migrated);
  if (sample.before && sample.seconds_to_freeze > 0)
    result.workload_rate_during = double(sample.at_freeze - *sample.before) / sample.seconds_to_freeze;
  if (!migrated.ok() || !outcome.ok()) {
    record_failure(options, migrated, outcome, result);
    return;  // the source runs on; the workload's destructors end it
  }
  record_destination(config, outcome.value(), d.guest_sink.get(), result, dst_netns);
}

// A rig's name for one run: its process and a count, so that a rig left by a
// killed run can be told from one in use (remove_stale_rigs).
std::string run_rig_name() {
  static std::atomic<unsigned> count{0};
  return strf("r%dn%u", int(getpid()), count++);
}

// Rigs of runs whose process is gone (SIGKILL leaves its rig behind): removed.
void remove_stale_rigs() {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
    int pid = 0;
    unsigned n = 0;
    char side[4] = {};
    const std::string file = entry.path().filename().string();
    if (std::sscanf(file.c_str(), "lm-r%dn%u-%3s", &pid, &n, side) != 3 || pid <= 0) continue;
    if (::kill(pid_t(pid), 0) == 0 || errno != ESRCH) continue;
    if (auto r = rig::down(strf("r%dn%u", pid, n)); r && *r)
      std::fprintf(stderr, "livemig: removed the rig of run %d, which ended without removing it\n", pid);
  }
}

// The run's rig (config.link): made before anything of the run, removed after
// all of it, on any return.
Result<rig::Rig> run_rig(const LinkConfig& link) {
  remove_stale_rigs();
  return LM_TRY_CTX(rig::Rig::up({.name = run_rig_name(), .rate_bps = link.rate_bps}), "link.namespaces");
}

// Runs `f` with the calling thread in one side of the rig (none: where it is).
template <class F>
auto in_side(const std::optional<rig::Rig>& link, rig::Side side, F&& f) -> decltype(f()) {
  std::optional<rig::InNetns> in;
  if (link) {
    auto entered = rig::InNetns::enter(link->layout(), side);
    if (!entered) return std::move(entered).error();
    in.emplace(std::move(*entered));
  }
  return f();
}

}  // namespace

Result<MigrationResult> run_scenario(const ScenarioConfig& scenario, const RunOptions& options) {
  MigrationResult result;
  result.host = read_host_facts();
  result.host.calibration_before_us = host_calibration_us();
  // Over a rig (link.*): the source guest and engine in its src namespace, the
  // destination engine (the thread that listens, accepts and prepares, and
  // the guest it resumes) in its dst namespace, at the dst end's address,
  // with a key of the run's own (the link is not loopback). Each side enters
  // its namespace for its own thread only (setns is per thread; threads and
  // children inherit it), so every figure is measured in-process as without
  // a rig. Declared first: removed after everything else of the run.
  std::optional<rig::Rig> link;
  ScenarioConfig config = scenario;
  if (config.link.uses_rig()) {
    link.emplace(LM_TRY(run_rig(config.link)));
    result.rig = link->layout().name;
    config.migration.address = link->layout().ip_of(rig::Side::dst) + ":0";
    if (config.security.psk_file.empty() && !config.security.insecure) config.security.psk_file = kGeneratePsk;
  }
  result.config = config;
  auto work = LM_TRY(WorkDir::create());
  Workload workload;
  LM_TRY(in_side(link, rig::Side::src, [&] { return start_workload(config, options, work, workload); }));
  const Target& target = workload.target;
  result.workload_rate_before =
      LM_TRY(rate_over(target, std::max(std::chrono::milliseconds(100), config.workload.warmup)));

  const SecurityConfig security = LM_TRY(run_security(config, work));
  VmDestination dest;
  LM_TRY(in_side(link, rig::Side::dst,
                 [&] { return start_destination(config, options, work, target, security, dest); }));
  FreezeSample sample;
  SourceMigration source(vm_source_options(config, options, target, dest, sample));
  auto migrated = in_side(link, rig::Side::src, [&] { return source.run(dest.destination->address(), result); });
  if (options.progress == ProgressLine::on) std::fprintf(stderr, "\n");
  finish_vm(config, options, migrated, dest, sample, result, link ? link->layout().netns_of(rig::Side::dst) : "");
  result.host.calibration_after_us = host_calibration_us();
  return result;
}

namespace {

// DPDK's memory is the process's, sized once when its EAL starts (the first
// session's `mem=`), and each dpdk session here, source or destination,
// takes its own mbuf pool from it (~120 MiB on memif): a group's 2m sessions
// would not fit the default 512 MiB.
std::string dpdk_channel_extra(const std::vector<ScenarioConfig>& vms) {
  size_t sessions = 0;
  for (const auto& c : vms)
    if (c.migration.transport == "dpdk") sessions += 2;
  return sessions > 2 ? strf("mem=%zu", 256 + 160 * sessions) : std::string();
}

}  // namespace

Result<GroupRunResult> run_group_scenario(const ScenarioConfig& config, const RunOptions& options) {
  const GroupConfig& g = config.group;
  if (g.vms == 0) return Error::msg("a group migrates at least one VM (group.vms = 0)");
  auto work = LM_TRY(WorkDir::create());
  const SecurityConfig security = LM_TRY(run_security(config, work));
  GroupRunResult out;
  out.config = config;
  const size_t m = g.vms;
  std::vector<ScenarioConfig> configs;
  for (size_t i = 0; i < m; i++) configs.push_back(LM_TRY(vm_scenario(config, i)));
  // Each VM: its guest and its destination. A VM that cannot start is the
  // group's failure: parallel migrates the others, serial those before it.
  std::vector<Workload> workloads(m);
  std::vector<VmDestination> dests(m);
  std::vector<FreezeSample> samples(m);
  std::vector<std::string> not_started(m);
  std::vector<double> rate_before(m, 0);
  const std::string dpdk_extra = dpdk_channel_extra(configs);
  for (size_t i = 0; i < m; i++) {
    auto started = start_workload(configs[i], options, work, workloads[i]);
    if (started) {
      auto rate = rate_over(workloads[i].target, std::max(std::chrono::milliseconds(100), configs[i].workload.warmup));
      if (rate)
        rate_before[i] = *rate;
      else
        started = rate.error();
    }
    if (started)
      started = start_destination(configs[i], options, work, workloads[i].target, security, dests[i],
                                  configs[i].migration.transport == "dpdk" ? dpdk_extra : std::string());
    if (!started) not_started[i] = started.error().message;
  }
  std::vector<GroupVm> members;
  std::vector<size_t> index;  // members[k] is VM index[k]
  for (size_t i = 0; i < m; i++) {
    if (!not_started[i].empty()) {
      if (g.strategy != GroupStrategy::parallel) break;
      continue;
    }
    GroupVm vm;
    vm.source = vm_source_options(configs[i], options, workloads[i].target, dests[i], samples[i]);
    vm.source.on_round = nullptr;  // one progress line cannot show m VMs
    vm.address = dests[i].destination->address();
    if (options.vm_route) vm.address = options.vm_route(i, vm.address);
    if (options.on_vm_resumed)
      vm.source.on_resumed = [&options, i, inner = vm.source.on_resumed] {
        if (inner) inner();
        options.on_vm_resumed(i);
      };
    vm.weight = vm_weight(g, i);
    if (options.on_vm_phase) {
      Cancel* destination = dests[i].options.cancel.get();
      vm.source.on_phase = [&options, i, destination, inner = vm.source.on_phase](SourcePhase p) {
        if (inner) inner(p);
        options.on_vm_phase(i, p, *destination);
      };
    }
    members.push_back(std::move(vm));
    index.push_back(i);
  }
  GroupOptions gopts;
  gopts.strategy = g.strategy;
  gopts.link.rate_bytes_per_s = double(g.link_rate);
  gopts.cancel = options.cancel;
  GroupResult ran = run_group(std::move(members), gopts);

  // Back to every VM's place in the scenario, with its destination's side.
  GroupResult& group = out.group;
  group = ran;
  group.vms.assign(m, {});
  group.figures.assign(m, {});
  group.failed_vm.reset();
  group.failure.clear();
  for (size_t k = 0; k < index.size(); k++) {
    group.vms[index[k]] = std::move(ran.vms[k]);
    group.figures[index[k]] = ran.figures[k];
  }
  for (size_t i = 0; i < m; i++) {
    MigrationResult& r = group.vms[i];
    r.config = configs[i];
    r.workload_rate_before = rate_before[i];
    if (!not_started[i].empty()) {
      r.error = "the VM did not start: " + not_started[i];
    } else if (group.figures[i].started) {
      Result<void> migrated = r.completed ? Result<void>(ok()) : Result<void>(Error::msg(r.error));
      finish_vm(configs[i], options, migrated, dests[i], samples[i], r);
    } else if (r.error.empty()) {
      r.error = "not migrated: the group stopped before it";
    }
    if (!not_started[i].empty() && !group.failed_vm) {
      group.failed_vm = i;
      group.failure = group_failure(strf("VM %zu", i + 1), group.figures[i], r.error);
    }
  }
  // The VM that failed first, as the group saw it (a VM before it may have
  // been stopped because of it), else the first that did not complete.
  if (!group.failed_vm && ran.failed_vm && *ran.failed_vm < index.size()) {
    const size_t i = index[*ran.failed_vm];
    group.failed_vm = i;
    group.failure = group_failure(strf("VM %zu", i + 1), group.figures[i], group.vms[i].error);
  }
  for (size_t i = 0; i < m && !group.failed_vm; i++)
    if (!group.vms[i].completed) {
      group.failed_vm = i;
      group.failure = group_failure(strf("VM %zu", i + 1), group.figures[i], group.vms[i].error);
    }
  // Every source that did not complete runs on: measured, not assumed.
  out.source_rate_after.assign(m, 0);
  for (size_t i = 0; i < m; i++)
    if (!group.vms[i].completed && workloads[i].target.progress)
      if (auto rate = rate_over(workloads[i].target, std::chrono::milliseconds(200)); rate)
        out.source_rate_after[i] = *rate;
  predict_group(group);
  return out;
}

namespace {

// total-time as QEMU defines it, what it is made of, and what lies outside it.
std::string time_breakdown(const MigrationResult& r) {
  double sending_ms = 0;  // the iterative rounds (the last record is the stop-and-copy's)
  const size_t iterative = r.config.migration.mode == MigrationMode::postcopy || r.rounds.empty()
                               ? 0
                               : r.rounds.size() - (r.config.migration.mode == MigrationMode::precopy ? 1 : 0);
  for (size_t i = 0; i < iterative; i++) sending_ms += r.rounds[i].duration_ms;
  std::string s;
  s += strf("total-time    %.1f ms (QEMU's: from the start on a prepared destination to the destination running)\n",
            r.total_time_ms);
  const auto& sb = r.setup_breakdown;
  s += strf("  setup       %.1f ms (the source's own: attach %.1f, tracker probe %.1f, mappings %.1f, connect %.1f, "
            "senders %.1f, tracker start %.1f, other %.1f)\n",
            r.setup_time_ms, sb.attach, sb.tracker_probe, sb.mappings, sb.connect, sb.senders, sb.tracker_start,
            sb.other);
  // The tracker's protection runs inside round 0 only when started in chunks
  // (migration.protect-chunk); otherwise it is in the setup's tracker start.
  s += strf("  rounds      %u in all (stop: %s); %zu pre-copy rounds sent for %.1f ms, round 0 %.1f ms%s\n",
            r.dirty_sync_count, r.stop_reason.c_str(), iterative, sending_ms,
            iterative ? r.rounds.front().duration_ms : 0.0,
            r.config.migration.protect_chunk_bytes > 0
                ? strf(" (tracker protect %.1f in it, chunk by chunk beside the senders)", r.tracker_protect_ms).c_str()
                : "");
  const auto& d = r.downtime_breakdown;
  s += strf("  downtime    %.1f ms (stop-and-copy: freeze %.1f, final collect %.1f, final send %.1f, resume %.1f%s)\n",
            r.downtime_ms, d.freeze, d.final_collect, d.final_send, d.resume,
            d.resume_running >= 0 ? strf(" of which %.1f to the guest running", d.resume_running).c_str() : "");
  if (r.config.migration.mode != MigrationMode::precopy)
    s += strf("  post-copy   %.1f ms from the resume to the last page\n", r.postcopy_complete_ms);
  s += strf("dest-prepare  %.1f ms (waiting for the destination's ready; outside total-time)\n",
            r.destination_prepare_time_ms);
  if (!r.destination_ram.empty())
    s += strf("  population  %.1f ms (destination memory: %s, every page written before ready)\n", r.population_ms,
              r.destination_ram.c_str());
  s += strf("verify        %s, %llu pages in %.1f ms (after the destination runs; outside total-time)\n",
            r.verify_ok ? "ok" : "not ok", (unsigned long long)r.verify_pages, r.verify_time_ms);
  s += strf("end-to-end    %.1f ms (preparation, migration, verification and release)\n", r.end_to_end_time_ms);
  return s;
}

}  // namespace

std::string summarize(const MigrationResult& r) {
  std::string s;
  s += strf("status        %s%s\n", r.completed ? "completed" : "failed",
            r.completed ? "" : (": " + r.error).c_str());
  s += strf("transport     %s, tracker %s, policy %s\n", r.transport.c_str(), r.tracker.c_str(), r.policy.c_str());
  if (!r.rig.empty())
    s += strf("link          rig %s (namespaces lm-%s-src -> lm-%s-dst), %s%s\n", r.rig.c_str(), r.rig.c_str(),
              r.rig.c_str(), setting_text(r.config, "link.rate").c_str(),
              r.resumed_guest_in_dst_netns ? ", the resumed guest ran in dst" : "");
  s += time_breakdown(r);
  s += strf("ram           %.1f MiB, %.1f MiB on the wire, %.0f Mbit/s, ratio %.2f\n",
            double(r.ram_total) / 1048576, double(r.transferred) / 1048576, r.mbps, r.compression_ratio);
  s += strf("pages         normal %llu, duplicate %llu, compressed %llu, resent %llu\n",
            (unsigned long long)r.pages_normal, (unsigned long long)r.pages_duplicate,
            (unsigned long long)r.pages_compressed, (unsigned long long)r.pages_resent);
  s += strf("cpu           source %.2f s, destination %.2f s\n", r.cpu_seconds_source, r.cpu_seconds_destination);
  s += strf("workload      %.0f progress/s before, %.0f during, %.0f after\n", r.workload_rate_before,
            r.workload_rate_during, r.workload_rate_after);
  if (!r.source_state.empty())
    s += strf("source        %s (phase %s)\n", r.source_state.c_str(), r.source_phase.c_str());
  if (r.config.migration.mode != MigrationMode::precopy)
    s += strf("postcopy      %s: %llu demand faults (p50 %.0f us, p99 %.0f us, max %.0f us), %llu zero faults, "
              "%llu pages pushed (%llu ahead of need), %.0f progress/s meanwhile\n",
              r.prepaging.c_str(), (unsigned long long)r.postcopy_requests, r.fault_latency_us.p50,
              r.fault_latency_us.p99, r.fault_latency_us.max, (unsigned long long)r.postcopy_zero_faults,
              (unsigned long long)r.pages_pushed, (unsigned long long)r.pages_pushed_ahead, r.workload_rate_postcopy);
  if (r.config.migration.mode == MigrationMode::hybrid)
    s += strf("stale         %llu pre-copied pages refreshed in place\n", (unsigned long long)r.postcopy_stale_refreshed);
  if (r.postcopy_reconnects > 0)
    s += strf("recovery      %llu broken links recovered, %.0f ms without a link\n",
              (unsigned long long)r.postcopy_reconnects, r.postcopy_link_down_ms);
  if (r.model) {
    // The model's T_mig starts at round 0: compared with total-time without the source's setup.
    const double measured = r.total_time_ms - r.setup_time_ms;
    s += strf("model         total %.1f ms predicted, %.1f ms measured without setup (%+.0f%%); downtime %.1f ms "
              "predicted, %.1f ms measured; %u rounds (r = %.3f%s; D = %.0f pages/s, R = %.0f Mbit/s)\n",
              r.model->total_s * 1e3, measured, measured > 0 ? (r.model->total_s * 1e3 / measured - 1) * 100 : 0.0,
              r.model->downtime_s * 1e3, r.downtime_ms, r.model->rounds, r.model->ratio,
              r.model->converges ? "" : ", does not converge", r.model_input.dirty_pages_per_s,
              r.model_input.link_bytes_per_s * 8 / 1e6);
  }
  return s;
}

std::string summarize_group(const GroupRunResult& run) {
  const GroupResult& g = run.group;
  std::string s;
  s += strf("group         %s, %zu VMs: %s%s\n", std::string(strategy_name(g.strategy)).c_str(), g.vms.size(),
            g.completed() ? "completed" : "failed: ", g.completed() ? "" : g.failure.c_str());
  for (size_t i = 0; i < g.vms.size(); i++) {
    const MigrationResult& r = g.vms[i];
    const GroupVmFigures& f = g.figures[i];
    const uint64_t bytes = i < g.link.bytes.size() ? g.link.bytes[i] : 0;
    const std::string mode(mode_name(f.mode));
    if (r.completed && f.mode == MigrationMode::precopy)
      s += strf("vm %-10zu completed, precopy, %.1f ms from the group's start, downtime %.1f ms, %u rounds, %.1f MiB "
                "on the link, verify ok\n",
                i + 1, f.resumed_ms, f.downtime_ms, r.dirty_sync_count, double(bytes) / 1048576);
    else if (r.completed)
      s += strf("vm %-10zu completed, %s, resumed %.1f ms and every page there %.1f ms from the group's start, "
                "downtime %.1f ms, %u rounds, %.1f MiB on the link, verify ok\n",
                i + 1, mode.c_str(), f.resumed_ms, f.completed_ms, f.downtime_ms, r.dirty_sync_count,
                double(bytes) / 1048576);
    else
      s += strf("vm %-10zu failed: %s; source %s (%.0f progress/s after)\n", i + 1, r.error.c_str(),
                r.source_state.empty() ? "not attached" : r.source_state.c_str(),
                i < run.source_rate_after.size() ? run.source_rate_after[i] : 0.0);
  }
  s += strf("link          %.0f Mbit/s (R, pages while any VM sent) over %.1f s busy\n",
            g.link_bytes_per_s * 8 / 1e6, g.link.busy_s);
  if (g.model)
    s += strf("model         migration-time predicted %.1f ms, measured %.1f ms (total-time %.1f ms with the "
              "destinations' preparation); downtime predicted %.1f ms, measured %.1f ms (r = %.3f, %u rounds, "
              "D = %.0f pages/s, Vm = %.1f MiB)\n",
              g.model->total_s * 1e3, g.migration_time_ms, g.total_time_ms, g.model->downtime_s * 1e3, g.downtime_ms,
              g.model->ratio,
              g.model->rounds, g.model_input.dirty_pages_per_s, g.model_input.vm_bytes / 1048576);
  else
    s += strf("model         no prediction (%s); total-time %.1f ms, migration-time %.1f ms, downtime %.1f ms\n",
              g.no_model.c_str(), g.total_time_ms, g.migration_time_ms, g.downtime_ms);
  return s;
}

}  // namespace lm::engine
