/* The QEMU baseline's guest program (bench_qemu_baseline.py builds it with
 * gcc -static into the guest's initramfs; it runs as the guest's workload).
 *
 *   fill MODE MIB
 *
 * Maps MIB MiB of anonymous memory inside the guest, writes every page once
 * with MODE's content, prints "LMFILLED <ms>" on stdout (the serial console)
 * and then idles (random, mixed) or keeps rewriting random pages at full speed
 * (write), printing "LMRATE <pages/s>" every second.
 *
 * Content, as livemig's guest produces it (docs/guest.md, "Page content"):
 *   random  every word from a PRNG (incompressible);
 *   mixed   each page has a fixed class: 30% zero, 30% small integers,
 *           25% text fragments, 15% random; word 0 of every page is a
 *           non-zero stamp, so no page is all zeros;
 *   write   random content, then a writer over the whole region.
 * The generators are this file's own; the class shares match livemig's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static const char *fragments[] = {
    "the quick ", "<div cla", "SELECT * ", "{\"id\": 1", "brown fox", "ss=\"row\"",
    " FROM use", "2, \"name", "jumps ove", "></div>\n", "rs WHERE ", "\": \"abc\"",
    "r the laz", "<span>He", "id = 42;\n", "}, {\"id\"", "y dog. ", "llo</spa",
    "ORDER BY ", ": 13, \"n", "Lorem ips", "n><br/>\n", "name ASC", "ame\": \"x",
};
#define NFRAG (sizeof fragments / sizeof fragments[0])

static void fill_random(uint64_t *w, uint64_t key) {
  uint64_t s = key | 1;
  for (int i = 0; i < WORDS; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    w[i] = s;
  }
}

static void fill_page(uint64_t *w, int mode, uint64_t index, uint64_t version) {
  uint64_t key = mix(index * 0x9e3779b97f4a7c15ull + version);
  unsigned cls = mode == 'm' ? (unsigned)(mix(index ^ 0xc1a55) % 100) : 99;
  if (cls < 30) { /* zero */
    memset(w, 0, PAGE);
  } else if (cls < 60) { /* small integers and near pointers */
    uint64_t base = 0x7f0000000000ull + (key & 0xffffff000ull);
    for (int i = 0; i < WORDS; i++) {
      uint64_t r = mix(key + i);
      w[i] = (r & 3) == 0 ? 0 : (r & 3) == 1 ? (r >> 8) % 1000 : (r & 3) == 2 ? base + ((r >> 8) & 0xfff8) : r >> 58;
    }
  } else if (cls < 85) { /* text */
    char *c = (char *)w;
    for (int i = 0; i < WORDS; i++) memcpy(c + 8 * i, fragments[mix(key + i) % NFRAG], 8);
  } else {
    fill_random(w, key);
  }
  w[0] = key | 1; /* the stamp */
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: fill random|mixed|write MIB\n");
    return 2;
  }
  int mode = argv[1][0];
  size_t pages = (size_t)strtoull(argv[2], 0, 10) * (1 << 20) / PAGE;
  uint8_t *ram = mmap(0, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (ram == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  double t0 = now_ms();
  for (size_t p = 0; p < pages; p++) fill_page((uint64_t *)(ram + p * PAGE), mode, p, 1);
  printf("LMFILLED %.0f\n", now_ms() - t0);
  fflush(stdout);
  if (mode != 'w')
    for (;;) pause();
  uint64_t rng = 0x1234567, version = 2, done = 0;
  double last = now_ms();
  for (;;) {
    rng = mix(rng);
    fill_random((uint64_t *)(ram + (rng % pages) * PAGE), rng + version++);
    if (++done % 256 == 0 && now_ms() - last >= 1000) {
      printf("LMRATE %.0f\n", done * 1000 / (now_ms() - last));
      fflush(stdout);
      done = 0;
      last = now_ms();
    }
  }
}
