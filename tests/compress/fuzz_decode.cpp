// libFuzzer target for one decoder, chosen at compile time by LM_FUZZ_CODEC
// (a lm::Codec wire value). The destination page sits between guard pages
// and starts with content derived from the input (the delta decoder patches
// what is there). Built with clang -fsanitize=fuzzer,address,undefined when
// clang is found, and always with g++ against fuzz_driver.cpp.
#include <cstring>

#include "compress/codec.hpp"
#include "guarded_page.hpp"

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
