// livemig track: attach a tracker to a live process and print, per round,
// the dirty pages, bytes, scan time and mapping changes.
#include <time.h>

#include <cinttypes>
#include <cstdio>
#include <memory>
#include <optional>

#include "common/parse.hpp"
#include "common/clock.hpp"
#include "common/json.hpp"
#include "dirtytrack/tracker.hpp"
#include "harness/cli.hpp"
#include "harness/commands.hpp"

namespace lm::cmd {

namespace {

struct TrackArgs {
  uint64_t pid = 0;
  std::string tracker = "auto";
  uint64_t rounds = 5;
  uint64_t interval_ms = 1000;
  std::optional<PageRange> range;
  std::string pages;
  bool json = false;
};

// "START-END" in hex, widened to whole pages.
Result<std::optional<PageRange>> parse_range(std::string_view text) {
  auto dash = text.find('-');
  auto lo = parse_u64(dash == std::string_view::npos ? "" : "0x" + std::string(text.substr(0, dash)));
  auto hi = parse_u64(dash == std::string_view::npos ? "" : "0x" + std::string(text.substr(dash + 1)));
  if (!lo || !hi || *hi <= *lo) return Error::msg("expected START-END in hex");
  return std::optional<PageRange>(PageRange{page_floor(*lo), page_ceil(*hi)});
}

std::string range_text(const dt::Mapping& m) {
  return strf("%" PRIx64 "-%" PRIx64 " %s", m.start, m.end, m.path.empty() ? "[anon]" : m.path.c_str());
}

std::string change_text(const dt::MappingChange& c) {
  std::string kind(dt::change_kind_name(c.kind));
  if (c.kind == dt::MappingChange::Kind::added) return kind + " " + range_text(c.after);
  if (c.kind == dt::MappingChange::Kind::removed) return kind + " " + range_text(c.before);
  return kind + " " + range_text(c.before) + " -> " + range_text(c.after);
}

void sleep_ms(uint64_t ms) {
  timespec ts{time_t(ms / 1000), long(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

int fail(const Error& e) {
  std::fprintf(stderr, "livemig track: %s\n", e.message.c_str());
  return 1;
}

// The output of the rounds: a table, or one JSON document at the end, and
// the dirty page addresses to --pages.
class RoundWriter {
 public:
  RoundWriter(bool json, FILE* pages) : json_(json), pages_(pages) {}

  void start(pid_t pid, std::string_view tracker, const dt::StartInfo& started) {
    if (json_) {
      w_.begin_object().field("pid", int64_t(pid)).field("tracker", tracker);
      w_.field("mappings", uint64_t(started.mappings.size()));
      w_.field("populated_pages", dt::total_pages(started.populated));
      w_.field("setup_ms", double(started.setup_ns) * 1e-6);
      w_.begin_array("rounds");
      return;
    }
    std::printf("tracking pid %d with %.*s: %zu mappings, %" PRIu64 " populated pages, setup %.3f ms\n", pid,
                int(tracker.size()), tracker.data(), started.mappings.size(), dt::total_pages(started.populated),
                double(started.setup_ns) * 1e-6);
    std::printf("%6s %12s %14s %10s %8s\n", "round", "dirty_pages", "dirty_bytes", "scan_ms", "changes");
  }

  void round(uint64_t round, const dt::CollectResult& r) {
    if (json_) {
      w_.begin_object().field("round", round).field("dirty_pages", r.dirty_pages);
      w_.field("dirty_bytes", r.dirty_pages * kPageSize).field("scan_ms", double(r.scan_ns) * 1e-6);
      w_.field("mappings", uint64_t(r.mappings.size()));
      w_.begin_array("changes");
      for (const auto& c : r.changes) w_.value(change_text(c));
      w_.end_array().end_object();
    } else {
      std::printf("%6" PRIu64 " %12" PRIu64 " %14" PRIu64 " %10.3f %8zu\n", round, r.dirty_pages,
                  r.dirty_pages * kPageSize, double(r.scan_ns) * 1e-6, r.changes.size());
      for (const auto& c : r.changes) std::printf("         %s\n", change_text(c).c_str());
    }
    if (pages_) {
      std::fprintf(pages_, "round %" PRIu64 "\n", round);
      for (const auto& range : r.dirty)
        for (uint64_t a = range.start; a < range.end; a += kPageSize) std::fprintf(pages_, "%" PRIx64 "\n", a);
    }
  }

  void finish() {
    if (!json_) return;
    w_.end_array().end_object();
    std::fputs(w_.str().c_str(), stdout);
  }

 private:
  bool json_;
  FILE* pages_;
  JsonWriter w_;
};

int run_track(const TrackArgs& a) {
  dt::TrackRequest request;
  request.pid = pid_t(a.pid);
  if (a.range) request.scope = {dt::ScopeKind::ranges, {*a.range}};
  FILE* pages_out = nullptr;
  if (!a.pages.empty()) {
    pages_out = std::fopen(a.pages.c_str(), "w");
    if (!pages_out) return fail(Error::from_errno(strf("open %s", a.pages.c_str())));
  }
  dt::DirtyTrackCaps caps = dt::probe_dirtytrack();
  auto tracker = dt::make_tracker(a.tracker, caps);
  if (!tracker) return fail(tracker.error());
  auto started = (*tracker)->start(request);
  if (!started) return fail(std::move(started).error().context(strf("pid %d: start", request.pid)));
  RoundWriter out(a.json, pages_out);
  out.start(request.pid, (*tracker)->name(), *started);
  int status = 0;
  for (uint64_t round = 1; round <= a.rounds; round++) {
    sleep_ms(a.interval_ms);
    auto r = (*tracker)->collect();
    if (!r) {
      status = fail(std::move(r).error().context(strf("round %" PRIu64, round)));
      break;
    }
    out.round(round, *r);
  }
  out.finish();
  if (pages_out) std::fclose(pages_out);
  if (auto s = (*tracker)->stop(); !s) status = fail(s.error());
  return status;
}

}  // namespace

Run track(CLI::App& app) {
  auto a = std::make_shared<TrackArgs>();
  add_pid(app, a->pid, "process to track");
  app.add_option("--tracker", a->tracker, "uffd-wp | soft-dirty | hash | auto")->capture_default_str();
  app.add_option("--rounds", a->rounds, "number of collect rounds")->transform(u64_value())->capture_default_str();
  app.add_option("--interval-ms", a->interval_ms, "time between rounds")
      ->transform(u64_value())
      ->capture_default_str();
  add_parsed(app, "--range", a->range, parse_range,
             "track only START-END (hex addresses) instead of every migratable mapping");
  app.add_option("--pages", a->pages, "write the dirty page addresses per round to FILE");
  app.add_flag("--json", a->json, "print JSON instead of a table");
  return [a] { return run_track(*a); };
}

}  // namespace lm::cmd
