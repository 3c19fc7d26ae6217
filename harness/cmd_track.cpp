// livemig track: attach a tracker to a live process and print, per round,
// the dirty pages, bytes, scan time and mapping changes.
#include <time.h>

#include <cinttypes>
#include <cstdio>

#include "common/args.hpp"
#include "common/clock.hpp"
#include "common/json.hpp"
#include "dirtytrack/tracker.hpp"
#include "harness/commands.hpp"

namespace lm::cmd {

namespace {

const std::vector<OptionSpec> kSpecs = {
    {"pid", true, "process to track (required)"},
    {"tracker", true, "uffd-wp | soft-dirty | hash | auto (default auto)"},
    {"rounds", true, "number of collect rounds (default 5)"},
    {"interval-ms", true, "time between rounds (default 1000)"},
    {"range", true, "track only START-END (hex addresses) instead of every migratable mapping"},
    {"pages", true, "write the dirty page addresses per round to FILE"},
    {"json", false, "print JSON instead of a table"},
    {"help", false, "show this help"},
};

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

}  // namespace

int track(const Argv& argv) {
  auto args = Args::parse(argv, kSpecs);
  if (!args || args->has("help") || !args->has("pid")) {
    if (!args) std::fprintf(stderr, "livemig track: %s\n", args.error().message.c_str());
    else if (!args->has("help")) std::fprintf(stderr, "livemig track: --pid is required\n");
    std::fprintf(stderr, "usage: livemig track --pid PID [OPTIONS]\n%s", Args::usage(kSpecs).c_str());
    return args && args->has("help") ? 0 : 2;
  }
  auto pid = args->get_u64("pid", 0);
  auto rounds = args->get_u64("rounds", 5);
  auto interval = args->get_u64("interval-ms", 1000);
  for (const Error* e : {pid ? nullptr : &pid.error(), rounds ? nullptr : &rounds.error(),
                         interval ? nullptr : &interval.error()})
    if (e) {
      std::fprintf(stderr, "livemig track: %s\n", e->message.c_str());
      return 2;
    }
  dt::TrackRequest request;
  request.pid = pid_t(*pid);
  if (auto range = args->get("range")) {
    auto dash = range->find('-');
    auto lo = parse_u64(dash == std::string::npos ? "" : "0x" + range->substr(0, dash));
    auto hi = parse_u64(dash == std::string::npos ? "" : "0x" + range->substr(dash + 1));
    if (!lo || !hi || *hi <= *lo) {
      std::fprintf(stderr, "livemig track: --range wants START-END in hex, got '%s'\n", range->c_str());
      return 2;
    }
    request.scope = {dt::ScopeKind::ranges, {{page_floor(*lo), page_ceil(*hi)}}};
  }
  FILE* pages_out = nullptr;
  if (auto path = args->get("pages")) {
    pages_out = std::fopen(path->c_str(), "w");
    if (!pages_out) return fail(Error::from_errno(strf("open %s", path->c_str())));
  }
  bool json = args->has("json");

  dt::DirtyTrackCaps caps = dt::probe_dirtytrack();
  auto tracker = dt::make_tracker(args->get_or("tracker", "auto"), caps);
  if (!tracker) return fail(tracker.error());
  auto started = (*tracker)->start(request);
  if (!started) return fail(std::move(started).error().context(strf("pid %d: start", request.pid)));

  JsonWriter w;
  if (json) {
    w.begin_object().field("pid", int64_t(request.pid)).field("tracker", (*tracker)->name());
    w.field("mappings", uint64_t(started->mappings.size()));
    w.field("populated_pages", dt::total_pages(started->populated));
    w.field("setup_ms", double(started->setup_ns) * 1e-6);
    w.begin_array("rounds");
  } else {
    std::printf("tracking pid %d with %.*s: %zu mappings, %" PRIu64 " populated pages, setup %.3f ms\n",
                request.pid, int((*tracker)->name().size()), (*tracker)->name().data(), started->mappings.size(),
                dt::total_pages(started->populated), double(started->setup_ns) * 1e-6);
    std::printf("%6s %12s %14s %10s %8s\n", "round", "dirty_pages", "dirty_bytes", "scan_ms", "changes");
  }
  int status = 0;
  for (uint64_t round = 1; round <= *rounds; round++) {
    sleep_ms(*interval);
    auto r = (*tracker)->collect();
    if (!r) {
      fail(std::move(r).error().context(strf("round %" PRIu64, round)));
      status = 1;
      break;
    }
    if (json) {
      w.begin_object().field("round", round).field("dirty_pages", r->dirty_pages);
      w.field("dirty_bytes", r->dirty_pages * kPageSize).field("scan_ms", double(r->scan_ns) * 1e-6);
      w.field("mappings", uint64_t(r->mappings.size()));
      w.begin_array("changes");
      for (const auto& c : r->changes) w.value(change_text(c));
      w.end_array().end_object();
    } else {
      std::printf("%6" PRIu64 " %12" PRIu64 " %14" PRIu64 " %10.3f %8zu\n", round, r->dirty_pages,
                  r->dirty_pages * kPageSize, double(r->scan_ns) * 1e-6, r->changes.size());
      for (const auto& c : r->changes) std::printf("         %s\n", change_text(c).c_str());
    }
    if (pages_out) {
      std::fprintf(pages_out, "round %" PRIu64 "\n", round);
      for (const auto& range : r->dirty)
        for (uint64_t a = range.start; a < range.end; a += kPageSize) std::fprintf(pages_out, "%" PRIx64 "\n", a);
    }
  }
  if (json) {
    w.end_array().end_object();
    std::fputs(w.str().c_str(), stdout);
  }
  if (pages_out) std::fclose(pages_out);
  if (auto s = (*tracker)->stop(); !s) {
    fail(s.error());
    status = 1;
  }
  return status;
}

}  // namespace lm::cmd
