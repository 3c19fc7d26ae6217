// livemig snapshot --pid PID --out FILE: captures the migratable pages of a
// live process (private writable memory, as the source engine would send
// it) into a corpus file for `livemig bench compress --corpus FILE`.
//
// By default only pages that exist (present or swapped, by PAGEMAP_SCAN) are
// taken: a heap's untouched reservations would otherwise fill the corpus with
// zero pages the process never had. The process keeps running; a page it
// writes during the capture may be caught half-written, which does not matter
// for a compression corpus.
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "compress/corpus.hpp"
#include "dirtytrack/kernel_abi.hpp"
#include "dirtytrack/maps.hpp"
#include "dirtytrack/page_reader.hpp"
#include "dirtytrack/pagemap_scan.hpp"
#include "dirtytrack/ranges.hpp"
#include "harness/cli.hpp"
#include "harness/commands.hpp"

namespace lm::cmd {
namespace {

// Pages to capture: present or swapped pages of the migratable mappings.
Result<dt::RangeList> pages_to_capture(pid_t pid, bool all_pages, std::string& note) {
  auto maps = LM_TRY(dt::read_maps(pid));
  dt::MappingList migratable;
  for (auto& m : maps)
    if (dt::is_migratable(m)) migratable.push_back(m);
  dt::RangeList ranges = dt::ranges_of(migratable);
  if (all_pages) return ranges;
  auto scanner = dt::PagemapScanner::open(pid);
  if (!scanner) {
    note = "PAGEMAP_SCAN unavailable (" + scanner.error().message + "): every page of the mappings taken";
    return ranges;
  }
  const dt::ScanQuery present{0, 0, 0, PAGE_IS_PRESENT | PAGE_IS_SWAPPED, PAGE_IS_PRESENT | PAGE_IS_SWAPPED};
  dt::RangeList out;
  for (auto& r : ranges) LM_TRY_CTX(scanner->scan(r, present, out), strf("scan pid %d", pid));
  return out;
}

std::string process_name(pid_t pid) {
  std::ifstream f(strf("/proc/%d/comm", pid));
  std::string name;
  std::getline(f, name);
  return name;
}

Result<uint64_t> snapshot(pid_t pid, const std::string& path, uint64_t max_pages, bool all_pages) {
  std::string note;
  dt::RangeList ranges = LM_TRY(pages_to_capture(pid, all_pages, note));
  if (!note.empty()) std::fprintf(stderr, "livemig snapshot: %s\n", note.c_str());
  uint64_t total = dt::total_pages(ranges);
  // Even sampling when the process is larger than the cap.
  std::vector<uint64_t> addrs;
  addrs.reserve(std::min(total, max_pages));
  uint64_t index = 0, next = 0;
  for (auto& r : ranges)
    for (uint64_t a = r.start; a < r.end; a += kPageSize, index++) {
      if (total > max_pages && index < next) continue;
      addrs.push_back(a);
      next = (addrs.size() * total) / max_pages;
    }
  dt::RangeList selected;
  for (uint64_t a : addrs) dt::append_merge(selected, {a, a + kPageSize});

  auto writer = LM_TRY(compress::CorpusWriter::create(path, pid, strf("pid %d %s", pid, process_name(pid).c_str()),
                                                      addrs));
  dt::PageReader reader(pid);
  constexpr uint64_t kChunk = 256;  // pages per read: a reused 1 MiB buffer
  std::vector<std::byte> buf(kChunk * kPageSize);
  uint64_t failed = 0;
  dt::RangeList chunk;
  uint64_t chunk_pages = 0;
  auto flush = [&]() -> Result<void> {
    if (!chunk_pages) return ok();
    auto report = LM_TRY(reader.read(chunk, {buf.data(), chunk_pages * kPageSize}));
    failed += dt::total_pages(report.failed);
    LM_TRY(writer.append(reinterpret_cast<const uint8_t*>(buf.data()), chunk_pages));
    chunk.clear();
    chunk_pages = 0;
    return ok();
  };
  for (auto& r : selected)
    for (uint64_t a = r.start; a < r.end;) {
      uint64_t n = std::min((r.end - a) / kPageSize, kChunk - chunk_pages);
      chunk.push_back({a, a + n * kPageSize});
      chunk_pages += n;
      a += n * kPageSize;
      if (chunk_pages == kChunk) LM_TRY(flush());
    }
  LM_TRY(flush());
  LM_TRY(writer.finish());
  if (failed) std::fprintf(stderr, "livemig snapshot: %llu pages vanished during the capture (zero-filled)\n",
                           (unsigned long long)failed);
  return uint64_t(addrs.size());
}

}  // namespace

Run snapshot(CLI::App& app) {
  struct Args {
    uint64_t pid = 0;
    std::string out;
    uint64_t max_pages = 262144;  // 1 GiB
    bool all_pages = false;
  };
  auto a = std::make_shared<Args>();
  add_pid(app, a->pid, "process to capture");
  app.add_option("--out", a->out, "corpus file to write")->required();
  app.add_option("--max-pages", a->max_pages, "at most this many pages, sampled evenly over the address space")
      ->transform(u64_value())
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_flag("--all-pages", a->all_pages, "also take pages the process never touched (read as zero)");
  return [a] {
    auto r = snapshot(pid_t(a->pid), a->out, a->max_pages, a->all_pages);
    if (!r) {
      std::fprintf(stderr, "livemig: snapshot pid %llu: %s\n", (unsigned long long)a->pid, r.error().message.c_str());
      return 1;
    }
    std::printf("%llu pages of pid %llu written to %s\n", (unsigned long long)*r, (unsigned long long)a->pid,
                a->out.c_str());
    return 0;
  };
}

}  // namespace lm::cmd
