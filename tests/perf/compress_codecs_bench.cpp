// Micro-benchmarks of the page codecs and the classifier (Google Benchmark):
// one page at a time from a 256-page working set of each content class, as a
// worker compresses pages the page reader just copied (in cache).
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "compress/classifier.hpp"
#include "compress/codec.hpp"
#include "compress/synthetic.hpp"

namespace lm::compress {
namespace {

constexpr size_t kSet = 256;

std::vector<uint8_t> make_set(Content c) {
  std::vector<uint8_t> pages(kSet * kPageSize);
  std::mt19937_64 rng(42);
  for (size_t i = 0; i < kSet; i++) fill_page(c, rng, &pages[i * kPageSize]);
  return pages;
}

void BM_Encode(benchmark::State& state, Codec codec, int param, Content content) {
  auto pages = make_set(content);
  std::vector<uint8_t> previous = pages;
  std::mt19937_64 rng(7);
  for (size_t i = 0; i < kSet; i++) mutate_page(rng, &previous[i * kPageSize], 8);
  CodecContext ctx;
  CodecParams params;
  params.lz4_acceleration = codec == Codec::lz4 ? param : 1;
  params.zstd_level = codec == Codec::zstd ? param : 1;
  std::vector<uint8_t> out(kMaxPayload);
  size_t i = 0, bytes_out = 0;
  for (auto _ : state) {
    size_t n = encode_page(codec, params, ctx, &pages[i * kPageSize], &previous[i * kPageSize], out.data(),
                           codec == Codec::raw ? kPageSize : kPageSize - 64);
    bytes_out += n == kDoesNotFit ? kPageSize : n;
    benchmark::DoNotOptimize(out.data());
    i = (i + 1) % kSet;
  }
  state.SetBytesProcessed(int64_t(state.iterations() * kPageSize));
  state.counters["ratio"] = double(state.iterations() * kPageSize) / double(bytes_out ? bytes_out : 1);
}

void BM_Classify(benchmark::State& state, Content content) {
  auto pages = make_set(content);
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(classify(&pages[i * kPageSize]));
    i = (i + 1) % kSet;
  }
  state.SetBytesProcessed(int64_t(state.iterations() * kPageSize));
}

void register_all() {
  struct CodecCase {
    const char* name;
    Codec codec;
    int param;
  } codecs[] = {{"raw", Codec::raw, 0},   {"lz4", Codec::lz4, 1},        {"lz4:8", Codec::lz4, 8},
                {"zstd:1", Codec::zstd, 1}, {"zstd:3", Codec::zstd, 3}, {"wkdm", Codec::wkdm, 0},
                {"delta", Codec::delta, 0}};
  for (Content content : {Content::words, Content::text, Content::random, Content::mixed}) {
    for (auto& c : codecs)
      benchmark::RegisterBenchmark(
          (std::string("encode/") + c.name + "/" + std::string(content_name(content))).c_str(),
          [c, content](benchmark::State& s) { BM_Encode(s, c.codec, c.param, content); });
    benchmark::RegisterBenchmark((std::string("classify/") + std::string(content_name(content))).c_str(),
                                 [content](benchmark::State& s) { BM_Classify(s, content); });
  }
}

}  // namespace
}  // namespace lm::compress

int main(int argc, char** argv) {
  lm::compress::register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
