// The dpdk backend behind the transport Channel interface, in one process:
// a memif server (listener) and client (connect) on one socket, several
// channels (flows) over the one link, the close handshake at the end.
#include <gtest/gtest.h>

#include <sched.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "common/clock.hpp"
#include "tests/transport/helpers.hpp"
#include "transport/channel.hpp"
#include "transport/scatter.hpp"

using namespace lm;
using namespace lm::transport;

namespace {

void fill(std::vector<uint8_t>& v, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = uint8_t(x);
  }
}

// The CPUs thread `tid` may run on (0: the calling thread).
cpu_set_t cpus_of(pid_t tid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(tid, sizeof set, &set);
  return set;
}
// The CPUs this process may run on, read before main (before any EAL).
const cpu_set_t kCpusAtStart = cpus_of(0);

// Thread ids of this process whose name is `name`.
std::vector<pid_t> threads_named(const std::string& name) {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(e.path() / "comm");
    std::string c;
    std::getline(comm, c);
    if (c == name) out.push_back(pid_t(std::stol(e.path().filename().string())));
  }
  return out;
}

}  // namespace

// A listener and a connected client on one memif link, with `extra` options.
struct MemifPair {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Channel> server, client;
  void close() {
    auto closing = std::async(std::launch::async, [&] { return client->close(Timeout(20000)); });
    EXPECT_TRUE(server->close(Timeout(20000)).ok());
    EXPECT_TRUE(closing.get().ok());
  }
};

Result<MemifPair> memif_pair(const std::string& extra) {
  ChannelOptions opt;
  opt.extra = extra;
  MemifPair p;
  p.listener = LM_TRY(listen("dpdk:127.0.0.1:0", opt));
  std::string address = p.listener->address();
  auto dialed = std::async(std::launch::async, [&] { return connect(address, opt, Timeout(20000)); });
  auto accepted = p.listener->accept(Timeout(20000));
  auto client = dialed.get();
  p.server = LM_TRY(std::move(accepted));
  p.client = LM_TRY(std::move(client));
  return p;
}

// rte_eal_init pins its caller to the main lcore, and every thread created
// afterwards inherits it: the pollers of both ends and the application's own
// threads all ran on CPU 0. The EAL must leave the process's CPUs as it found
// them (pollers unpinned here with cpu=any).
TEST(DpdkEal, LeavesTheCallersCpusAsItFoundThem) {
  if (CPU_COUNT(&kCpusAtStart) < 2) GTEST_SKIP() << "one CPU: nothing to pin away from";
  auto pair = memif_pair("flows=2,mem=512,cpu=any");  // the EAL is up from here on
  ASSERT_TRUE(pair.ok()) << pair.error().message;
  cpu_set_t mine = cpus_of(0);
  EXPECT_TRUE(CPU_EQUAL(&mine, &kCpusAtStart)) << "this thread: " << CPU_COUNT(&mine) << " CPUs of "
                                               << CPU_COUNT(&kCpusAtStart);
  cpu_set_t later;
  std::thread([&] { later = cpus_of(0); }).join();
  EXPECT_TRUE(CPU_EQUAL(&later, &kCpusAtStart)) << "a thread started after: " << CPU_COUNT(&later) << " CPUs";
  auto pollers = threads_named("lm-dpdk-poll");
  EXPECT_GE(pollers.size(), 2u);  // the listener's and the client's links
  for (pid_t tid : pollers) {
    cpu_set_t p = cpus_of(tid);
    EXPECT_TRUE(CPU_EQUAL(&p, &kCpusAtStart)) << "poller " << tid << ": " << CPU_COUNT(&p) << " CPUs";
  }
  pair->close();
}

// By default the two ends of a memif link poll on one CPU, the last the
// process may use (docs/dpdk.md, "Poll-mode worker"); cpu=N names another.
TEST(DpdkEal, MemifPollersShareOneCpuUnlessToldOtherwise) {
  if (CPU_COUNT(&kCpusAtStart) < 2) GTEST_SKIP() << "one CPU: nothing to choose";
  int last = -1, first = -1;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &kCpusAtStart)) {
      if (first < 0) first = c;
      last = c;
    }
  for (int want : {last, first}) {
    auto pair = memif_pair(want == last ? "flows=2,mem=512" : lm::strf("flows=2,mem=512,cpu=%d", want));
    ASSERT_TRUE(pair.ok()) << pair.error().message;
    auto pollers = threads_named("lm-dpdk-poll");
    EXPECT_EQ(pollers.size(), 2u);
    for (pid_t tid : pollers) {
      cpu_set_t p = cpus_of(tid);
      EXPECT_EQ(CPU_COUNT(&p), 1) << "poller " << tid;
      EXPECT_TRUE(CPU_ISSET(want, &p)) << "poller " << tid << " is not on CPU " << want;
    }
    cpu_set_t mine = cpus_of(0);
    EXPECT_TRUE(CPU_EQUAL(&mine, &kCpusAtStart)) << "pinning a poller pinned its caller";
    pair->close();
  }
}

// The listen address: an explicit memif socket, or an IP-style address as
// generic tools write it (port 0: the listener picks a socket and names it).
class DpdkChannel : public ::testing::TestWithParam<std::string> {};

TEST_P(DpdkChannel, ThreeChannelsMultiPieceMessagesThenClose) {
  auto probe = find_backend("dpdk");
  ASSERT_TRUE(probe.ok()) << probe.error().message;
  std::string listen_address = GetParam() == "memif"
                                   ? lm::strf("dpdk:memif:/tmp/lm-test-chan-%d.sock", int(getpid()))
                                   : "dpdk:127.0.0.1:0";
  ChannelOptions opt;
  opt.extra = "flows=4,mem=512";
  auto listener = listen(listen_address, opt);
  ASSERT_TRUE(listener.ok()) << listener.error().message;
  std::string address = (*listener)->address();
  ASSERT_EQ(address.rfind("dpdk:memif:/", 0), 0u) << address;

  constexpr int kChannels = 3, kMessages = 60;
  auto client = std::async(std::launch::async, [&]() -> Result<void> {
    std::vector<std::unique_ptr<Channel>> chans;
    for (int c = 0; c < kChannels; ++c) chans.push_back(LM_TRY(connect(address, opt, Timeout(20000))));
    std::vector<uint8_t> head(24), body;
    for (int m = 0; m < kMessages; ++m)
      for (int c = 0; c < kChannels; ++c) {
        body.resize(size_t(m) * 4099 % 300000);
        fill(head, uint64_t(c) << 32 | uint64_t(m));
        fill(body, (uint64_t(c) << 32 | uint64_t(m)) + 1);
        ConstBuffer pieces[2] = {{head.data(), head.size()}, {body.data(), body.size()}};
        LM_TRY(send_sync(*chans[c], pieces, Timeout(20000)));
      }
    for (auto& ch : chans) LM_TRY(ch->close(Timeout(20000)));
    return ok();
  });

  std::vector<std::unique_ptr<Channel>> chans;
  for (int c = 0; c < kChannels; ++c) {
    auto ch = (*listener)->accept(Timeout(20000));
    ASSERT_TRUE(ch.ok()) << ch.error().message;
    chans.push_back(std::move(*ch));
  }
  // Channels are accepted in the order the client opened them: flow c is channel c.
  // Channel 1 receives in place (recv_pieces: the frames' payloads), the
  // others contiguous messages (recv).
  std::vector<uint8_t> want_head(24), want_body, joined;
  std::vector<std::span<const std::byte>> pieces;
  size_t multi_piece = 0;
  for (int m = 0; m < kMessages; ++m)
    for (int c = 0; c < kChannels; ++c) {
      std::span<const std::byte> bytes;
      if (c == 1) {
        auto st = recv_pieces(*chans[c], pieces, Timeout(20000));
        ASSERT_TRUE(st.ok()) << st.error().message;
        ASSERT_EQ(*st, RecvStatus::message);
        joined.clear();
        for (auto p : pieces) {
          ASSERT_FALSE(p.empty());
          joined.insert(joined.end(), reinterpret_cast<const uint8_t*>(p.data()),
                        reinterpret_cast<const uint8_t*>(p.data()) + p.size());
        }
        multi_piece += pieces.size() > 1;
        bytes = std::as_bytes(std::span<const uint8_t>(joined));
      } else {
        auto r = chans[c]->recv(Timeout(20000));
        ASSERT_TRUE(r.ok()) << r.error().message;
        ASSERT_EQ(r->status, RecvStatus::message);
        ASSERT_EQ(reinterpret_cast<uintptr_t>(r->bytes.data()) % 8, 0u) << "channel " << c << " message " << m;
        bytes = r->bytes;
      }
      want_body.resize(size_t(m) * 4099 % 300000);
      fill(want_head, uint64_t(c) << 32 | uint64_t(m));
      fill(want_body, (uint64_t(c) << 32 | uint64_t(m)) + 1);
      ASSERT_EQ(bytes.size(), want_head.size() + want_body.size()) << "channel " << c << " message " << m;
      ASSERT_EQ(std::memcmp(bytes.data(), want_head.data(), want_head.size()), 0);
      if (!want_body.empty()) {  // memcmp must not be given an empty vector's null data()
        ASSERT_EQ(std::memcmp(bytes.data() + want_head.size(), want_body.data(), want_body.size()), 0)
            << "channel " << c << " message " << m;
      }
    }
  EXPECT_GT(multi_piece, size_t(kMessages) / 2) << "messages of several frames come in place, not reassembled";
  for (auto& ch : chans) {
    auto r = ch->recv(Timeout(20000));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r->status, RecvStatus::closed);
    EXPECT_TRUE(ch->close(Timeout(20000)).ok());
  }
  auto cr = client.get();
  ASSERT_TRUE(cr.ok()) << cr.error().message;
}

INSTANTIATE_TEST_SUITE_P(Address, DpdkChannel, ::testing::Values("memif", "ip_port0"),
                         [](const auto& info) { return info.param; });

// A listener destroyed before any client came: DPDK 22.11's memif then left
// its listener callback on a closed fd, spinning the EAL interrupt thread
// ("memif_listener_handler(): Failed to accept ... fd -1") forever.
TEST(DpdkListener, DestroyedBeforeAnyClientLeavesNoBusyThread) {
  ChannelOptions opt;
  opt.extra = "flows=2,mem=512";
  {
    auto listener = listen("dpdk:127.0.0.1:0", opt);
    ASSERT_TRUE(listener.ok()) << listener.error().message;
  }
  double cpu0 = lm::process_cpu_seconds();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  double busy = lm::process_cpu_seconds() - cpu0;
  EXPECT_LT(busy, 0.2) << "a thread keeps spinning after the listener went away";
}

// A stopped accept and a stopped recv end within milliseconds with ECANCELED
// (the poll-mode worker's waits see the stop token); both keep working.
TEST(DpdkChannelStop, StoppedAcceptAndRecvEndAtOnceAndStayUsable) {
  ChannelOptions opt;
  opt.extra = "flows=2,mem=512";
  auto listener = listen(lm::strf("dpdk:memif:/tmp/lm-test-stop-%d.sock", int(getpid())), opt);
  ASSERT_TRUE(listener.ok()) << listener.error().message;
  std::string address = (*listener)->address();
  {
    auto [r, late_ms] = lm::transport::testing::wait_stopped_later(
        [&](std::stop_token t) { return (*listener)->accept(Timeout(20000), t); });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ECANCELED) << r.error().message;
    EXPECT_LT(late_ms, 50.0);
  }
  auto dialed = std::async(std::launch::async, [&] { return connect(address, opt, Timeout(20000)); });
  auto accepted = (*listener)->accept(Timeout(20000));
  ASSERT_TRUE(accepted.ok()) << accepted.error().message;
  auto client = dialed.get();
  ASSERT_TRUE(client.ok()) << client.error().message;
  auto& server = *accepted;
  {
    auto [r, late_ms] = lm::transport::testing::wait_stopped_later(
        [&](std::stop_token t) { return server->recv(Timeout(20000), t); });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ECANCELED) << r.error().message;
    EXPECT_NE(r.error().message.find(server->name()), std::string::npos) << r.error().message;
    EXPECT_LT(late_ms, 50.0);
  }
  uint64_t v = 77;
  ConstBuffer piece{&v, sizeof v};
  ASSERT_TRUE(send_sync(**client, {&piece, 1}, Timeout(20000)).ok());
  auto got = server->recv(Timeout(20000));
  ASSERT_TRUE(got.ok()) << got.error().message;
  ASSERT_EQ(got->bytes.size(), sizeof v);
  EXPECT_EQ(std::memcmp(got->bytes.data(), &v, sizeof v), 0);
  auto closing = std::async(std::launch::async, [&] { return (*client)->close(Timeout(20000)); });
  EXPECT_TRUE(server->close(Timeout(20000)).ok());
  EXPECT_TRUE(closing.get().ok());
}
