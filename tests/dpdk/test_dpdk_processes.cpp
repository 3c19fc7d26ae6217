// Two processes over real DPDK devices, each one dpdk_peer: net_memif over a
// unix socket, and net_af_packet on a veth pair between two network namespaces
// this test creates and removes. Integrity (every byte checked), injected
// loss/reordering/duplication, and a peer killed mid-stream.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "common/strf.hpp"

namespace {

std::string peer_exe() {
  const char* p = std::getenv("LM_DPDK_PEER");
  return p ? p : "tests/dpdk/dpdk_peer";
}

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A child process we started; killed (by its PID only) and reaped on scope exit.
class Child {
 public:
  Child(std::vector<std::string> argv, const std::string& tag) {
    out_ = lm::strf("/tmp/lm-dpdk-test-%d-%s.out", int(getpid()), tag.c_str());
    err_ = lm::strf("/tmp/lm-dpdk-test-%d-%s.err", int(getpid()), tag.c_str());
    pid_ = fork();
    if (pid_ == 0) {
      int o = open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int e = open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(o, 1);
      dup2(e, 2);
      std::vector<char*> a;
      for (auto& s : argv) a.push_back(s.data());
      a.push_back(nullptr);
      execvp(a[0], a.data());
      _exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    unlink(out_.c_str());
    unlink(err_.c_str());
  }
  void kill_now() { kill(pid_, SIGKILL); }
  // Exit status (0..255), 128+signal when killed, -1 on timeout (then killed).
  int wait(double timeout_s) {
    uint64_t end = lm::now_ns() + uint64_t(timeout_s * 1e9);
    int st = 0;
    for (;;) {
      pid_t r = waitpid(pid_, &st, WNOHANG);
      if (r == pid_) break;
      if (lm::now_ns() > end) {
        kill(pid_, SIGKILL);
        waitpid(pid_, &st, 0);
        reaped_ = true;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    reaped_ = true;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  std::string out() const { return slurp(out_); }
  std::string err() const { return slurp(err_); }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string out_, err_;
};

std::string memif_socket(const char* tag) { return lm::strf("/tmp/lm-dpdk-%d-%s.sock", int(getpid()), tag); }

std::vector<std::string> peer_args(std::vector<std::string> extra) {
  std::vector<std::string> a = {peer_exe()};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

struct PairResult {
  int server_rc, client_rc;
  std::string server_out, client_out, server_err, client_err;
};

PairResult run_memif_pair(const char* tag, const std::vector<std::string>& common, double timeout_s = 90) {
  std::string sock = memif_socket(tag);
  std::vector<std::string> s = {"--role", "server", "--socket", sock, "--mode", "recv", "--label", tag};
  std::vector<std::string> c = {"--role", "client", "--socket", sock, "--mode", "send", "--label", tag};
  s.insert(s.end(), common.begin(), common.end());
  c.insert(c.end(), common.begin(), common.end());
  Child server(peer_args(s), std::string(tag) + "-s");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Child client(peer_args(c), std::string(tag) + "-c");
  PairResult r;
  r.client_rc = client.wait(timeout_s);
  r.server_rc = server.wait(10);
  r.server_out = server.out();
  r.client_out = client.out();
  r.server_err = server.err();
  r.client_err = client.err();
  return r;
}

// "key": <number> from the peer's JSON.
double json_number(const std::string& json, const std::string& key) {
  size_t p = json.find("\"" + key + "\":");
  if (p == std::string::npos) return -1;
  return std::atof(json.c_str() + p + key.size() + 3);
}

}  // namespace

TEST(DpdkMemifTwoProcesses, TwoChannelsEveryByteVerified) {
  auto r = run_memif_pair("verify", {"--channels", "2", "--bytes", "48M", "--verify"});
  ASSERT_EQ(r.client_rc, 0) << r.client_err;
  ASSERT_EQ(r.server_rc, 0) << r.server_err;
  EXPECT_EQ(json_number(r.server_out, "bytes"), 2.0 * 48 * 1024 * 1024) << r.server_out;
  EXPECT_NE(r.server_out.find("\"ok\": true"), std::string::npos) << r.server_out;
}

// The memif client connects only when its port starts; started before its
// server it must keep trying (dev_start fails without the server's socket).
TEST(DpdkMemifTwoProcesses, ClientStartedBeforeServerConnects) {
  std::string sock = memif_socket("late");
  Child client(peer_args({"--role", "client", "--socket", sock, "--mode", "send", "--bytes", "16M", "--verify"}),
               "late-c");
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  Child server(peer_args({"--role", "server", "--socket", sock, "--mode", "recv", "--bytes", "16M", "--verify"}),
               "late-s");
  int crc = client.wait(60);
  int src = server.wait(15);
  ASSERT_EQ(crc, 0) << client.err();
  ASSERT_EQ(src, 0) << server.err();
  EXPECT_EQ(json_number(server.out(), "bytes"), 16.0 * 1024 * 1024) << server.out();
}

struct LossCase {
  const char* name;
  const char* loss;
  const char* reorder;
  const char* dup;
};

class DpdkMemifImpaired : public ::testing::TestWithParam<LossCase> {};

TEST_P(DpdkMemifImpaired, DataIntactInOrder) {
  const auto& lc = GetParam();
  auto r = run_memif_pair(lc.name, {"--bytes", "24M", "--msg-size", "100000", "--verify", "--loss", lc.loss,
                                    "--reorder", lc.reorder, "--dup", lc.dup});
  ASSERT_EQ(r.client_rc, 0) << r.client_err;
  ASSERT_EQ(r.server_rc, 0) << r.server_err;
  EXPECT_GE(json_number(r.server_out, "bytes"), 24.0 * 1024 * 1024) << r.server_out;
  EXPECT_GT(json_number(r.client_out, "retransmits"), 0) << r.client_out;
}

INSTANTIATE_TEST_SUITE_P(Loss, DpdkMemifImpaired,
                         ::testing::Values(LossCase{"loss1", "0.01", "0", "0"}, LossCase{"loss5", "0.05", "0", "0"},
                                           LossCase{"loss20", "0.2", "0", "0"},
                                           LossCase{"mixed5", "0.05", "0.05", "0.05"},
                                           LossCase{"mixed20", "0.2", "0.2", "0.2"}),
                         [](const auto& info) { return std::string(info.param.name); });

// Kill one side mid-stream: the other must report an error (not hang, not
// crash) within the peer timeout plus a margin.
class DpdkMemifPeerKilled : public ::testing::TestWithParam<const char*> {};

TEST_P(DpdkMemifPeerKilled, SurvivorFailsInBoundedTime) {
  std::string victim = GetParam();  // "sender" or "receiver"
  std::string sock = memif_socket(victim == "sender" ? "kill-s" : "kill-r");
  std::vector<std::string> common = {"--bytes", "64G", "--peer-timeout-ms", "1000"};
  std::vector<std::string> s = {"--role", "server", "--socket", sock, "--mode", "recv"};
  std::vector<std::string> c = {"--role", "client", "--socket", sock, "--mode", "send"};
  s.insert(s.end(), common.begin(), common.end());
  c.insert(c.end(), common.begin(), common.end());
  Child server(peer_args(s), victim + "-ks");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Child client(peer_args(c), victim + "-kc");
  // Wait until data flows (both print "established"), then a little more.
  uint64_t deadline = lm::now_ns() + 30'000'000'000ull;
  while ((server.err().find("established") == std::string::npos ||
          client.err().find("established") == std::string::npos) &&
         lm::now_ns() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_NE(server.err().find("established"), std::string::npos) << server.err();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Child& dead = victim == "sender" ? client : server;
  Child& survivor = victim == "sender" ? server : client;
  dead.kill_now();
  EXPECT_EQ(dead.wait(5), 128 + SIGKILL);
  lm::Stopwatch sw;
  int rc = survivor.wait(15);
  double waited = sw.elapsed_s();
  EXPECT_EQ(rc, 1) << "survivor must fail cleanly (not hang: -1, not crash: >128)\n" << survivor.err();
  EXPECT_LT(waited, 6.0);
  EXPECT_NE(survivor.err().find("silent"), std::string::npos) << survivor.err();
}

INSTANTIATE_TEST_SUITE_P(Victim, DpdkMemifPeerKilled, ::testing::Values("sender", "receiver"),
                         [](const auto& info) { return std::string(info.param); });

// Two network namespaces joined by a veth pair, created and removed here.
class VethNamespaces {
 public:
  VethNamespaces() {
    int id = int(getpid());
    ns_a_ = lm::strf("lmdpdk-a-%d", id);
    ns_b_ = lm::strf("lmdpdk-b-%d", id);
    ok_ = sh("ip netns add " + ns_a_) && sh("ip netns add " + ns_b_) &&
          sh(lm::strf("ip link add lmva%d type veth peer name lmvb%d", id, id)) &&
          sh(lm::strf("ip link set lmva%d netns %s", id, ns_a_.c_str())) &&
          sh(lm::strf("ip link set lmvb%d netns %s", id, ns_b_.c_str())) &&
          sh(lm::strf("ip -n %s link set lmva%d mtu 9000 up", ns_a_.c_str(), id)) &&
          sh(lm::strf("ip -n %s link set lmvb%d mtu 9000 up", ns_b_.c_str(), id));
    if_a_ = lm::strf("lmva%d", id);
    if_b_ = lm::strf("lmvb%d", id);
  }
  ~VethNamespaces() {
    sh("ip netns del " + ns_a_ + " 2>/dev/null");  // removes the veth with it
    sh("ip netns del " + ns_b_ + " 2>/dev/null");
  }
  bool ok() const { return ok_; }
  std::string ns_a_, ns_b_, if_a_, if_b_;

 private:
  static bool sh(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }
  bool ok_ = false;
};

TEST(DpdkAfPacketVeth, TwoNamespacesEveryByteVerified) {
  if (geteuid() != 0) {
    GTEST_SKIP() << "needs root for network namespaces";
  }
  VethNamespaces ns;
  ASSERT_TRUE(ns.ok()) << "could not create namespaces/veth";
  std::vector<std::string> common = {"--kind", "af_packet", "--bytes", "32M", "--msg-size", "100000", "--verify"};
  auto args = [&](const std::string& netns, const std::string& iface, const char* mode, const char* tag) {
    std::vector<std::string> a = {"ip", "netns", "exec", netns, peer_exe(), "--iface", iface, "--mode", mode,
                                  "--label", tag};
    a.insert(a.end(), common.begin(), common.end());
    return a;
  };
  Child receiver(args(ns.ns_b_, ns.if_b_, "recv", "afp"), "afp-r");
  Child sender(args(ns.ns_a_, ns.if_a_, "send", "afp"), "afp-s");
  int src = sender.wait(90);
  int rrc = receiver.wait(15);
  ASSERT_EQ(src, 0) << sender.err();
  ASSERT_EQ(rrc, 0) << receiver.err();
  EXPECT_GE(json_number(receiver.out(), "bytes"), 32.0 * 1024 * 1024) << receiver.out();
  std::printf("af_packet/veth: %s\n", receiver.out().c_str());
}
