// How fast the guest can produce page versions of each content profile and
// write mode (one thread, CPU-bound part of a step), and how fast verify
// checks pages. Suite perf; writes JSON under results/ when run by meson.
#include <benchmark/benchmark.h>

#include <vector>

#include "harness/guest/content.hpp"
#include "harness/guest/layout.hpp"

namespace lm::guest {
namespace {

void BM_WritePageVersion(benchmark::State& state) {
  auto profile = static_cast<ContentProfile>(state.range(0));
  auto mode = static_cast<WriteMode>(state.range(1));
  alignas(64) static uint8_t page[kPageSize];
  uint64_t version = 1;
  for (auto _ : state) {
    write_page_version(page, profile, mode, 1, version % 1024, version);
    benchmark::DoNotOptimize(page);
    version++;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * (mode == WriteMode::page ? kPageSize : 16));
  state.SetLabel(std::string(content_profile_name(profile)) + "/" + std::string(write_mode_name(mode)));
}
BENCHMARK(BM_WritePageVersion)->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1}});

void BM_VerifyRam(benchmark::State& state) {
  std::vector<uint8_t> ram(16 << 20, 0);
  WorkloadConfig cfg;
  cfg.content = ContentProfile::mixed;
  auto view = RamView::initialize(ram.data(), kDefaultRamAddr, ram.size(), cfg);
  if (!view) return state.SkipWithError(view.error().message.c_str());
  for (uint64_t i = 0; i < view->data_pages(); i++) {  // every page at version 1
    write_page_version(view->data_page(i), cfg.content, cfg.write, cfg.seed, i, 1);
    view->versions[i] = 1;
  }
  for (auto _ : state) {
    auto r = verify_ram(*view, PendingPages::strict);
    if (!r) return state.SkipWithError(r.error().message.c_str());
  }
  state.SetItemsProcessed(state.iterations() * view->data_pages());
  state.SetBytesProcessed(state.iterations() * view->data_pages() * kPageSize);
}
BENCHMARK(BM_VerifyRam)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace lm::guest

BENCHMARK_MAIN();
