// libFuzzer target for one decoder, chosen at compile time by LM_FUZZ_CODEC
// (a lm::Codec wire value). The destination page sits between guard pages
// and starts with content derived from the input (the delta decoder patches
// what is there). Built with clang -fsanitize=fuzzer,address,undefined when
// clang is found, and always with g++ against tests/fuzz/fuzz_driver.cpp.
#include <cstring>
#include <random>

#include "compress/codec.hpp"
#include "fuzz_target.hpp"
#include "guarded_page.hpp"
#ifndef LM_LIBFUZZER
#include "compress/synthetic.hpp"
#endif

#ifndef LM_FUZZ_CODEC
#error "define LM_FUZZ_CODEC to the codec id under test"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lm::compress;
  static CodecContext ctx;  // reused like a worker's
  static testing::GuardedPage dst;
  std::memset(dst.data(), size ? data[0] : 0, lm::kPageSize);
  testing::GuardedBuffer in(size);  // a read past the payload faults
  if (size) std::memcpy(in.data(), data, size);
  auto r = decode_page(lm::Codec(LM_FUZZ_CODEC), ctx, {in.data(), size}, dst.data());
  (void)r;
  return 0;
}

#ifndef LM_LIBFUZZER
// Valid payloads of the codec for every content class.
std::vector<FuzzInput> fuzz_seeds() {
  using namespace lm::compress;
  const lm::Codec codec = lm::Codec(LM_FUZZ_CODEC);
  std::mt19937_64 rng(1);
  CodecContext ctx;
  std::vector<FuzzInput> seeds;
  std::vector<uint8_t> page(lm::kPageSize), previous(lm::kPageSize), out(kMaxPayload);
  for (Content c : kAllContents) {
    for (int k = 0; k < 4; k++) {
      fill_page(c, rng, page.data());
      previous = page;
      mutate_page(rng, previous.data(), 1 + unsigned(rng() % 64));
      size_t len = encode_page(codec, {}, ctx, page.data(), previous.data(), out.data(), out.size());
      if (len != kDoesNotFit) seeds.emplace_back(out.begin(), out.begin() + long(len));
    }
  }
  return seeds;
}
#endif
