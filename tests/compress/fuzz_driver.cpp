// Portable stand-in for libFuzzer (g++ builds): feeds the target valid
// payloads of its codec, mutations of them (bit flips, byte overwrites,
// truncation, extension, splices) and random inputs for --seconds seconds.
// A decoder bug shows as a crash (guard pages; ASan in the sanitizer build).
// With --write-seeds DIR it only writes the valid payloads into DIR, as the
// seed corpus of the libFuzzer target.
#include <sys/stat.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "compress/codec.hpp"
#include "compress/synthetic.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
  using namespace lm::compress;
  double seconds = 2;
  uint64_t seed = 1;
  std::string seed_dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (std::string(argv[i]) == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 0);
    else if (std::string(argv[i]) == "--write-seeds") seed_dir = argv[i + 1];
  }
  const lm::Codec codec = lm::Codec(LM_FUZZ_CODEC);
  std::mt19937_64 rng(seed);
  CodecContext ctx;
  std::vector<std::vector<uint8_t>> seeds;
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
  seeds.emplace_back();
  if (!seed_dir.empty()) {
    mkdir(seed_dir.c_str(), 0755);
    for (size_t i = 0; i < seeds.size(); i++) {
      std::string path = seed_dir + "/seed-" + std::to_string(i);
      FILE* f = std::fopen(path.c_str(), "wb");
      if (!f) return 1;
      std::fwrite(seeds[i].data(), 1, seeds[i].size(), f);
      std::fclose(f);
    }
    return 0;
  }
  uint64_t runs = 0;
  const uint64_t deadline = lm::now_ns() + uint64_t(seconds * 1e9);
  std::vector<uint8_t> input;
  while (lm::now_ns() < deadline) {
    for (int batch = 0; batch < 256; batch++, runs++) {
      unsigned mode = unsigned(rng() % 8);
      if (mode == 0) {
        input.resize(rng() % (lm::kPageSize + 32));
        for (auto& b : input) b = uint8_t(rng());
      } else {
        input = seeds[rng() % seeds.size()];
        unsigned edits = 1 + unsigned(rng() % 8);
        for (unsigned e = 0; e < edits; e++) {
          switch (rng() % 5) {
            case 0:
              if (!input.empty()) input[rng() % input.size()] ^= uint8_t(1u << (rng() % 8));
              break;
            case 1:
              if (!input.empty()) input[rng() % input.size()] = uint8_t(rng());
              break;
            case 2:
              if (!input.empty()) input.resize(rng() % input.size());
              break;
            case 3:
              input.push_back(uint8_t(rng()));
              break;
            default: {  // splice in a piece of another seed
              const auto& other = seeds[rng() % seeds.size()];
              if (other.empty() || input.empty()) break;
              size_t from = rng() % other.size(), to = rng() % input.size();
              size_t n = std::min(other.size() - from, input.size() - to);
              n = std::min<size_t>(n, 1 + rng() % 64);
              std::memcpy(&input[to], &other[from], n);
            }
          }
        }
      }
      LLVMFuzzerTestOneInput(input.data(), input.size());
    }
  }
  std::printf("fuzz %s: %llu inputs in %.1f s, no crash\n", std::string(lm::codec_name(codec)).c_str(),
              (unsigned long long)runs, seconds);
  return 0;
}
