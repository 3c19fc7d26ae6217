#include "engine/image_sink.hpp"

#include <sys/mman.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>

#include "common/clock.hpp"
#include "engine/admission.hpp"
#include "engine/source.hpp"

namespace lm::engine {

// The image's memory is the engine's own (nothing maps it elsewhere):
// anonymous memory on huge pages, written in before `ready` when the table
// fits in half the memory available and in an explicit --max-ram; else 4 KiB
// pages committed as they arrive (a process may reserve far more address
// space than it uses), which the destination charges page by page.
Result<std::vector<SinkRegion>> ImageSink::prepare(const transport::MappingTable& table, ServeFaults,
                                                   const SinkWait&) {
  const uint64_t bytes = table.total_bytes();
  const bool populate =
      bytes <= mem_available_bytes().value_or(0) / 2 && (max_ram_bytes_ == 0 || bytes <= max_ram_bytes_);
  auto added = LM_TRY(add(table, populate));
  prepared_.kind = "anon-thp";
  for (const auto& r : regions_) prepared_.population_ns += r.population_ns();
  return added;
}

namespace {

bool in_table(const transport::MappingTable& table, const MappedMemfd& r) {
  for (const auto& e : table.entries())
    if (r.addr() == e.start && r.bytes() == e.end - e.start) return true;
  return false;
}

// The pages of `from` that `to` covers too move into `to` (mremap: nothing
// is copied, a sparse range stays sparse): a grown mapping keeps what the
// destination holds of it; a replaced one the source sends whole anyway.
Result<void> move_overlap(const MappedMemfd& from, const MappedMemfd& to) {
  const uint64_t lo = std::max(from.addr(), to.addr());
  const uint64_t hi = std::min(from.addr() + from.bytes(), to.addr() + to.bytes());
  if (lo >= hi) return ok();
  void* moved = mremap(from.base() + (lo - from.addr()), hi - lo, hi - lo, MREMAP_MAYMOVE | MREMAP_FIXED,
                       to.base() + (lo - to.addr()));
  if (moved == MAP_FAILED)
    return Error::from_errno(strf("destination image: moving [0x%llx,0x%llx) into the region of a changed mapping",
                                  (unsigned long long)lo, (unsigned long long)hi));
  // The hole stays reserved until `from` is unmapped whole: nothing else may be mapped there meanwhile.
  if (mmap(from.base() + (lo - from.addr()), hi - lo, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
           -1, 0) == MAP_FAILED)
    return Error::from_errno(strf("destination image: reserving [0x%llx,0x%llx) again", (unsigned long long)lo,
                                  (unsigned long long)hi));
  return ok();
}

}  // namespace

// A region whose mapping went away or changed extent is unmapped now (after
// adopt moved what a new region overlaps into it).
Result<std::vector<PageRange>> ImageSink::drop(const transport::MappingTable& table) {
  std::vector<PageRange> dropped;
  std::erase_if(regions_, [&](const MappedMemfd& r) {
    if (in_table(table, r)) return false;
    dropped.push_back({r.addr(), r.addr() + r.bytes()});
    return true;
  });
  return dropped;
}

// Memory for every mapping of the table not held yet.
Result<std::vector<SinkRegion>> ImageSink::adopt(const transport::MappingTable& table) { return add(table, false); }

std::vector<PageRange> ImageSink::held() const {
  std::vector<PageRange> out;
  for (const auto& r : regions_) out.push_back({r.addr(), r.addr() + r.bytes()});
  return out;
}

Result<std::vector<SinkRegion>> ImageSink::add(const transport::MappingTable& table, bool populate) {
  std::vector<SinkRegion> added;
  for (const auto& e : table.entries()) {
    bool held = false;
    for (const auto& r : regions_) held |= r.addr() == e.start && r.bytes() == e.end - e.start;
    if (held) continue;
    auto region = LM_TRY_CTX(MappedMemfd::anonymous(e.start, e.end - e.start, populate), "destination image");
    for (const auto& old : regions_) LM_TRY(move_overlap(old, region));
    regions_.push_back(std::move(region));
    added.push_back(regions_.back().region());
  }
  return added;
}

Result<void> ImageSink::take_exec_state(const transport::ExecStateView& state) {
  ImageExecState image{};
  if (state.kind != uint32_t(ExecStateKind::image) || state.state.size() != sizeof image) return ok();
  std::memcpy(&image, state.state.data(), sizeof image);
  if (image.source_pid != 0 && image.source_pid <= uint64_t(INT_MAX)) source_pid_ = pid_t(image.source_pid);
  return ok();
}

Result<PostcopyGuestRam> ImageSink::postcopy_ram() {
  return Error::msg("post-copy needs a guest destination");
}

Result<uint64_t> ImageSink::wait_running(const SinkWait&) { return now_ns(); }

// The regions of the final mapping table, with its protections (the last
// drop left no others).
Result<void> ImageSink::keep(const transport::MappingTable& table) {
  image_.clear();
  for (const auto& e : table.entries())
    for (const auto& r : regions_)
      if (r.addr() == e.start && r.bytes() == e.end - e.start) image_.push_back({r.addr(), r.bytes(), e.prot, r.base()});
  return ok();
}

void ImageSink::discard() {
  image_.clear();
  regions_.clear();
}

}  // namespace lm::engine
