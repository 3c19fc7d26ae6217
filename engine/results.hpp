// The result document of one migration: schema-versioned JSON whose field
// names follow QEMU's query-migrate where one exists (total-time, downtime,
// setup-time, ram.transferred, ram.duplicate, ram.normal, dirty-sync-count,
// mbps, postcopy-requests). README.md documents every field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/model.hpp"
#include "engine/config.hpp"

namespace lm::engine {

inline constexpr const char* kResultSchema = "livemig-result/2";  // 2: the timeline

struct RoundRecord {
  unsigned round = 0;
  uint64_t pages = 0;        // pages sent in this round
  uint64_t bytes = 0;        // bytes on the wire in this round
  double duration_ms = 0;
  double dirty_rate = 0;     // pages dirtied per second during this round
};

// The migration every 100 ms (engine/timeline.hpp samples it).
struct TimelineSample {
  double t_ms = 0;           // since the source started (the clock of end-to-end-time)
  std::string phase;         // the source's phase (source_phase_name)
  unsigned round = 0;        // the round being sent, or the last one sent
  uint64_t bytes = 0;        // on the wire so far: page batches, as ram.transferred counts them
  double mbps = 0;           // wire rate since the previous sample, megabits per second
  uint64_t pages_sent = 0;   // so far
  uint64_t pages_left = 0;   // of the round (post-copy: of the pages the destination needs) not yet sent;
                             // after a collect, the next round's dirty set
  double dirty_rate = 0;     // pages per second the collect interval this sample lies in found dirty
                             // (0: no tracking then: setup, the frozen process, post-copy)
};

// What happened between the samples: a phase entered, a round begun, the
// freeze and the resume that bound the downtime.
struct TimelineEvent {
  double t_ms = 0;
  std::string event;   // "phase", "round", "freeze", "resumed"
  std::string phase;   // "phase": its name
  int64_t round = -1;  // "round": its number
  int64_t pages = -1;  // "round": the pages it is to send
};

struct TimelineRecord {
  double interval_ms = 0;
  std::vector<TimelineSample> samples;
  std::vector<TimelineEvent> events;  // in time order
};

struct HostFacts {
  std::string kernel;
  std::string cpu;
  unsigned cores = 0;
  uint64_t memory_bytes = 0;
  // host_calibration_us() just before the run and just after it; negative
  // when not measured. `livemig compare --host-slowdown` sets aside runs
  // made while it was high.
  double calibration_before_us = -1, calibration_after_us = -1;
};
// The kernel, CPU and memory (not the calibration).
HostFacts read_host_facts();

// The calling thread's CPU time, in microseconds, for one fixed piece of
// integer work in a buffer that stays in the core's cache (about 1.4 ms on
// an idle EPYC core); the median of 5. It does not depend on this machine's
// other runnable threads, only on how fast the CPU runs the thread: on a
// shared virtual machine whose host is contended it rose with every other
// figure of the run (docs/benchmarks.md, "A slowed host").
double host_calibration_us();

struct LatencyStats {  // microseconds
  uint64_t count = 0;
  double p50 = 0, p90 = 0, p99 = 0, max = 0;
};
// Percentiles of a sample (sorted in place).
LatencyStats latency_stats(std::vector<double>& samples_us);

// Where the downtime went, by the source's clock (ms; the parts add up to
// `downtime`).
struct DowntimeBreakdown {
  double freeze = 0;         // seizing every thread of the process
  double final_collect = 0;  // the last collect (and a changed mapping table)
  double final_send = 0;     // pre-copy: the pages still dirty; post-copy: the needed-page map; up to the commit
  double resume = 0;         // the commit sent -> the destination's running report received
  // Inside `resume`, when the destination shares this host's clock: the
  // commit sent -> the destination's guest running again (the rest is its
  // report's way back). -1: not known.
  double resume_running = -1;
};

// Where the source's setup went (ms; the parts add up to `setup-time`):
// everything the source does before round 0 that is not waiting for the
// destination's `ready`. Work that runs beside it on threads of its own (the
// host probe and the tracker's preparation beside the handshake, the senders
// from the start) counts only for what setup still had to wait for.
struct SetupBreakdown {
  double attach = 0;        // the target checked (owner, state) and its process opened
  double tracker_probe = 0; // the dirty-tracking backend chosen (host probe), made and prepared (uffd-wp: its
                            // userfaultfd made in the target): what is left of it after `connect`
  double mappings = 0;      // the target's mappings read (/proc/PID/maps)
  double connect = 0;       // every channel opened: connect, hello, authentication, mappings, accept
  double senders = 0;       // compressors, sender buffers (made from the start): what is left after `tracker_start`
  double tracker_start = 0; // the tracker started (its mappings registered; pure post-copy, and a 0 chunk size:
                            // also write-protected, and the populated pages for round 0 found)
  double other = 0;         // the rest (the handshake's table, option checks)
};

struct MigrationResult {
  ScenarioConfig config;
  HostFacts host;
  std::string transport;  // the backend actually used
  std::string tracker;    // the tracker actually used
  std::string policy;
  // A run over a rig (config.link): its name, and whether the resumed guest
  // was seen inside the rig's dst network namespace.
  std::string rig;
  bool resumed_guest_in_dst_netns = false;

  bool completed = false;
  std::string error;        // when failed: why
  std::string stop_reason;  // why pre-copy iteration ended

  // What became of the source process: "killed" (the destination runs the
  // VM), "stopped" (SIGSTOP, for an operator), "running" (kept as a live
  // snapshot, or thawed after a failure); and the source's last phase
  // ("released", "rolled-back", "lost").
  std::string source_state;
  std::string source_phase;

  // Times as QEMU defines them: total-time from the start of the migration
  // to the destination running the VM (or holding the image), without the
  // wait for the destination's preparation (QEMU's destination is started
  // and its RAM preallocated before `migrate`) and without the verification
  // that follows; setup-time is the source's own setup inside it.
  double total_time_ms = 0;
  double downtime_ms = 0;
  double setup_time_ms = 0;
  SetupBreakdown setup_breakdown;
  // The tracker write-protecting the memory chunk by chunk inside round 0
  // (uffd-wp; setup's tracker_start only registered it): the time round 0's
  // thread spent on it while the senders sent the chunks before.
  double tracker_protect_ms = 0;
  DowntimeBreakdown downtime_breakdown;
  double destination_prepare_time_ms = 0;  // the source waiting for the destination's `ready`
  double group_wait_ms = 0;                // held by its group, destination ready, until its turn
  double end_to_end_time_ms = 0;           // everything: preparation, migration, verification, release
  // The destination writing its memory before it said ready (part of its
  // preparation, so of destination_prepare_time_ms), and what that memory is: "hugetlb",
  // "anon-thp", "shmem" (empty from a destination that does not say).
  double population_ms = 0;
  std::string destination_ram;

  // ram.*
  uint64_t ram_total = 0;        // bytes of migrated memory
  uint64_t transferred = 0;      // bytes on the wire (all messages)
  uint64_t pages_normal = 0;     // pages sent with a payload, raw or compressed
  uint64_t pages_duplicate = 0;  // zero (or uniform) pages sent without payload
  uint64_t pages_compressed = 0; // pages sent by a compressing codec
  uint64_t pages_resent = 0;     // pages sent again in rounds after round 0
  unsigned dirty_sync_count = 0; // rounds
  double mbps = 0;               // average wire rate, megabits per second
  double pages_per_second = 0;

  std::vector<RoundRecord> rounds;
  TimelineRecord timeline;

  double compression_ratio = 0;  // raw bytes of pages sent / payload bytes
  // The senders' per-codec counters and, for the adaptive policy, its last
  // plan and estimates, as a JSON object text (compress/ writes them).
  std::string compression_detail;
  double cpu_seconds_source = 0;
  double cpu_seconds_destination = 0;

  // send-path.*: the pre-copy bulk senders alone, all rounds. Their CPU per
  // page is the work of the send path (read, compress, encode, send),
  // which time spent waiting for a CPU on a loaded machine does not change.
  uint64_t send_pages = 0;
  double send_cpu_seconds = 0;
  double send_run_queue_wait_seconds = -1;  // runnable, waiting for a CPU; negative: not known

  unsigned cpu_throttle_percentage = 0;  // auto-converge: the highest throttle applied
  std::string throttle_mechanism;        // how it was applied

  double workload_rate_before = 0;  // workload steps (or ops) per second
  double workload_rate_during = 0;
  double workload_rate_after = 0;

  bool verify_ok = false;
  uint64_t verify_pages = 0;
  double verify_time_ms = 0;  // the source hashing its frozen image and comparing

  std::optional<ModelPrediction> model;
  ModelInput model_input;

  // post-copy
  uint64_t postcopy_requests = 0;
  LatencyStats fault_latency_us;
  uint64_t pages_pushed = 0;
  double postcopy_complete_ms = 0;
  std::string prepaging;                  // the pre-paging policy used
  uint64_t postcopy_pages_requested = 0;  // source: pages served on request
  uint64_t postcopy_zero_faults = 0;      // destination: resolved locally (UFFDIO_ZEROPAGE)
  uint64_t postcopy_stale_refreshed = 0;  // destination: stale pre-copied pages rewritten in place
  uint64_t pages_pushed_ahead = 0;        // pushed pages installed before any fault on them
  double workload_rate_postcopy = 0;      // guest steps per second from resume to completion
  uint64_t postcopy_reconnects = 0;       // broken links recovered from (source's count)
  double postcopy_link_down_ms = 0;       // time without a link, summed
};

}  // namespace lm::engine
