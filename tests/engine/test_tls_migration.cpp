// `livemig dest --tls --tls-creds D` and `livemig source --tls --tls-creds D`
// as two processes on loopback: a small process migrated in image mode over
// TLS 1.3 (mutual X.509), verified; and the refusals that name what is wrong.
#include <gtest/gtest.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/secret.hpp"
#include "engine_test_util.hpp"
#include "tests/transport/tls_certs.hpp"

using namespace lm;
using namespace lm::engine::test;
using nlohmann::json;

namespace {

// A process with 8 MiB of patterned memory that waits to be migrated.
struct Target {
  pid_t pid = -1;
  Target() {
    pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      alarm(60);
      const size_t n = 8 << 20;
      auto* p = static_cast<unsigned char*>(malloc(n));
      for (size_t i = 0; i < n; ++i) p[i] = static_cast<unsigned char>(i * 31 + (i >> 12));
      for (;;) pause();
    }
  }
  ~Target() {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
  }
};

std::string creds_dir(const std::string& work) {
  std::string dir = work + "/creds";
  auto w = lm::transport::testing::write_test_creds(dir, "livemig test CA");
  EXPECT_TRUE(w.ok()) << w.error().message;
  return dir;
}

// The same migration with mutual X.509 or with TLS-PSK from the --psk-file key.
struct TlsCase {
  std::string backend;
  bool psk;
};

class TlsMigration : public ::testing::TestWithParam<TlsCase> {};

TEST_P(TlsMigration, ImageOverTlsIsVerified) {
  const std::string work = temp_dir();
  std::vector<std::string> credentials;
  if (GetParam().psk) {
    ASSERT_TRUE(lm::write_random_key_file(work + "/psk").ok());
    credentials = {"--tls", "--psk-file", work + "/psk"};
  } else {
    credentials = {"--tls", "--tls-creds", creds_dir(work)};
  }
  auto with_credentials = [&](std::vector<std::string> args) {
    args.insert(args.end(), credentials.begin(), credentials.end());
    return args;
  };
  Target target;
  Livemig dest(with_credentials({"dest", "--image", "--listen", GetParam().backend + ":127.0.0.1:0"}));
  std::string listening = dest.line();
  ASSERT_EQ(listening.rfind("LISTENING ", 0), 0u) << listening;
  std::string address = listening.substr(10, listening.find_last_not_of("\n") - 9);
  Livemig source(with_credentials({"source", "--pid", std::to_string(target.pid), "--to", address, "--out",
                                   work + "/result.json"}));
  std::string source_out = source.rest();
  EXPECT_EQ(source.wait(), 0) << source_out;
  std::string dest_out = dest.rest();
  EXPECT_EQ(dest.wait(), 0) << dest_out;
  EXPECT_NE(dest_out.find("COMPLETED"), std::string::npos) << dest_out;
  std::ifstream f(work + "/result.json");
  json result = json::parse(f, nullptr, false);
  EXPECT_EQ(result.value("status", ""), "completed") << result.dump(2);
  EXPECT_EQ(result["verify"].value("ok", false), true) << result.dump(2);
  std::filesystem::remove_all(work);
}

INSTANTIATE_TEST_SUITE_P(Backends, TlsMigration,
                         ::testing::Values(TlsCase{"tcp", false}, TlsCase{"uring", false}, TlsCase{"tcp", true},
                                           TlsCase{"uring", true}),
                         [](const ::testing::TestParamInfo<TlsCase>& i) {
                           return i.param.backend + (i.param.psk ? "_psk" : "_x509");
                         });

TEST(TlsMigrationRefused, PlaintextSourceAgainstTlsDestFailsNamingTls) {
  const std::string work = temp_dir(), creds = creds_dir(work);
  Target target;
  Livemig dest({"dest", "--image", "--listen", "tcp:127.0.0.1:0", "--tls", "--tls-creds", creds, "--timeout-ms",
                "5000"});
  std::string listening = dest.line();
  ASSERT_EQ(listening.rfind("LISTENING ", 0), 0u) << listening;
  std::string address = listening.substr(10, listening.find_last_not_of("\n") - 9);
  auto source = run_livemig({"source", "--pid", std::to_string(target.pid), "--to", address});
  EXPECT_TRUE(WIFEXITED(source.status) && WEXITSTATUS(source.status) == 1) << source.err;
  kill(dest.pid, SIGTERM);
  std::filesystem::remove_all(work);
}

TEST(TlsMigrationRefused, TlsWithoutCredentialsNamesBothKinds) {
  auto r = run_livemig({"dest", "--image", "--listen", "tcp:127.0.0.1:0", "--tls"});
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 1) << r.err;
  EXPECT_NE(r.err.find("--tls needs credentials: --tls-creds DIR (mutual X.509) or --psk-file FILE (TLS-PSK)"),
            std::string::npos)
      << r.err;
}

TEST(TlsMigrationRefused, DpdkWithTlsIsRefusedNamingTheBackend) {
  const std::string work = temp_dir(), creds = creds_dir(work);
  auto r = run_livemig({"dest", "--image", "--listen", "dpdk:memif:" + work + "/x.sock", "--tls", "--tls-creds", creds});
  std::filesystem::remove_all(work);
  if (r.err.find("unknown transport backend") != std::string::npos) GTEST_SKIP() << "no dpdk backend in this build";
  EXPECT_TRUE(WIFEXITED(r.status) && WEXITSTATUS(r.status) != 0) << r.err;
  EXPECT_NE(r.err.find("transport backend dpdk does not encrypt"), std::string::npos) << r.err;
}

}  // namespace
