// Dirty tracking benchmarks (Google Benchmark; JSON under results/):
//   BM_Collect/<tracker>/<ram MiB>/<dirty per mille>: one collect() after the
//     target dirtied that fraction of its RAM (manual time = collect only).
//   BM_RemoteSyscall: one injected getpid() in a stopped target.
//   BM_Read{ProcessVmReadv,Memcpy}: the page reader against memcpy of the
//     same bytes, same run.
//   BM_FirstWrite/<tracker>/<ram MiB>: what the target pays for its first
//     write to each page after a collect re-protected it (manual time = the
//     target's own clock over its writes; "none": no tracker, same writes).
// The 8 GiB points run only with LM_BENCH_BIG=1 (they need ~9 GiB free).
// LM_BENCH_SIZES=128,256,512 replaces the RAM sizes (MiB) of BM_Collect, for
// a slope with RAM size where 1 GiB does not fit (the soft-dirty VM).
#include <benchmark/benchmark.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <string>

#include "common/clock.hpp"
#include "dirtytrack/page_reader.hpp"
#include "dirtytrack/process_freezer.hpp"
#include "dirtytrack/tracker.hpp"

namespace {

using namespace lm::dt;
constexpr uint64_t P = 4096;

// A forked child owning `bytes` of populated anonymous RAM; on request it
// writes one word into `count` pages spread evenly over the RAM and answers
// with the nanoseconds those writes took on its clock.
class DirtyChild {
 public:
  explicit DirtyChild(uint64_t bytes) : bytes_(bytes) {
    int to[2], from[2];
    if (pipe(to) || pipe(from)) std::abort();
    void* ram = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (ram == MAP_FAILED) std::abort();
    ram_ = uint64_t(ram);
    pid_ = fork();
    if (pid_ == 0) {
      close(to[1]);
      close(from[0]);
      auto* p = static_cast<volatile char*>(ram);
      for (uint64_t off = 0; off < bytes; off += P) p[off] = 1;
      uint64_t gen = 1, took_ns = 0;
      if (write(from[1], &took_ns, sizeof took_ns) != sizeof took_ns) _exit(1);
      uint64_t count;
      while (read(to[0], &count, sizeof count) == sizeof count) {
        uint64_t pages = bytes / P;
        uint64_t stride = count ? pages / count : pages;
        if (stride == 0) stride = 1;
        gen++;
        uint64_t t0 = lm::now_ns();
        for (uint64_t i = 0, n = 0; i < pages && n < count; i += stride, n++)
          *reinterpret_cast<volatile uint64_t*>(p + i * P + 8) = gen;
        took_ns = lm::now_ns() - t0;
        if (write(from[1], &took_ns, sizeof took_ns) != sizeof took_ns) _exit(1);
      }
      _exit(0);
    }
    munmap(ram, bytes);
    close(to[0]);
    close(from[1]);
    to_ = to[1];
    from_ = from[0];
    uint64_t populated;
    if (read(from_, &populated, sizeof populated) != sizeof populated) std::abort();
  }
  ~DirtyChild() {
    close(to_);
    close(from_);
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  // Returns the nanoseconds the child's writes took.
  uint64_t dirty(uint64_t pages) {
    uint64_t took_ns;
    if (write(to_, &pages, sizeof pages) != sizeof pages || read(from_, &took_ns, sizeof took_ns) != sizeof took_ns)
      std::abort();
    return took_ns;
  }
  pid_t pid() const { return pid_; }
  uint64_t ram() const { return ram_; }
  uint64_t bytes() const { return bytes_; }

 private:
  uint64_t bytes_, ram_ = 0;
  pid_t pid_ = -1;
  int to_ = -1, from_ = -1;
};

// One child per RAM size, reused by every case of that size (populating
// GiBs is slow on these machines); only one lives at a time.
DirtyChild& child_of(uint64_t bytes) {
  static std::unique_ptr<DirtyChild> current;
  if (!current || current->bytes() != bytes) {
    current.reset();
    current = std::make_unique<DirtyChild>(bytes);
  }
  return *current;
}

const DirtyTrackCaps& caps() {
  static const DirtyTrackCaps c = probe_dirtytrack();
  return c;
}

// A tracker of `tracker_name` started on the child's RAM; null (the
// benchmark skipped with the reason) when it cannot be made or started.
std::unique_ptr<Tracker> start_tracker(benchmark::State& state, const char* tracker_name, const DirtyChild& child) {
  auto made = make_tracker(tracker_name, caps());
  if (!made.ok()) {
    state.SkipWithError(made.error().message.c_str());
    return nullptr;
  }
  TrackRequest req;
  req.pid = child.pid();
  req.scope = {ScopeKind::ranges, {{child.ram(), child.ram() + child.bytes()}}};
  if (auto started = (*made)->start(req); !started.ok()) {
    state.SkipWithError(started.error().message.c_str());
    return nullptr;
  }
  return std::move(*made);
}

void BM_Collect(benchmark::State& state, const char* tracker_name) {
  uint64_t bytes = uint64_t(state.range(0)) << 20;
  uint64_t per_mille_x10 = uint64_t(state.range(1));  // dirty fraction in 1/10000
  DirtyChild& child = child_of(bytes);
  auto tracker = start_tracker(state, tracker_name, child);
  if (!tracker) return;
  uint64_t pages = bytes / P;
  uint64_t dirty = std::max<uint64_t>(1, pages * per_mille_x10 / 10000);
  uint64_t found = 0;
  (void)tracker->collect();
  for (auto _ : state) {
    child.dirty(dirty);
    auto r = tracker->collect();
    if (!r.ok()) {
      state.SkipWithError(r.error().message.c_str());
      break;
    }
    found = r->dirty_pages;
    state.SetIterationTime(double(r->scan_ns) * 1e-9);
  }
  (void)tracker->stop();
  state.counters["ram_MiB"] = double(bytes >> 20);
  state.counters["dirty_pages"] = double(dirty);
  state.counters["found_pages"] = double(found);
  state.counters["dirty_fraction"] = double(per_mille_x10) / 10000.0;
}

void collect_args(benchmark::internal::Benchmark* b, bool hash) {
  std::vector<int64_t> sizes = {256, 1024, 4096};
  if (std::getenv("LM_BENCH_BIG")) sizes.push_back(8192);
  if (const char* list = std::getenv("LM_BENCH_SIZES")) {
    sizes.clear();
    std::istringstream in(list);
    for (std::string mib; std::getline(in, mib, ',');)
      if (int64_t v = std::atoll(mib.c_str()); v > 0) sizes.push_back(v);
  }
  for (int64_t mib : sizes) {
    if (hash && mib > 1024 && !std::getenv("LM_BENCH_BIG")) continue;  // seconds per round
    for (int64_t frac : {10, 100, 1000, 10000}) b->Args({mib, frac});
  }
  b->UseManualTime()->Unit(benchmark::kMicrosecond)->Iterations(hash ? 3 : 20);
}

BENCHMARK_CAPTURE(BM_Collect, uffd_wp, "uffd-wp")->Apply([](auto* b) { collect_args(b, false); });
// Skips with the reason on kernels without CONFIG_MEM_SOFT_DIRTY (tests/vm runs it).
BENCHMARK_CAPTURE(BM_Collect, soft_dirty, "soft-dirty")->Apply([](auto* b) { collect_args(b, false); });
BENCHMARK_CAPTURE(BM_Collect, hash, "hash")->Apply([](auto* b) { collect_args(b, true); });

// On a host where this fault is expensive (~36-40 µs on a PVM host against
// ~1 µs under KVM), it is what slows a guest that writes fast, not the collect.
void BM_FirstWrite(benchmark::State& state, const char* tracker_name) {
  uint64_t bytes = uint64_t(state.range(0)) << 20;
  DirtyChild& child = child_of(bytes);
  std::unique_ptr<Tracker> tracker;
  if (std::strcmp(tracker_name, "none") != 0) {
    tracker = start_tracker(state, tracker_name, child);
    if (!tracker) return;
  }
  uint64_t pages = bytes / P;
  for (auto _ : state) {
    if (tracker) {
      if (auto r = tracker->collect(); !r.ok()) {  // re-protects what the last pass wrote
        state.SkipWithError(r.error().message.c_str());
        break;
      }
    }
    state.SetIterationTime(double(child.dirty(pages)) * 1e-9);
  }
  if (tracker) (void)tracker->stop();
  state.counters["pages"] = double(pages);
  state.counters["ns_per_page"] =
      benchmark::Counter(double(pages), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}
BENCHMARK_CAPTURE(BM_FirstWrite, uffd_wp, "uffd-wp")->Arg(64)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);
BENCHMARK_CAPTURE(BM_FirstWrite, none, "none")->Arg(64)->UseManualTime()->Unit(benchmark::kMillisecond)->Iterations(10);

void BM_RemoteSyscall(benchmark::State& state) {
  DirtyChild& child = child_of(64ull << 20);
  auto f = ProcessFreezer::seize(child.pid());
  if (!f.ok()) {
    state.SkipWithError(f.error().message.c_str());
    return;
  }
  for (auto _ : state) {
    auto r = (*f)->syscall(SYS_getpid);
    if (!r.ok() || *r != child.pid()) {
      state.SkipWithError("getpid in the target failed");
      break;
    }
  }
  (void)(*f)->release();
  state.SetItemsProcessed(int64_t(state.iterations()));
}
BENCHMARK(BM_RemoteSyscall)->Unit(benchmark::kMicrosecond);

void BM_SeizeRelease(benchmark::State& state) {
  DirtyChild& child = child_of(64ull << 20);
  for (auto _ : state) {
    auto f = ProcessFreezer::seize(child.pid());
    if (!f.ok() || !(*f)->release().ok()) {
      state.SkipWithError("seize/release failed");
      break;
    }
  }
}
BENCHMARK(BM_SeizeRelease)->Unit(benchmark::kMicrosecond);

constexpr uint64_t kReadBytes = 256ull << 20;

void BM_ReadProcessVmReadv(benchmark::State& state) {
  DirtyChild& child = child_of(kReadBytes);
  uint64_t chunk = uint64_t(state.range(0)) << 10;
  std::vector<std::byte> buf(chunk);
  std::memset(buf.data(), 0, buf.size());
  PageReader reader(child.pid());
  for (auto _ : state) {
    for (uint64_t off = 0; off < kReadBytes; off += chunk) {
      lm::PageRange r{child.ram() + off, child.ram() + off + chunk};
      auto rep = reader.read(std::span<const lm::PageRange>(&r, 1), buf);
      if (!rep.ok() || !rep->failed.empty()) {
        state.SkipWithError("read failed");
        return;
      }
    }
    benchmark::DoNotOptimize(buf.data());
  }
  state.SetBytesProcessed(int64_t(state.iterations() * kReadBytes));
}
BENCHMARK(BM_ReadProcessVmReadv)->Arg(1024)->Arg(16384)->Arg(262144)->Unit(benchmark::kMillisecond);

void BM_ReadMemcpy(benchmark::State& state) {
  uint64_t chunk = uint64_t(state.range(0)) << 10;
  static std::vector<char> src;
  if (src.size() != kReadBytes) {
    src.resize(kReadBytes);
    for (uint64_t i = 0; i < kReadBytes; i += P) src[i] = char(i);
  }
  std::vector<char> dst(chunk, 0);
  for (auto _ : state) {
    for (uint64_t off = 0; off < kReadBytes; off += chunk) std::memcpy(dst.data(), src.data() + off, chunk);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations() * kReadBytes));
}
BENCHMARK(BM_ReadMemcpy)->Arg(1024)->Arg(16384)->Arg(262144)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
