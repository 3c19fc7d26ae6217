// The destination's admission limits (engine/admission.hpp): a source that
// announces more than this host has is refused in the handshake, before any
// memory is made for it, and hears why; idle connections hold up no one.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <fstream>

#include "common/subprocess.hpp"
#include "engine/admission.hpp"
#include "engine/messages.hpp"
#include "engine/source.hpp"
#include "harness/scenario.hpp"
#include "tests/common/memory_cgroup.hpp"
#include "tests/engine/engine_test_util.hpp"

namespace lm::engine::test {
namespace {

constexpr uint64_t kGiB = 1ull << 30;

// --- the limits themselves ----------------------------------------------------------------

TEST(AdmissionLimits, DefaultIsThreeQuartersOfMemAvailable) {
  const LimitsConfig defaults;
  EXPECT_EQ(defaults.max_ram_bytes, 0u);
  auto limit = ram_limit(defaults, 16 * kGiB);
  ASSERT_TRUE(limit.ok()) << limit.error().message;
  EXPECT_EQ(limit->bytes, 12 * kGiB);
  EXPECT_TRUE(check_admission(defaults, {12 * kGiB, 1, 1}, 16 * kGiB).ok());
  auto refused = check_admission(defaults, {32ull << 40, 1, 1}, 16 * kGiB);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message,
            "destination refuses 32.0 TiB of RAM: limit 12.0 GiB (--max-ram; 75% of MemAvailable 16.0 GiB)");
  EXPECT_FALSE(ram_limit(defaults, std::nullopt).ok()) << "no MemAvailable and no --max-ram: nothing to go by";
}

TEST(AdmissionLimits, ExplicitMaxRamIsStillCheckedAgainstMemAvailable) {
  LimitsConfig l;
  l.max_ram_bytes = 4 * kGiB;
  auto over = check_admission(l, {5 * kGiB, 1, 1}, 64 * kGiB);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().message, "destination refuses 5.0 GiB of RAM: limit 4.0 GiB (--max-ram)");
  auto short_of_memory = check_admission(l, {3 * kGiB, 1, 1}, 2 * kGiB);
  ASSERT_FALSE(short_of_memory.ok());
  EXPECT_EQ(short_of_memory.error().message, "destination refuses 3.0 GiB of RAM: MemAvailable is 2.0 GiB");
}

TEST(AdmissionLimits, MappingsAndChannels) {
  const LimitsConfig l;
  auto maps = check_admission(l, {kGiB, 65536, 1}, 64 * kGiB);
  ASSERT_FALSE(maps.ok());
  EXPECT_EQ(maps.error().message, "destination refuses 65536 mappings: limit 4096 (--max-mappings)");
  auto channels = check_admission(l, {kGiB, 1, 65}, 64 * kGiB);
  ASSERT_FALSE(channels.ok());
  EXPECT_EQ(channels.error().message, "destination refuses 65 bulk channels: limit 64 (--max-channels)");
  EXPECT_LT(l.max_mappings, transport::kMaxMappings);
}

// The sessions of one listener share one limit; a refused session's share
// goes at once, so the other is not refused because of it.
TEST(AdmissionLimits, SessionsOfOneListenerShareTheRamLimit) {
  RamPool pool(RamLimit{40ull << 20, "--max-ram"});
  EXPECT_TRUE(pool.hold(1, 16ull << 20).ok());
  EXPECT_TRUE(pool.hold(2, 24ull << 20).ok());
  EXPECT_TRUE(pool.hold(1, 16ull << 20).ok()) << "holding the same again is no more";
  auto over = pool.hold(2, 25ull << 20);
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, ENOMEM);
  EXPECT_NE(over.error().message.find("destination refuses 25.0 MiB of RAM: other sessions hold 16.0 MiB of its "
                                      "40.0 MiB (--max-ram)"),
            std::string::npos)
      << over.error().message;
  EXPECT_TRUE(pool.hold(1, 40ull << 20).ok()) << "session 2's share went with its refusal";
  EXPECT_FALSE(pool.hold(3, 1).ok());
  pool.release(1);
  EXPECT_TRUE(pool.hold(3, 40ull << 20).ok());
}

TEST(AdmissionLimits, FlagsAndScenarioKeys) {
  ScenarioConfig c;
  EXPECT_EQ(setting_text(c, "limits.max-ram"), "0");
  ASSERT_TRUE(apply_setting(c, "limits.max-ram", "17G").ok());
  EXPECT_EQ(c.limits.max_ram_bytes, 17 * kGiB);
  ASSERT_TRUE(apply_setting(c, "limits.max-mappings", "100").ok());
  EXPECT_EQ(c.limits.max_mappings, 100u);
  EXPECT_FALSE(apply_setting(c, "limits.max-ram", "lots").ok());
  EXPECT_FALSE(apply_setting(c, "limits.max-mappings", "0").ok());
  EXPECT_FALSE(apply_setting(c, "limits.max-mappings", "70000").ok()) << "above the protocol's kMaxMappings";
  // The command line takes the same keys.
  auto help = run_livemig({"dest", "--help"});
  EXPECT_NE(help.out.find("--max-ram"), std::string::npos) << help.out;
  auto bad = run_livemig({"dest", "--max-ram", "lots"});
  EXPECT_EQ(WEXITSTATUS(bad.status), 2) << bad.err;
  EXPECT_NE(bad.err.find("--max-ram"), std::string::npos) << bad.err;
}

// --- a real `livemig dest`, in a memory cgroup, told of more than it has --------------------

// The peak RSS of a process (VmHWM), bytes.
uint64_t peak_rss(pid_t pid) {
  std::ifstream f(strf("/proc/%d/status", int(pid)));
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  return 0;
}

size_t open_fds(pid_t pid) {
  size_t n = 0;
  if (DIR* d = opendir(strf("/proc/%d/fd", int(pid)).c_str())) {
    while (readdir(d)) n++;
    closedir(d);
  }
  return n;
}

struct Refusal {
  const char* name;
  std::vector<std::string> dest_args;
  std::vector<transport::MappingEntry> table;
  const char* told;
};

std::vector<transport::MappingEntry> many_mappings(size_t n) {
  std::vector<transport::MappingEntry> v;
  for (size_t i = 0; i < n; i++) v.push_back({(1ull << 32) + i * 2 * kPageSize, (1ull << 32) + (i * 2 + 1) * kPageSize, 3, 0});
  return v;
}

const Refusal kRefusals[] = {
    {"guest_32TiB", {}, {{1ull << 46, (1ull << 46) + (32ull << 40), 3, 0}}, "destination refuses 32.0 TiB of RAM: limit"},
    {"image_65536_mappings", {"--image"}, many_mappings(65536),
     "destination refuses 65536 mappings: limit 4096 (--max-mappings)"},
};

// A `livemig dest` with `args`, in `cgroup`, and the address it listens on.
struct SpawnedDest {
  Subprocess process;
  std::string address;
  std::unique_ptr<FILE, int (*)(FILE*)> out{nullptr, &fclose};
  std::string stderr_text() {
    std::string err;
    UniqueFd fd = process.take_pipe(2);
    char buf[4096];
    for (ssize_t n; (n = read(fd.get(), buf, sizeof buf)) > 0;) err.append(buf, size_t(n));
    return err;
  }
};

Result<std::unique_ptr<SpawnedDest>> spawn_dest(const std::vector<std::string>& args,
                                                lm::test::MemoryCgroup& cgroup) {
  std::vector<std::string> argv{env_or_fail("LM_LIVEMIG_BIN"), "dest", "--listen", "tcp:127.0.0.1:0", "--timeout-ms",
                                "20000"};
  argv.insert(argv.end(), args.begin(), args.end());
  SpawnOptions so;
  so.stdout_to = so.stderr_to = Stdio::pipe;
  so.on_parent_exit = ParentExit::die;
  auto d = std::make_unique<SpawnedDest>(SpawnedDest{LM_TRY(Subprocess::spawn(argv, so))});
  LM_TRY(cgroup.add(d->process.pid()));
  d->out.reset(fdopen(d->process.take_pipe(1).release(), "r"));
  char line[256] = {};
  if (!d->out || !fgets(line, sizeof line, d->out.get())) return Error::msg("livemig dest did not say where it listens");
  d->address = std::string(line).substr(std::string("LISTENING ").size());
  d->address.erase(d->address.find_last_not_of('\n') + 1);
  return d;
}

class RefusedByDest : public ::testing::TestWithParam<Refusal> {};

TEST_P(RefusedByDest, BeforeAnyMemoryWithTheReason) {
  const Refusal& c = GetParam();
  auto cgroup = lm::test::MemoryCgroup::create("livemig-admission", 256ull << 20);
  if (!cgroup) GTEST_SKIP() << cgroup.error().message;
  auto spawned = spawn_dest(c.dest_args, *cgroup);
  ASSERT_TRUE(spawned.ok()) << spawned.error().message;
  Subprocess* dest = &(*spawned)->process;
  const std::string address = (*spawned)->address;

  // What the destination holds when it listens (an ASan build holds over
  // 100 MiB by then); a refused session must add next to nothing to it.
  const uint64_t peak_listening = peak_rss(dest->pid());
  auto table = transport::MappingTable::make(c.table, 1);
  ASSERT_TRUE(table.ok()) << table.error().message;
  transport::SessionConfig config;
  auto session = transport::Session::connect(address, config, *table);
  ASSERT_FALSE(session.ok()) << "the destination accepted what it cannot hold";
  std::printf("source heard: %s\n", session.error().message.c_str());
  EXPECT_NE(session.error().message.find(c.told), std::string::npos) << session.error().message;

  const uint64_t peak_refused = peak_rss(dest->pid());
  EXPECT_LT(peak_refused - std::min(peak_refused, peak_listening), 32ull << 20)
      << "the destination made memory for a refused session: peak RSS " << peak_listening << " B listening, "
      << peak_refused << " B after the refusal";
  EXPECT_LT(open_fds(dest->pid()), 64u) << "the destination holds fds for a refused session";
  EXPECT_TRUE(dest->running()) << "a refusal ends no destination";
  ASSERT_TRUE(dest->send_signal(SIGTERM).ok());
  auto ended = dest->wait_or_kill(10000);
  ASSERT_TRUE(ended.ok()) << ended.error().message;
  EXPECT_NE(ended->signal, SIGABRT);
  const std::string err = (*spawned)->stderr_text();
  std::printf("destination said: %s", err.c_str());
  EXPECT_NE(err.find(std::string("refused: ")), std::string::npos) << err;
  EXPECT_NE(err.find(c.told), std::string::npos) << err;
  EXPECT_NE(err.find("127.0.0.1:"), std::string::npos) << "names the peer: " << err;
  std::printf("cgroup peak %.1f MiB\n", double(cgroup->max_usage_bytes()) / (1 << 20));
}

INSTANTIATE_TEST_SUITE_P(Limits, RefusedByDest, ::testing::ValuesIn(kRefusals),
                         [](const auto& info) { return std::string(info.param.name); });

// An image destination takes a 2^45-byte mapping (a process may reserve that
// much and touch little: an ASan build's shadow) without making memory for
// it, and charges each page it receives: past --max-ram it refuses the
// pages, having held at most one batch more.
TEST(PagesPastMaxRam, ImageOfA2pow45MappingIsChargedPerPage) {
  constexpr uint64_t kLimit = 64ull << 20, kBase = 1ull << 46, kBatchPages = 256;
  auto cgroup = lm::test::MemoryCgroup::create("livemig-admission-pages", 512ull << 20);
  if (!cgroup) GTEST_SKIP() << cgroup.error().message;
  auto spawned = spawn_dest({"--image", "--max-ram", "64M"}, *cgroup);
  ASSERT_TRUE(spawned.ok()) << spawned.error().message;
  Subprocess& dest = (*spawned)->process;
  const uint64_t peak_listening = peak_rss(dest.pid());

  auto table = transport::MappingTable::make({{kBase, kBase + (1ull << 45), 3, 0}}, 1);
  ASSERT_TRUE(table.ok()) << table.error().message;
  auto session = transport::Session::connect((*spawned)->address, transport::SessionConfig{}, *table);
  ASSERT_TRUE(session.ok()) << "a 2^45-byte mapping of an image is admitted: " << session.error().message;
  auto ready = Peer::control(*session, transport::Timeout(20000)).expect<Ready>();
  ASSERT_TRUE(ready.ok()) << ready.error().message;
  EXPECT_LT(peak_rss(dest.pid()) - std::min(peak_rss(dest.pid()), peak_listening), 32ull << 20)
      << "the destination made memory for the mapping's size";

  // Pages 2 MiB apart (a huge page each would hold 512 times more), twice the limit's worth.
  std::vector<PageEntry> entries(kBatchPages);
  std::vector<std::byte> payload(kBatchPages * kPageSize, std::byte{0x5a});
  uint64_t sent = 0;
  Result<void> r = ok();
  for (uint64_t batch = 0; r && sent < 2 * kLimit / kPageSize; batch++) {
    for (uint64_t i = 0; i < kBatchPages; i++)
      entries[i] = {kBase + ((batch * kBatchPages + i) << 21), uint32_t(kPageSize), Codec::raw, 0, 0};
    r = Peer::bulk(*session, 0, transport::Timeout(20000)).send(PageBatch{0, entries, payload});
    if (r) sent += kBatchPages;
  }
  auto word = Peer::control(*session, transport::Timeout(20000)).expect<Ready>();
  ASSERT_FALSE(word.ok()) << "the destination took " << sent << " pages past its limit";
  std::printf("source heard: %s (after sending %llu pages)\n", word.error().message.c_str(),
              (unsigned long long)sent);
  auto ended = dest.wait_or_kill(20000);
  ASSERT_TRUE(ended.ok()) << ended.error().message;
  const std::string err = (*spawned)->stderr_text();
  std::printf("destination said: %s", err.c_str());
  EXPECT_NE(err.find("destination refuses more pages"), std::string::npos) << err;
  EXPECT_NE(err.find("over its RAM limit 64.0 MiB (--max-ram)"), std::string::npos) << err;
  const uint64_t held = cgroup->max_usage_bytes();
  std::printf("cgroup peak %.1f MiB, listening RSS %.1f MiB\n", double(held) / (1 << 20),
              double(peak_listening) / (1 << 20));
  EXPECT_LT(held, peak_listening + kLimit + (64ull << 20)) << "more than the limit and a batch were held";
}

// --- 300 idle connections while a real migration runs ------------------------------------

TEST(IdleConnections, ThreeHundredDoNotHoldUpAMigration) {
  constexpr int kIdle = 300;
  // The test process holds both ends of every connection (600 fds + the migration's).
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  if (nofile.rlim_cur < 2048 && nofile.rlim_max >= 2048) {
    nofile.rlim_cur = 2048;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &nofile), 0);
  }
  if (nofile.rlim_cur < 2 * kIdle + 200) GTEST_SKIP() << "RLIMIT_NOFILE " << nofile.rlim_cur << " is too low";
  const std::string dir = temp_dir();
  auto g = busy_guest(dir, 32ull << 20);
  ASSERT_TRUE(g.ok()) << g.error().message;
  InProcessDestination dest(dir);
  ASSERT_TRUE(dest.dest);
  const std::string address = dest.dest->address();  // tcp:127.0.0.1:PORT
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(uint16_t(std::stoi(address.substr(address.rfind(':') + 1))));
  inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  std::vector<UniqueFd> idle;
  for (int i = 0; i < kIdle; i++) {
    UniqueFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0) << "connection " << i;
    idle.push_back(std::move(s));
  }
  SourceOptions o;
  o.pid = g->pid();
  o.scope.kind = dt::ScopeKind::ranges;
  o.scope.ranges = {{g->ram_addr(), g->ram_addr() + g->ram_size()}};
  o.timeout = transport::Timeout(10000);
  MigrationResult result;
  const auto t0 = std::chrono::steady_clock::now();
  auto r = SourceMigration(o).run(address, result);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  dest.join();
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(dest.outcome && dest.outcome->ok()) << (dest.outcome ? dest.outcome->error().message : "no outcome");
  std::printf("migration behind %d idle connections: %.2f s\n", kIdle, s);
  EXPECT_LT(s, 8.0) << "the idle connections held the migration up";
  if (auto guest = dest.sink->take_guest()) (void)guest->stop(5000);
}

}  // namespace
}  // namespace lm::engine::test
