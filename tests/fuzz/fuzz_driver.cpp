// Portable stand-in for libFuzzer (g++ builds), one for every target: feeds
// the target its seeds (fuzz_seeds() and the files of --corpus folders),
// mutations of them (bit flips, byte overwrites, truncation, extension,
// splices) and random inputs for --seconds seconds. A bug shows as a crash
// (guard pages, FUZZ_CHECK; ASan in the sanitizer build).
//   --write-seeds DIR   only write the seeds into DIR (libFuzzer's corpus)
//   --replay PATH...    run each file (or each file of a folder) once
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>

#include "common/clock.hpp"
#include "fuzz_target.hpp"

namespace {

bool read_file(const std::string& path, FuzzInput& out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  out.clear();
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
  std::fclose(f);
  return true;
}

// The files of `path` (a folder, sorted) or `path` itself.
std::vector<std::string> files_of(const std::string& path) {
  std::vector<std::string> out;
  DIR* d = opendir(path.c_str());
  if (!d) return {path};
  while (dirent* e = readdir(d)) {
    std::string p = path + "/" + e->d_name;
    struct stat st;
    if (e->d_name[0] != '.' && stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) out.push_back(p);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void mutate(std::mt19937_64& rng, FuzzInput& input, const std::vector<FuzzInput>& seeds) {
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

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2;
  uint64_t seed = 1;
  std::string seed_dir;
  std::vector<std::string> corpus_dirs, replay;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--replay") {
      replay.assign(argv + i + 1, argv + argc);
      if (replay.empty()) return std::fprintf(stderr, "--replay needs files or folders\n"), 2;
      break;
    }
    if (i + 1 >= argc) return std::fprintf(stderr, "%s needs a value\n", a.c_str()), 2;
    std::string v = argv[++i];
    if (a == "--seconds") seconds = std::atof(v.c_str());
    else if (a == "--seed") seed = std::strtoull(v.c_str(), nullptr, 0);
    else if (a == "--write-seeds") seed_dir = v;
    else if (a == "--corpus") corpus_dirs.push_back(v);
    else return std::fprintf(stderr, "unknown option %s\n", a.c_str()), 2;
  }
  if (!replay.empty()) {
    size_t n = 0;
    FuzzInput input;
    for (const auto& path : replay)
      for (const auto& file : files_of(path)) {
        if (!read_file(file, input)) return std::fprintf(stderr, "cannot read %s\n", file.c_str()), 1;
        LLVMFuzzerTestOneInput(input.data(), input.size());
        n++;
      }
    std::printf("replayed %zu inputs, no crash\n", n);
    return n ? 0 : 1;  // an empty replay tests nothing
  }
  std::vector<FuzzInput> seeds = fuzz_seeds();
  seeds.emplace_back();
  if (!seed_dir.empty()) {
    mkdir(seed_dir.c_str(), 0755);
    for (size_t i = 0; i < seeds.size(); i++) {
      std::string path = seed_dir + "/seed-" + std::to_string(i);
      FILE* f = std::fopen(path.c_str(), "wb");
      if (!f) return std::fprintf(stderr, "cannot write %s\n", path.c_str()), 1;
      if (!seeds[i].empty()) std::fwrite(seeds[i].data(), 1, seeds[i].size(), f);  // an empty seed has no data()
      std::fclose(f);
    }
    return 0;
  }
  for (const auto& dir : corpus_dirs)
    for (const auto& file : files_of(dir))
      if (FuzzInput in; read_file(file, in)) seeds.push_back(std::move(in));
  size_t max_len = 0;
  for (const auto& s : seeds) max_len = std::max(max_len, s.size());
  max_len = std::max<size_t>(max_len + 64, 4096 + 32);

  std::mt19937_64 rng(seed);
  uint64_t runs = 0;
  const uint64_t deadline = lm::now_ns() + uint64_t(seconds * 1e9);
  FuzzInput input;
  for (const auto& s : seeds) LLVMFuzzerTestOneInput(s.data(), s.size()), runs++;
  while (lm::now_ns() < deadline) {
    for (int batch = 0; batch < 64; batch++, runs++) {
      if (rng() % 8 == 0) {
        input.resize(rng() % max_len);
        for (auto& b : input) b = uint8_t(rng());
      } else {
        input = seeds[rng() % seeds.size()];
        mutate(rng, input, seeds);
      }
      LLVMFuzzerTestOneInput(input.data(), input.size());
    }
  }
  std::printf("fuzz: %llu inputs (%zu seeds) in %.1f s, no crash\n", (unsigned long long)runs, seeds.size(), seconds);
  return 0;
}
