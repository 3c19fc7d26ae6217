#include "harness/result_json.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "harness/scenario.hpp"

namespace lm::engine {

namespace {

using Json = nlohmann::ordered_json;  // fields in the order README lists them

Json config_json(const ScenarioConfig& c) {
  return {{"name", c.name},
          {"mode", mode_name(c.migration.mode)},
          {"transport", c.migration.transport},
          {"channels", c.migration.channels},
          {"policy", c.migration.policy.name},
          {"workers", c.migration.workers},
          {"tracker", c.migration.tracker},
          {"batch-pages", c.migration.batch_pages},
          {"protect-chunk", c.migration.protect_chunk_bytes},
          {"workload",
           {{"kind", workload_name(c.workload.kind)},
            {"ram", c.workload.ram_bytes},
            {"rate", c.workload.rate},
            {"pattern", c.workload.pattern},
            {"content", c.workload.content},
            {"write", c.workload.write},
            {"threads", c.workload.threads},
            {"prefill", c.workload.prefill}}},
          {"convergence",
           {{"max-rounds", c.convergence.max_rounds},
            {"max-bytes-factor", c.convergence.max_bytes_factor},
            {"dirty-pages-threshold", c.convergence.dirty_pages_threshold},
            {"downtime-target-ms", c.convergence.downtime_target_ms},
            {"downtime-floor-ms", c.convergence.downtime_floor_ms},
            {"auto-converge", c.auto_converge.enabled}}},
          {"link",
           {{"rate", setting_text(c, "link.rate")},
            {"rate-bps", c.link.rate_bps},
            {"namespaces", c.link.uses_rig()}}}};
}

Json postcopy_json(const MigrationResult& r) {
  const auto& l = r.fault_latency_us;
  return {{"postcopy-requests", r.postcopy_requests},
          {"fault-latency-us", {{"count", l.count}, {"p50", l.p50}, {"p90", l.p90}, {"p99", l.p99}, {"max", l.max}}},
          {"pages-pushed", r.pages_pushed},
          {"complete-time", r.postcopy_complete_ms},
          {"prepaging", r.prepaging},
          {"pages-requested", r.postcopy_pages_requested},
          {"zero-faults", r.postcopy_zero_faults},
          {"stale-refreshed", r.postcopy_stale_refreshed},
          {"pages-pushed-ahead", r.pages_pushed_ahead},
          {"rate-during-postcopy", r.workload_rate_postcopy},
          {"reconnects", r.postcopy_reconnects},
          {"link-down-time", r.postcopy_link_down_ms}};
}

// The samples every 100 ms, and the events between them (README, "The result document").
Json timeline_json(const TimelineRecord& t) {
  Json samples = Json::array();
  for (const auto& s : t.samples)
    samples.push_back({{"t-ms", s.t_ms},
                       {"phase", s.phase},
                       {"round", s.round},
                       {"bytes", s.bytes},
                       {"mbps", s.mbps},
                       {"pages-sent", s.pages_sent},
                       {"pages-left", s.pages_left},
                       {"dirty-rate", s.dirty_rate}});
  return samples;
}

Json timeline_events_json(const TimelineRecord& t) {
  Json events = Json::array();
  for (const auto& e : t.events) {
    Json v = {{"t-ms", e.t_ms}, {"event", e.event}};
    if (!e.phase.empty()) v["phase"] = e.phase;
    if (e.round >= 0) v["round"] = e.round;
    if (e.pages >= 0) v["pages"] = e.pages;
    events.push_back(std::move(v));
  }
  return events;
}

Json result_json(const MigrationResult& r) {
  Json j;
  j["schema"] = kResultSchema;
  j["status"] = r.completed ? "completed" : "failed";
  if (!r.completed) j["error"] = r.error;
  j["stop-reason"] = r.stop_reason;
  if (!r.source_state.empty()) j["source"] = {{"state", r.source_state}, {"phase", r.source_phase}};
  j["config"] = config_json(r.config);
  if (!r.rig.empty()) j["rig"] = {{"name", r.rig}, {"resumed-guest-in-dst-netns", r.resumed_guest_in_dst_netns}};
  j["host"] = {{"kernel", r.host.kernel},     {"cpu", r.host.cpu},         {"cores", r.host.cores},
               {"memory", r.host.memory_bytes}, {"transport", r.transport}, {"tracker", r.tracker},
               {"policy", r.policy}};
  if (r.host.calibration_before_us >= 0)
    j["host"]["calibration-us"] = {{"before", r.host.calibration_before_us}, {"after", r.host.calibration_after_us}};
  j["total-time"] = r.total_time_ms;
  j["downtime"] = r.downtime_ms;
  const auto& d = r.downtime_breakdown;
  j["downtime-breakdown"] = {
      {"freeze", d.freeze}, {"final-collect", d.final_collect}, {"final-send", d.final_send}, {"resume", d.resume}};
  if (d.resume_running >= 0) j["downtime-breakdown"]["resume-running"] = d.resume_running;
  j["setup-time"] = r.setup_time_ms;
  const auto& sb = r.setup_breakdown;
  j["setup-breakdown"] = {{"attach", sb.attach},       {"tracker-probe", sb.tracker_probe},
                          {"mappings", sb.mappings},   {"connect", sb.connect},
                          {"senders", sb.senders},     {"tracker-start", sb.tracker_start},
                          {"other", sb.other}};
  j["tracker-protect-time"] = r.tracker_protect_ms;
  j["destination-prepare-time"] = r.destination_prepare_time_ms;
  j["group-wait-time"] = r.group_wait_ms;
  j["end-to-end-time"] = r.end_to_end_time_ms;
  j["population-time"] = r.population_ms;
  j["destination-ram"] = r.destination_ram;
  j["ram"] = {{"total", r.ram_total},
              {"transferred", r.transferred},
              {"normal", r.pages_normal},
              {"duplicate", r.pages_duplicate},
              {"compressed", r.pages_compressed},
              {"resent", r.pages_resent},
              {"dirty-sync-count", r.dirty_sync_count},
              {"mbps", r.mbps},
              {"pages-per-second", r.pages_per_second}};
  Json rounds = Json::array();
  for (const auto& rd : r.rounds)
    rounds.push_back({{"round", rd.round},
                      {"pages", rd.pages},
                      {"bytes", rd.bytes},
                      {"duration", rd.duration_ms},
                      {"dirty-rate", rd.dirty_rate}});
  j["rounds"] = std::move(rounds);
  j["timeline-interval"] = r.timeline.interval_ms;
  j["timeline"] = timeline_json(r.timeline);
  j["timeline-events"] = timeline_events_json(r.timeline);
  j["compression"] = {{"ratio", r.compression_ratio},
                      {"cpu-seconds-source", r.cpu_seconds_source},
                      {"cpu-seconds-destination", r.cpu_seconds_destination}};
  if (!r.compression_detail.empty()) {
    Json detail = Json::parse(r.compression_detail, nullptr, false);
    if (!detail.is_discarded())
      for (auto& [key, value] : detail.items()) j["compression"][key] = value;
  }
  j["send-path"] = {{"pages", r.send_pages},
                    {"cpu-seconds", r.send_cpu_seconds},
                    {"cpu-us-per-page", r.send_pages ? r.send_cpu_seconds * 1e6 / double(r.send_pages) : 0.0}};
  if (r.send_run_queue_wait_seconds >= 0) j["send-path"]["run-queue-wait-seconds"] = r.send_run_queue_wait_seconds;
  j["auto-converge"] = {{"cpu-throttle-percentage", r.cpu_throttle_percentage}, {"mechanism", r.throttle_mechanism}};
  j["workload"] = {{"rate-before", r.workload_rate_before},
                   {"rate-during", r.workload_rate_during},
                   {"rate-after", r.workload_rate_after}};
  j["verify"] = {{"ok", r.verify_ok}, {"pages", r.verify_pages}, {"time", r.verify_time_ms}};
  if (r.model)
    j["model"] = {{"r", r.model->ratio},
                  {"rounds", r.model->rounds},
                  {"converges", r.model->converges},
                  {"total-time", r.model->total_s * 1e3},
                  {"downtime", r.model->downtime_s * 1e3},
                  {"link-bytes-per-second", r.model_input.link_bytes_per_s},
                  {"dirty-pages-per-second", r.model_input.dirty_pages_per_s},
                  {"resume-time", r.model_input.resume_s * 1e3}};
  if (r.config.migration.mode != MigrationMode::precopy) j["postcopy"] = postcopy_json(r);
  return j;
}

// Strings that are not UTF-8 (an error quoting a peer's bytes) are replaced, never thrown on.
std::string dump(const Json& j) { return j.dump(2, ' ', false, Json::error_handler_t::replace) + "\n"; }

// The directory is made if missing (`livemig run --out new/dir/run.json`).
Result<void> write_text(const std::string& text, const std::string& path) {
  const auto dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty() && !std::filesystem::create_directories(dir, ec) && ec)
    return Error::sys(ec.value(), strf("write results %s: create %s", path.c_str(), dir.c_str()));
  std::ofstream out(path, std::ios::trunc);
  if (!out) return Error::from_errno(strf("write results %s", path.c_str()));
  out << text;
  out.close();
  if (!out) return Error::from_errno(strf("write results %s", path.c_str()));
  return ok();
}

}  // namespace

std::string result_to_json(const MigrationResult& r) { return dump(result_json(r)); }

Result<void> write_result(const MigrationResult& r, const std::string& path) {
  return write_text(result_to_json(r), path);
}

std::string group_to_json(const GroupRunResult& run) {
  const GroupResult& g = run.group;
  const GroupConfig& c = run.config.group;
  Json j;
  j["schema"] = kGroupResultSchema;
  j["name"] = run.config.name;
  j["status"] = g.completed() ? "completed" : "failed";
  if (g.failed_vm) {
    j["failed-vm"] = *g.failed_vm + 1;
    j["error"] = g.failure;
  }
  j["strategy"] = strategy_name(g.strategy);
  j["vm-count"] = g.vms.size();
  j["link-rate"] = c.link_rate;
  j["total-time"] = g.total_time_ms;
  j["migration-time"] = g.migration_time_ms;
  j["downtime"] = g.downtime_ms;
  if (g.strategy == GroupStrategy::serial_correlated) j["freeze"] = g.freeze_ms;
  Json per_vm = Json::array();
  for (size_t i = 0; i < g.vms.size(); i++) {
    const GroupVmFigures& f = g.figures[i];
    Json v = {{"vm", i + 1},
              {"status", g.vms[i].completed ? "completed" : "failed"},
              {"weight", vm_weight(c, i)},
              {"started", f.started},
              {"start", f.start_ms},
              {"ready", f.ready_ms},
              {"sending", f.sending_ms},
              {"mode", mode_name(f.mode)},
              {"resumed", f.resumed_ms},
              {"completed", f.completed_ms},
              {"downtime", f.downtime_ms},
              {"link-bytes", i < g.link.bytes.size() ? g.link.bytes[i] : 0},
              {"contended-link-bytes", i < g.link.contended_bytes.size() ? g.link.contended_bytes[i] : 0}};
    if (!g.vms[i].completed) {
      v["error"] = g.vms[i].error;
      v["source-rate-after"] = i < run.source_rate_after.size() ? run.source_rate_after[i] : 0.0;
      if (f.failed_in) {
        v["failed-in"] = source_phase_name(*f.failed_in);
        v["lost"] = f.lost;  // after a post-copy resume: neither side runs it on
      }
    }
    per_vm.push_back(std::move(v));
  }
  j["vm-figures"] = std::move(per_vm);
  j["link"] = {{"bytes-per-second", g.link_bytes_per_s},
               {"busy-time", g.link.busy_s * 1e3},
               {"pages", g.link.pages},
               {"bucket-ms", g.link.bucket_ms},
               {"series", g.link.series}};
  const ModelInput& in = g.model_input;
  if (!g.model) j["no-model"] = g.no_model;
  if (g.model)
    j["model"] = {{"multi", strategy_name(g.strategy)},
                  {"r", g.model->ratio},
                  {"rounds", g.model->rounds},
                  {"converges", g.model->converges},
                  {"total-time", g.model->total_s * 1e3},
                  {"downtime", g.model->downtime_s * 1e3},
                  {"link-bytes-per-second", in.link_bytes_per_s},
                  {"dirty-pages-per-second", in.dirty_pages_per_s},
                  {"vm-bytes", in.vm_bytes},
                  {"threshold-bytes", in.threshold_bytes},
                  {"resume-time", in.resume_s * 1e3}};
  Json vms = Json::array();
  for (const auto& r : g.vms) vms.push_back(result_json(r));
  j["vms"] = std::move(vms);
  return dump(j);
}

Result<void> write_group_result(const GroupRunResult& r, const std::string& path) {
  return write_text(group_to_json(r), path);
}

}  // namespace lm::engine
