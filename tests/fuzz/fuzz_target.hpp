// What every fuzz target defines. libFuzzer (clang) and the portable driver
// (fuzz_driver.cpp, g++) call LLVMFuzzerTestOneInput; the driver mutates
// fuzz_seeds() and writes them as the libFuzzer seed corpus, so fuzzing
// starts from valid encodings. fuzz_seeds is built into the driver only
// (the libFuzzer build defines LM_LIBFUZZER and links less).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

using FuzzInput = std::vector<uint8_t>;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
std::vector<FuzzInput> fuzz_seeds();

// A broken invariant of the code under test: reported like a crash.
#define FUZZ_CHECK(cond)                                                                   \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)
