// Authentication from the command line: `livemig dest` and `livemig source`
// with --psk-file (or $LIVEMIG_PSK_FILE) migrate a guest on loopback; a wrong
// key fails both, each naming the other's address; a keyless listener or
// dial off loopback is refused before any socket unless --insecure.
#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/secret.hpp"
#include "tests/engine/engine_test_util.hpp"

using namespace lm::engine::test;

namespace {

int exit_status(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -1; }

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Runs the test's migrations in a memory cgroup of its own (the guest and
// the destination's copy of it are charged there), removed at the end.
class MemoryCgroup {
 public:
  explicit MemoryCgroup(uint64_t limit_bytes) {
    std::string root = "/sys/fs/cgroup/memory";
    if (access((root + "/cgroup.procs").c_str(), W_OK) != 0) return;
    path_ = root + "/livemig-test-auth-" + std::to_string(getpid());
    if (mkdir(path_.c_str(), 0755) != 0) {
      path_.clear();
      return;
    }
    std::ofstream(path_ + "/memory.limit_in_bytes") << limit_bytes;
    std::ofstream(path_ + "/cgroup.procs") << getpid();
  }
  ~MemoryCgroup() {
    if (path_.empty()) return;
    std::ofstream("/sys/fs/cgroup/memory/cgroup.procs") << getpid();
    for (int i = 0; i < 50 && rmdir(path_.c_str()) != 0; ++i) usleep(100000);
  }
  bool ok() const { return !path_.empty(); }

 private:
  std::string path_;
};

// `livemig ARGS` with stdout and stderr in files under `dir`.
struct Livemig {
  pid_t pid = -1;
  std::string out, err;
  Livemig(const std::string& dir, const std::string& name, const std::vector<std::string>& args,
          const std::string& psk_env = "") {
    out = dir + "/" + name + ".out";
    err = dir + "/" + name + ".err";
    const std::string bin = env_or_fail("LM_LIVEMIG_BIN");
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      alarm(60);
      int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(o, 1);
      dup2(e, 2);
      if (!psk_env.empty()) setenv("LIVEMIG_PSK_FILE", psk_env.c_str(), 1);
      std::vector<const char*> argv{bin.c_str()};
      for (const auto& a : args) argv.push_back(a.c_str());
      argv.push_back(nullptr);
      execv(bin.c_str(), const_cast<char* const*>(argv.data()));
      _exit(127);
    }
  }
  // The address after "LISTENING " (waits up to 10 s).
  std::string listening() {
    for (int i = 0; i < 200; ++i) {
      std::string text = slurp(out);
      auto at = text.find("LISTENING ");
      auto nl = text.find('\n', at);
      if (at != std::string::npos && nl != std::string::npos) return text.substr(at + 10, nl - at - 10);
      usleep(50000);
    }
    return {};
  }
  int wait() {
    int status = 0;
    if (pid > 0) waitpid(pid, &status, 0);
    pid = -1;
    return exit_status(status);
  }
  ~Livemig() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

class CliAuth : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = temp_dir();
    key_ = dir_ + "/key";
    ASSERT_TRUE(lm::write_random_key_file(key_).ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string ram(const lm::guest::GuestProcess& g) {
    return lm::strf("0x%llx:%llu", (unsigned long long)g.ram_addr(), (unsigned long long)g.ram_size());
  }
  std::string dir_, key_;
};

TEST_F(CliAuth, DestAndSourceWithTheSameKeyFileMigrateOnLoopback) {
  MemoryCgroup cgroup(1ull << 30);
  if (!cgroup.ok()) GTEST_SKIP() << "needs a memory cgroup (cgroup v1 at /sys/fs/cgroup/memory, root)";
  auto g = busy_guest(dir_, 32ull << 20);
  ASSERT_TRUE(g.ok()) << g.error().message;
  // The destination takes the key from $LIVEMIG_PSK_FILE, the source from --psk-file.
  Livemig dest(dir_, "dest", {"dest", "--listen", "tcp:127.0.0.1:0", "--exit-after"}, key_);
  std::string address = dest.listening();
  ASSERT_FALSE(address.empty()) << slurp(dest.err);
  Livemig source(dir_, "source",
                 {"source", "--pid", std::to_string(g->pid()), "--to", address, "--ram", ram(*g), "--psk-file", key_});
  EXPECT_EQ(source.wait(), 0) << slurp(source.err);
  EXPECT_EQ(dest.wait(), 0) << slurp(dest.err);
  EXPECT_NE(slurp(dest.out).find("COMPLETED"), std::string::npos) << slurp(dest.out);
  EXPECT_NE(slurp(source.out).find("status        completed"), std::string::npos) << slurp(source.out);
}

TEST_F(CliAuth, WrongKeyFailsBothSidesNamingThePeer) {
  MemoryCgroup cgroup(1ull << 30);
  if (!cgroup.ok()) GTEST_SKIP() << "needs a memory cgroup (cgroup v1 at /sys/fs/cgroup/memory, root)";
  const std::string other = dir_ + "/other";
  ASSERT_TRUE(lm::write_random_key_file(other).ok());
  auto g = busy_guest(dir_, 16ull << 20);
  ASSERT_TRUE(g.ok()) << g.error().message;
  Livemig dest(dir_, "dest", {"dest", "--listen", "tcp:127.0.0.1:0", "--image", "--timeout-ms", "6000",
                              "--psk-file", key_});
  std::string address = dest.listening();
  ASSERT_FALSE(address.empty()) << slurp(dest.err);
  const std::string port = address.substr(address.rfind(':'));
  Livemig source(dir_, "source", {"source", "--pid", std::to_string(g->pid()), "--to", address, "--ram", ram(*g),
                                  "--psk-file", other});
  EXPECT_EQ(source.wait(), 1);
  EXPECT_EQ(dest.wait(), 1);
  const std::string serr = slurp(source.err), derr = slurp(dest.err);
  EXPECT_NE(serr.find("pre-shared key mismatch: the destination's proof did not verify"), std::string::npos) << serr;
  EXPECT_NE(serr.find("->127.0.0.1" + port), std::string::npos) << "names the destination: " << serr;
  EXPECT_NE(derr.find("peer reported: pre-shared key mismatch"), std::string::npos) << derr;
  EXPECT_NE(derr.find("127.0.0.1" + port + "->127.0.0.1:"), std::string::npos) << "names the source: " << derr;
  EXPECT_EQ(serr.find(slurp(key_).substr(0, 16)), std::string::npos) << "a key was printed";
  expect_source_unharmed(*g);
}

// A process id nobody has: the refusal must come before anything is attached.
pid_t unused_pid() {
  for (pid_t p = 4000000;; --p)
    if (kill(p, 0) != 0 && errno == ESRCH) return p;
}

TEST_F(CliAuth, KeylessListenOffLoopbackIsRefusedUnlessInsecure) {
  auto refused = run_livemig({"dest", "--listen", "tcp:0.0.0.0:0", "--image"});
  EXPECT_EQ(exit_status(refused.status), 1);
  EXPECT_NE(refused.err.find("refusing to listen on tcp:0.0.0.0:0 without a pre-shared key: it is not a loopback "
                             "address; pass --psk-file FILE"),
            std::string::npos)
      << refused.err;
  EXPECT_NE(refused.err.find("--insecure"), std::string::npos) << refused.err;
  EXPECT_EQ(refused.out.find("LISTENING"), std::string::npos) << "refused before listening";
  // --insecure: it listens (and, with nobody coming, gives up after 100 ms).
  auto allowed = run_livemig({"dest", "--listen", "tcp:0.0.0.0:0", "--image", "--insecure", "--timeout-ms", "100"});
  EXPECT_NE(allowed.out.find("LISTENING tcp:0.0.0.0:"), std::string::npos) << allowed.out << allowed.err;
  EXPECT_EQ(allowed.err.find("refusing"), std::string::npos) << allowed.err;
  // With a key it listens too.
  auto keyed = run_livemig({"dest", "--listen", "tcp:0.0.0.0:0", "--image", "--psk-file", key_, "--timeout-ms", "100"});
  EXPECT_NE(keyed.out.find("LISTENING tcp:0.0.0.0:"), std::string::npos) << keyed.out << keyed.err;
}

TEST_F(CliAuth, KeylessDialOffLoopbackIsRefusedUnlessInsecure) {
  const std::string pid = std::to_string(unused_pid());
  // 0.0.0.0 is not loopback; were it dialled it would stay on this host.
  auto refused = run_livemig({"source", "--pid", pid, "--to", "tcp:0.0.0.0:1", "--ram", "0x10000:4096"});
  EXPECT_EQ(exit_status(refused.status), 1);
  EXPECT_NE(refused.err.find("refusing to connect to tcp:0.0.0.0:1 without a pre-shared key"), std::string::npos)
      << refused.err;
  auto allowed = run_livemig({"source", "--pid", pid, "--to", "tcp:0.0.0.0:1", "--ram", "0x10000:4096", "--insecure"});
  EXPECT_EQ(exit_status(allowed.status), 1) << "no such process";
  EXPECT_EQ(allowed.err.find("refusing"), std::string::npos) << allowed.err;
  EXPECT_NE(allowed.err.find(pid), std::string::npos) << "fails on the process instead: " << allowed.err;
}

TEST_F(CliAuth, KeyFileProblemsStopTheCommandBeforeItListens) {
  const std::string open_key = dir_ + "/open";
  std::ofstream(open_key) << "0123456789abcdef0123\n";
  chmod(open_key.c_str(), 0644);
  auto loose = run_livemig({"dest", "--listen", "tcp:127.0.0.1:0", "--image", "--psk-file", open_key});
  EXPECT_EQ(exit_status(loose.status), 1);
  EXPECT_NE(loose.err.find("is accessible by group or others (mode 0644)"), std::string::npos) << loose.err;
  EXPECT_EQ(loose.err.find("0123456789abcdef"), std::string::npos) << "the key was printed";
  EXPECT_EQ(loose.out.find("LISTENING"), std::string::npos);
  // The same from the environment.
  setenv("LIVEMIG_PSK_FILE", open_key.c_str(), 1);
  auto env = run_livemig({"dest", "--listen", "tcp:127.0.0.1:0", "--image"});
  unsetenv("LIVEMIG_PSK_FILE");
  EXPECT_NE(env.err.find("is accessible by group or others (mode 0644)"), std::string::npos) << env.err;
  const std::string short_key = dir_ + "/short";
  std::ofstream(short_key) << "short\n";
  chmod(short_key.c_str(), 0600);
  auto too_short = run_livemig({"source", "--pid", "1", "--to", "tcp:127.0.0.1:1", "--psk-file", short_key});
  EXPECT_EQ(exit_status(too_short.status), 1);
  EXPECT_NE(too_short.err.find("5-byte key; at least 16 bytes"), std::string::npos) << too_short.err;
  auto generate = run_livemig({"dest", "--listen", "tcp:127.0.0.1:0", "--image", "--psk-file", "generate"});
  EXPECT_NE(generate.err.find("\"generate\" is for livemig run"), std::string::npos) << generate.err;
}

// `livemig run` with security.psk-file = "generate": both sides get a fresh
// key, and the migration completes authenticated.
TEST(RunAuth, GeneratedKeyForBothSides) {
  MemoryCgroup cgroup(1ull << 30);
  if (!cgroup.ok()) GTEST_SKIP() << "needs a memory cgroup (cgroup v1 at /sys/fs/cgroup/memory, root)";
  auto config = small_guest({"security.psk-file=\"generate\"", "migration.transport=\"tcp\""});
  EXPECT_EQ(config.security.psk_file, "generate");
  expect_migrated_and_verified(migrate(config));
  auto offhost = small_guest({"migration.address=\"0.0.0.0:0\""});
  lm::engine::RunOptions o;
  o.guest_binary = guest_binary();
  auto r = lm::engine::run_scenario(offhost, o);
  ASSERT_FALSE(r.ok()) << "a keyless run on 0.0.0.0 must be refused";
  EXPECT_NE(r.error().message.find("refusing to listen on uring:0.0.0.0:0 without a pre-shared key"),
            std::string::npos)
      << r.error().message;
}

}  // namespace
