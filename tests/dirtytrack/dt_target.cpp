// A small scriptable target process for the dirtytrack tests: reads one
// command per line on stdin, acts on its own memory, answers "ok ..." or
// "err ..." on stdout. Between commands its main thread is blocked in read().
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<bool> g_stop{false};

uint64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}

uint64_t pattern(uint64_t seed, uint64_t addr, uint64_t word) { return seed * 0x9E3779B97F4A7C15ull ^ (addr + word); }

bool read_line(std::string& line) {
  line.clear();
  char c;
  for (;;) {
    ssize_t n = ::read(0, &c, 1);  // deliberately unbuffered: blocks in read()
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (c == '\n') return true;
    line += c;
  }
}

}  // namespace

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::vector<std::thread> threads;
  std::string line;
  while (read_line(line)) {
    char cmd[32] = {};
    unsigned long long a = 0, b = 0, c = 0;
    int n = std::sscanf(line.c_str(), "%31s %llx %llx %llx", cmd, &a, &b, &c);
    if (n < 1) continue;
    std::string op = cmd;
    const uint64_t P = 4096;
    if (op == "map") {  // map PAGES
      void* p = mmap(nullptr, a * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) std::printf("err mmap %d\n", errno);
      else std::printf("ok %" PRIx64 "\n", uint64_t(p));
    } else if (op == "maphuge") {  // maphuge PAGES: 2 MiB aligned, MADV_HUGEPAGE
      const uint64_t H = 2u << 20;
      char* r = static_cast<char*>(mmap(nullptr, a * P + H, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
      char* p = reinterpret_cast<char*>((uint64_t(r) + H - 1) & ~(H - 1));
      if (r == MAP_FAILED || mmap(p, a * P, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != p ||
          madvise(p, a * P, MADV_HUGEPAGE) != 0)
        std::printf("err maphuge %d\n", errno);
      else std::printf("ok %" PRIx64 "\n", uint64_t(p));
    } else if (op == "mapat") {  // mapat ADDR PAGES (MAP_FIXED_NOREPLACE)
      void* p = mmap(reinterpret_cast<void*>(a), b * P, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
      if (p == MAP_FAILED) std::printf("err mmap %d\n", errno);
      else std::printf("ok %" PRIx64 "\n", uint64_t(p));
    } else if (op == "fill") {  // fill ADDR PAGES SEED: whole-page writes
      for (uint64_t pg = 0; pg < b; pg++) {
        auto* w = reinterpret_cast<uint64_t*>(a + pg * P);
        for (uint64_t i = 0; i < P / 8; i++) w[i] = pattern(c, a + pg * P, i);
      }
      std::printf("ok\n");
    } else if (op == "word") {  // word ADDR VALUE: one 8-byte store
      *reinterpret_cast<volatile uint64_t*>(a) = b;
      std::printf("ok\n");
    } else if (op == "dontneed") {  // dontneed ADDR PAGES
      std::printf(madvise(reinterpret_cast<void*>(a), b * P, MADV_DONTNEED) ? "err\n" : "ok\n");
    } else if (op == "unmap") {
      std::printf(munmap(reinterpret_cast<void*>(a), b * P) ? "err\n" : "ok\n");
    } else if (op == "move") {  // move ADDR PAGES: mremap to a new place
      void* dst = mmap(nullptr, b * P, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      void* p = mremap(reinterpret_cast<void*>(a), b * P, b * P, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
      if (p == MAP_FAILED) std::printf("err mremap %d\n", errno);
      else std::printf("ok %" PRIx64 "\n", uint64_t(p));
    } else if (op == "moveto") {  // moveto ADDR PAGES DST: mremap onto DST (MREMAP_FIXED)
      void* p = mremap(reinterpret_cast<void*>(a), b * P, b * P, MREMAP_MAYMOVE | MREMAP_FIXED,
                       reinterpret_cast<void*>(c));
      if (p == MAP_FAILED) std::printf("err mremap %d\n", errno);
      else std::printf("ok %" PRIx64 "\n", uint64_t(p));
    } else if (op == "grow") {  // grow ADDR PAGES NEWPAGES: in place
      void* p = mremap(reinterpret_cast<void*>(a), b * P, c * P, 0);
      if (p == MAP_FAILED) std::printf("err mremap %d\n", errno);
      else std::printf("ok %" PRIx64 "\n", uint64_t(p));
    } else if (op == "sbrk") {  // sbrk PAGES: grow the heap, write the new pages
      void* old = sbrk(intptr_t(a * P));
      if (old == reinterpret_cast<void*>(-1)) {
        std::printf("err sbrk %d\n", errno);
      } else {
        uint64_t base = (uint64_t(old) + P - 1) & ~(P - 1);
        uint64_t end = uint64_t(old) + a * P;
        for (uint64_t p = base; p + P <= end; p += P) *reinterpret_cast<volatile uint64_t*>(p) = p;
        std::printf("ok %" PRIx64 " %" PRIx64 "\n", base, end & ~(P - 1));
      }
    } else if (op == "sum") {  // sum ADDR PAGES: checksum
      uint64_t s = 0;
      for (uint64_t i = 0; i < b * P / 8; i++) s = s * 31 + reinterpret_cast<uint64_t*>(a)[i];
      std::printf("ok %" PRIx64 "\n", s);
    } else if (op == "threads") {  // threads N: idle threads blocked in nanosleep
      for (uint64_t i = 0; i < a; i++)
        threads.emplace_back([] {
          while (!g_stop) {
            timespec ts{0, 5000000};
            nanosleep(&ts, nullptr);
          }
        });
      std::printf("ok\n");
    } else if (op == "spinners") {  // spinners N: busy threads
      for (uint64_t i = 0; i < a; i++)
        threads.emplace_back([] {
          volatile uint64_t x = 0;
          while (!g_stop) x = x + 1;
        });
      std::printf("ok\n");
    } else if (op == "sleep") {  // sleep MS: one nanosleep; reports its result and elapsed time
      uint64_t t0 = now_ms();
      timespec ts{time_t(a / 1000), long(a % 1000) * 1000000L};
      int r = nanosleep(&ts, nullptr);
      std::printf("ok %d %" PRIu64 "\n", r == 0 ? 0 : errno, now_ms() - t0);
    } else if (op == "busy") {  // busy ITERATIONS: deterministic computation
      uint64_t x = 1;
      for (uint64_t i = 0; i < a; i++) x = x * 6364136223846793005ull + 1442695040888963407ull;
      std::printf("ok %" PRIx64 "\n", x);
    } else if (op == "pid") {
      std::printf("ok %x\n", unsigned(getpid()));
    } else if (op == "quit") {
      break;
    } else {
      std::printf("err unknown %s\n", cmd);
    }
  }
  g_stop = true;
  for (auto& t : threads) t.join();
  return 0;
}
