#include "harness/result_json.hpp"

#include <fstream>

#include "common/json.hpp"

namespace lm::engine {

std::string result_to_json(const MigrationResult& r) {
  JsonWriter w;
  const auto& c = r.config;
  w.begin_object();
  w.field("schema", kResultSchema);
  w.field("status", r.completed ? "completed" : "failed");
  if (!r.completed) w.field("error", r.error);
  w.field("stop-reason", r.stop_reason);
  if (!r.source_state.empty())
    w.begin_object("source").field("state", r.source_state).field("phase", r.source_phase).end_object();

  w.begin_object("config")
      .field("name", c.name)
      .field("mode", mode_name(c.migration.mode))
      .field("transport", c.migration.transport)
      .field("channels", c.migration.channels)
      .field("policy", c.migration.policy)
      .field("workers", c.migration.workers)
      .field("tracker", c.migration.tracker)
      .field("batch-pages", c.migration.batch_pages)
      .begin_object("workload")
      .field("kind", workload_name(c.workload.kind))
      .field("ram", c.workload.ram_bytes)
      .field("rate", c.workload.rate)
      .field("pattern", c.workload.pattern)
      .field("content", c.workload.content)
      .field("write", c.workload.write)
      .field("threads", c.workload.threads)
      .field("prefill", c.workload.prefill)
      .end_object()
      .begin_object("convergence")
      .field("max-rounds", c.convergence.max_rounds)
      .field("max-bytes-factor", c.convergence.max_bytes_factor)
      .field("dirty-pages-threshold", c.convergence.dirty_pages_threshold)
      .field("downtime-target-ms", c.convergence.downtime_target_ms)
      .field("auto-converge", c.auto_converge.enabled)
      .end_object()
      .end_object();

  w.begin_object("host")
      .field("kernel", r.host.kernel)
      .field("cpu", r.host.cpu)
      .field("cores", r.host.cores)
      .field("memory", r.host.memory_bytes)
      .field("transport", r.transport)
      .field("tracker", r.tracker)
      .field("policy", r.policy)
      .end_object();

  w.field("total-time", r.total_time_ms);
  w.field("downtime", r.downtime_ms);
  w.field("setup-time", r.setup_time_ms);

  w.begin_object("ram")
      .field("total", r.ram_total)
      .field("transferred", r.transferred)
      .field("normal", r.pages_normal)
      .field("duplicate", r.pages_duplicate)
      .field("compressed", r.pages_compressed)
      .field("resent", r.pages_resent)
      .field("dirty-sync-count", r.dirty_sync_count)
      .field("mbps", r.mbps)
      .field("pages-per-second", r.pages_per_second)
      .end_object();

  w.begin_array("rounds");
  for (const auto& rd : r.rounds)
    w.begin_object()
        .field("round", rd.round)
        .field("pages", rd.pages)
        .field("bytes", rd.bytes)
        .field("duration", rd.duration_ms)
        .field("dirty-rate", rd.dirty_rate)
        .end_object();
  w.end_array();

  w.begin_object("compression")
      .field("ratio", r.compression_ratio)
      .field("cpu-seconds-source", r.cpu_seconds_source)
      .field("cpu-seconds-destination", r.cpu_seconds_destination)
      .end_object();

  w.begin_object("auto-converge")
      .field("cpu-throttle-percentage", r.cpu_throttle_percentage)
      .field("mechanism", r.throttle_mechanism)
      .end_object();

  w.begin_object("workload")
      .field("rate-before", r.workload_rate_before)
      .field("rate-during", r.workload_rate_during)
      .field("rate-after", r.workload_rate_after)
      .end_object();

  w.begin_object("verify")
      .field("ok", r.verify_ok)
      .field("pages", r.verify_pages)
      .field("time", r.verify_time_ms)
      .end_object();

  if (r.model) {
    w.begin_object("model")
        .field("r", r.model->ratio)
        .field("rounds", r.model->rounds)
        .field("converges", r.model->converges)
        .field("total-time", r.model->total_s * 1e3)
        .field("downtime", r.model->downtime_s * 1e3)
        .field("link-bytes-per-second", r.model_input.link_bytes_per_s)
        .field("dirty-pages-per-second", r.model_input.dirty_pages_per_s)
        .end_object();
  }

  if (c.migration.mode != MigrationMode::precopy) {
    w.begin_object("postcopy")
        .field("postcopy-requests", r.postcopy_requests)
        .begin_object("fault-latency-us")
        .field("count", r.fault_latency_us.count)
        .field("p50", r.fault_latency_us.p50)
        .field("p90", r.fault_latency_us.p90)
        .field("p99", r.fault_latency_us.p99)
        .field("max", r.fault_latency_us.max)
        .end_object()
        .field("pages-pushed", r.pages_pushed)
        .field("complete-time", r.postcopy_complete_ms)
        .field("prepaging", r.prepaging)
        .field("pages-requested", r.postcopy_pages_requested)
        .field("zero-faults", r.postcopy_zero_faults)
        .field("stale-refreshed", r.postcopy_stale_refreshed)
        .field("pages-pushed-ahead", r.pages_pushed_ahead)
        .field("rate-during-postcopy", r.workload_rate_postcopy)
        .field("reconnects", r.postcopy_reconnects)
        .field("link-down-time", r.postcopy_link_down_ms)
        .end_object();
  }
  w.end_object();
  return w.str();
}

Result<void> write_result(const MigrationResult& r, const std::string& path) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return Error::from_errno(strf("write results %s", path.c_str()));
  out << result_to_json(r);
  out.close();
  if (!out) return Error::from_errno(strf("write results %s", path.c_str()));
  return ok();
}

}  // namespace lm::engine
