// The destination's RAM: pre-copy onto reserved huge pages (hugetlb) when the
// host has them, else onto the resumed guest's anonymous THP memory written
// with process_vm_writev; the population before `ready` is reported; and the
// process_vm_writev writer itself, byte for byte.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "compress/compressor.hpp"
#include "engine/page_sink.hpp"
#include "engine/source.hpp"
#include "tests/engine/engine_test_util.hpp"

using namespace lm;
using namespace lm::engine;
using namespace lm::engine::test;

namespace {

constexpr uint64_t kGuestRam = 64ull << 20;  // 2 MiB aligned, as hugetlb needs
constexpr const char* kNrHugepages = "/proc/sys/vm/nr_hugepages";

long read_long(const char* path) {
  std::ifstream f(path);
  long v = -1;
  f >> v;
  return v;
}

bool write_long(const char* path, long v) {
  int fd = open(path, O_WRONLY);
  if (fd < 0) return false;
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%ld\n", v);
  bool ok = write(fd, buf, size_t(n)) == n;
  close(fd);
  return ok;
}

// The host's reserved huge pages, raised for one test and put back by the
// destructor, or by a signal that ends the test (meson's timeout).
class HugePageReservation {
 public:
  explicit HugePageReservation(long extra_pages) {
    saved_ = read_long(kNrHugepages);
    if (saved_ < 0) {
      why_ = std::string("cannot read ") + kNrHugepages;
      return;
    }
    restore_to = saved_;
    for (int sig : {SIGTERM, SIGINT, SIGALRM}) signal(sig, restore_and_exit);
    const long free_before = read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
    if (!write_long(kNrHugepages, saved_ + extra_pages)) {
      why_ = std::string("cannot write ") + kNrHugepages + ": " + strerror(errno);
      return;
    }
    changed_ = true;
    const long free_now = read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
    if (free_now < free_before + extra_pages)
      why_ = "the kernel reserved only " + std::to_string(free_now - free_before) + " of " +
             std::to_string(extra_pages) + " huge pages (memory fragmented)";
  }
  ~HugePageReservation() {
    if (changed_ && !write_long(kNrHugepages, saved_))
      ADD_FAILURE() << "could not restore " << kNrHugepages << " to " << saved_;
    restore_to = -1;
  }
  // Empty when the pages are reserved; else why not (the test is skipped).
  const std::string& refusal() const { return why_; }

 private:
  static inline volatile long restore_to = -1;
  static void restore_and_exit(int sig) {
    if (restore_to >= 0) (void)write_long(kNrHugepages, restore_to);
    signal(sig, SIG_DFL);
    raise(sig);
  }
  long saved_ = -1;
  bool changed_ = false;
  std::string why_;
};

// The resumed guest's RAM mapping in /proc/PID/smaps: field -> kB.
std::map<std::string, long> smaps_of(pid_t pid, uint64_t addr) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/smaps");
  std::map<std::string, long> out;
  bool in = false;
  for (std::string line; std::getline(f, line);) {
    unsigned long long start = 0, end = 0;
    if (sscanf(line.c_str(), "%llx-%llx ", &start, &end) == 2) {  // a mapping's header line
      in = start == addr;
      continue;
    }
    if (!in) continue;
    char key[64];
    long kb = 0;
    if (sscanf(line.c_str(), "%63[^:]: %ld kB", key, &kb) == 2) out[key] = kb;
  }
  return out;
}

struct Migrated {
  MigrationResult result;
  std::optional<Result<DestinationOutcome>> outcome;
  std::unique_ptr<guest::GuestProcess> resumed;
};

// A pre-copy with verification of a 64 MiB guest with mixed content (raw and
// compressed pages) into a destination in this process.
void migrate_guest(const guest::RamOffer& ram, Migrated& m) {
  const std::string dir = temp_dir();
  guest::GuestOptions go;
  go.ram_bytes = kGuestRam;
  go.rate = "5000";
  go.content = "mixed";
  go.prefill = true;
  auto g = guest::GuestProcess::spawn(guest_binary(), go, dir);
  ASSERT_TRUE(g.ok()) << g.error().message;

  auto sink = std::make_shared<GuestRamSink>(GuestRamSinkOptions{guest_binary(), dir, ram});
  DestinationOptions d;
  d.listen = "tcp:127.0.0.1:0";
  d.sink = sink;
  d.timeout = transport::Timeout(10000);
  auto dest = Destination::listen(d);
  ASSERT_TRUE(dest.ok()) << dest.error().message;
  std::thread dest_thread([&] { m.outcome = (*dest)->run(); });

  SourceOptions o;
  o.pid = g->pid();
  o.scope.kind = dt::ScopeKind::ranges;
  o.scope.ranges = {{g->ram_addr(), g->ram_addr() + g->ram_size()}};
  o.policy = *compress::parse_policy("cbc");
  o.timeout = transport::Timeout(10000);
  auto migrated = SourceMigration(o).run((*dest)->address(), m.result);
  dest_thread.join();
  ASSERT_TRUE(migrated.ok()) << migrated.error().message;
  ASSERT_TRUE(m.outcome && m.outcome->ok()) << (m.outcome ? m.outcome->error().message : "no outcome");
  m.resumed = sink->take_guest();
  ASSERT_TRUE(m.resumed);
  std::printf("destination-ram %s, population %.1f ms, total %.1f ms, downtime %.1f ms\n",
              m.result.destination_ram.c_str(), m.result.population_ms, m.result.total_time_ms, m.result.downtime_ms);
}

void expect_verified_and_running(Migrated& m) {
  EXPECT_TRUE(m.result.completed) << m.result.error;
  EXPECT_TRUE(m.result.verify_ok);
  EXPECT_EQ(m.result.verify_pages, kGuestRam / 4096);
  EXPECT_GT(m.result.population_ms, 0) << "the destination's RAM was written in before ready";
  auto verified = m.resumed->control().verify();
  EXPECT_TRUE(verified.ok()) << verified.error().message;
}

TEST(DestinationRam, HugetlbWhenReserved) {
  // The guest's 32 pages and room for what else may hold some meanwhile.
  HugePageReservation reserved(long(kGuestRam >> 21) + 8);
  if (!reserved.refusal().empty()) GTEST_SKIP() << "no reserved huge pages: " << reserved.refusal();
  Migrated m;
  migrate_guest(guest::RamOffer{}, m);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(m.result.destination_ram, "hugetlb");
  expect_verified_and_running(m);
  auto smaps = smaps_of(m.resumed->pid(), m.resumed->ram_addr());
  std::printf("smaps: KernelPageSize %ld kB, Shared_Hugetlb %ld kB, Private_Hugetlb %ld kB\n", smaps["KernelPageSize"],
              smaps["Shared_Hugetlb"], smaps["Private_Hugetlb"]);
  EXPECT_EQ(smaps["KernelPageSize"], 2048) << "the resumed guest's RAM is not on 2 MiB pages";
  EXPECT_EQ(smaps["Shared_Hugetlb"] + smaps["Private_Hugetlb"], long(kGuestRam >> 10));
  (void)m.resumed->stop(5000);
}

TEST(DestinationRam, AnonymousThpByDefault) {
  if (read_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages") * (2 << 20) >= long(kGuestRam))
    GTEST_SKIP() << "this host has reserved huge pages: the default takes hugetlb";
  Migrated m;
  migrate_guest(guest::RamOffer{}, m);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(m.result.destination_ram, "anon-thp");
  expect_verified_and_running(m);
  auto smaps = smaps_of(m.resumed->pid(), m.resumed->ram_addr());
  std::printf("smaps: AnonHugePages %ld kB of %ld kB\n", smaps["AnonHugePages"], smaps["Size"]);
  EXPECT_GT(smaps["AnonHugePages"], 0) << "the resumed guest's RAM has no transparent huge pages";
  (void)m.resumed->stop(5000);
}

TEST(DestinationRam, ShmemWhenNothingElseIsOffered) {
  Migrated m;
  migrate_guest(guest::RamOffer{guest::UffdWanted::no, false, false, true}, m);
  ASSERT_FALSE(HasFatalFailure());
  EXPECT_EQ(m.result.destination_ram, "shmem");
  expect_verified_and_running(m);
  (void)m.resumed->stop(5000);
}

// A source that does not verify: the destination hashes nothing and sends no
// digests, and the guest's own check still passes after resume.
TEST(DestinationRam, WithoutVerifyNoDigestsAndTheGuestStillVerifies) {
  auto r = migrate(small_guest({"verify=false", "migration.policy=\"cbc\""}));
  EXPECT_TRUE(r.completed) << r.error;
  EXPECT_FALSE(r.verify_ok) << "nothing was compared";
  EXPECT_EQ(r.verify_pages, 0u);
  EXPECT_GT(r.workload_rate_after, 0) << "the guest must run on at the destination";
}

// --- ProcessPageWriter ------------------------------------------------------------

// Pages of several kinds: random (raw), repeating text (compressible), zero, uniform.
std::vector<uint8_t> sample_pages(size_t n) {
  std::vector<uint8_t> out(n * kPageSize);
  uint64_t x = 0x1234567;
  for (size_t i = 0; i < n; i++) {
    uint8_t* p = out.data() + i * kPageSize;
    switch (i % 4) {
      case 0:
        for (size_t k = 0; k < kPageSize; k++) p[k] = uint8_t((x = x * 6364136223846793005ull + 1) >> 56);
        break;
      case 1:
        for (size_t k = 0; k < kPageSize; k++) p[k] = "livemig page "[k % 13] + uint8_t(i);
        break;
      case 2: break;  // zero
      case 3: std::memset(p, 0x5a, kPageSize); break;
    }
  }
  return out;
}

// Writes `pages` (compressed with `policy`) into a child's anonymous memory
// and reads it back.
void write_into_child(const char* policy, size_t npages, bool contiguous) {
  const size_t span = contiguous ? npages : 2 * npages;
  void* area = mmap(nullptr, span * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(area, MAP_FAILED);
  std::memset(area, 0xee, span * kPageSize);  // not what is written: a stale page would show
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t child = fork();
  if (child == 0) {  // holds a copy-on-write copy of `area` until killed
    close(ready[0]);
    (void)!write(ready[1], "x", 1);
    pause();
    _exit(0);
  }
  close(ready[1]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  close(ready[0]);

  const auto pages = sample_pages(npages);
  std::vector<uint64_t> addrs(npages);
  std::vector<const uint8_t*> ptrs(npages);
  for (size_t i = 0; i < npages; i++) {
    addrs[i] = reinterpret_cast<uint64_t>(area) + (contiguous ? i : 2 * i) * kPageSize;
    ptrs[i] = pages.data() + i * kPageSize;
  }
  auto compressor = compress::Compressor::create(policy);
  ASSERT_TRUE(compressor.ok()) << compressor.error().message;
  compress::CompressedBatch batch;
  ASSERT_TRUE((*compressor)->compress_batch(addrs, ptrs, batch).ok());
  size_t raw = 0;
  for (const auto& e : batch.entries) raw += e.codec == Codec::raw;

  ProcessPageWriter writer;
  compress::Decompressor decompressor;
  size_t visited = 0;
  bool visited_right_bytes = true;
  auto w = writer.write(child, batch.entries, batch.payload, decompressor, [&](const PageEntry& e, const uint8_t* b) {
    const size_t i = size_t(&e - batch.entries.data());
    visited_right_bytes &= std::memcmp(b, ptrs[i], kPageSize) == 0;
    visited++;
  });
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_EQ(visited, npages);
  EXPECT_TRUE(visited_right_bytes) << "the visitor saw other bytes than the page's";

  std::vector<uint8_t> back(kPageSize);
  for (size_t i = 0; i < npages; i++) {
    iovec local{back.data(), kPageSize}, remote{reinterpret_cast<void*>(addrs[i]), kPageSize};
    ASSERT_EQ(process_vm_readv(child, &local, 1, &remote, 1, 0), ssize_t(kPageSize));
    EXPECT_EQ(std::memcmp(back.data(), ptrs[i], kPageSize), 0) << "page " << i << " (codec "
                                                               << codec_name(batch.entries[i].codec) << ")";
  }
  if (!contiguous) {  // the gaps between the pages are untouched
    iovec local{back.data(), kPageSize}, remote{static_cast<uint8_t*>(area) + kPageSize, kPageSize};
    ASSERT_EQ(process_vm_readv(child, &local, 1, &remote, 1, 0), ssize_t(kPageSize));
    EXPECT_EQ(back[0], 0xee);
    EXPECT_EQ(back[kPageSize - 1], 0xee);
  }
  std::printf("%s: %zu pages, %zu raw\n", policy, npages, raw);
  if (std::string(policy) == "fixed:raw") {
    EXPECT_EQ(raw, npages);
  } else {
    EXPECT_LT(raw, npages) << "a compressing policy sends some pages compressed";
  }
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  munmap(area, span * kPageSize);
}

TEST(ProcessPageWriter, RawBatchIntoAnotherProcess) { write_into_child("fixed:raw", 64, true); }
TEST(ProcessPageWriter, CompressedBatchIntoAnotherProcess) { write_into_child("cbc", 64, true); }
// More pieces than one process_vm_writev takes (IOV_MAX), none adjacent.
TEST(ProcessPageWriter, ScatteredBatchLargerThanIovMax) { write_into_child("cbc", 1500, false); }

// Re-sent pages go as deltas against the version sent before, which the
// writer must patch in the other process's memory, not in its scratch.
TEST(ProcessPageWriter, DeltaAgainstThePageInTheOtherProcess) {
  constexpr size_t kPages = 32;
  auto v1 = sample_pages(kPages);
  auto* remote = static_cast<uint8_t*>(
      mmap(nullptr, kPages * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(remote, MAP_FAILED);
  std::memset(remote, 0xee, kPages * kPageSize);
  std::vector<uint64_t> addrs(kPages);
  std::vector<const uint8_t*> ptrs(kPages);
  for (size_t i = 0; i < kPages; i++) addrs[i] = reinterpret_cast<uint64_t>(remote + i * kPageSize);
  auto compressor = compress::Compressor::create("fixed:delta");
  ASSERT_TRUE(compressor.ok()) << compressor.error().message;
  ProcessPageWriter writer;
  compress::Decompressor decompressor;
  compress::CompressedBatch batch;
  size_t deltas = 0;
  for (int version = 1; version <= 2; version++) {
    if (version == 2)  // a few bytes change in every page
      for (size_t i = 0; i < kPages; i++) v1[i * kPageSize + 100 + i] ^= 0xff;
    for (size_t i = 0; i < kPages; i++) ptrs[i] = v1.data() + i * kPageSize;
    ASSERT_TRUE((*compressor)->compress_batch(addrs, ptrs, batch, compress::SendKind::resend).ok());
    for (const auto& e : batch.entries) deltas += version == 2 && e.codec == Codec::delta;
    auto w = writer.write(getpid(), batch.entries, batch.payload, decompressor);  // own memory, by pid
    ASSERT_TRUE(w.ok()) << w.error().message;
    EXPECT_EQ(std::memcmp(remote, v1.data(), kPages * kPageSize), 0) << "version " << version;
  }
  EXPECT_GT(deltas, 0u) << "no page went as a delta: the case is not exercised";
  munmap(remote, kPages * kPageSize);
}

TEST(ProcessPageWriter, UnmappedAddressIsAnErrorNamingThePid) {
  void* area = mmap(nullptr, kPageSize, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(area, MAP_FAILED);
  const auto pages = sample_pages(1);
  std::vector<uint64_t> addrs{reinterpret_cast<uint64_t>(area)};
  std::vector<const uint8_t*> ptrs{pages.data()};
  auto compressor = compress::Compressor::create("fixed:raw");
  ASSERT_TRUE(compressor.ok());
  compress::CompressedBatch batch;
  ASSERT_TRUE((*compressor)->compress_batch(addrs, ptrs, batch).ok());
  ProcessPageWriter writer;
  compress::Decompressor decompressor;
  auto w = writer.write(getpid(), batch.entries, batch.payload, decompressor);
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.error().message.find("pid " + std::to_string(getpid())), std::string::npos) << w.error().message;
  munmap(area, kPageSize);
}

}  // namespace
