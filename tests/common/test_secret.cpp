// Key files (common/secret.hpp): private, at least 16 bytes, one trailing
// newline stripped; a generated key file is private and reads back.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "common/secret.hpp"

namespace lm {
namespace {

class KeyFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char t[] = "/tmp/livemig-secret-XXXXXX";
    ASSERT_NE(mkdtemp(t), nullptr);
    dir_ = t;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& content, mode_t mode) {
    std::string path = dir_ + "/" + name;
    std::ofstream(path) << content;
    EXPECT_EQ(chmod(path.c_str(), mode), 0);
    return path;
  }
  std::string dir_;
};

TEST_F(KeyFileTest, PrivateKeyReadsWithoutItsTrailingNewline) {
  auto key = read_key_file(write("k", "0123456789abcdef0123\n", 0600));
  ASSERT_TRUE(key.ok()) << key.error().message;
  EXPECT_EQ(*key, "0123456789abcdef0123");
  auto two = read_key_file(write("k2", "0123456789abcdef\n\n", 0400));
  ASSERT_TRUE(two.ok()) << two.error().message;
  EXPECT_EQ(*two, "0123456789abcdef\n") << "only one trailing newline is stripped";
}

TEST_F(KeyFileTest, AFileOthersMayReadIsRefusedWithItsMode) {
  for (mode_t mode : {0644, 0640, 0604, 0660}) {
    std::string path = write("k", "0123456789abcdef0123", mode);
    auto key = read_key_file(path);
    ASSERT_FALSE(key.ok()) << std::oct << mode;
    EXPECT_EQ(key.error().code, EACCES);
    char want[64];
    std::snprintf(want, sizeof want, "(mode %04o)", unsigned(mode));
    EXPECT_NE(key.error().message.find(want), std::string::npos) << key.error().message;
    EXPECT_NE(key.error().message.find(path), std::string::npos) << key.error().message;
    EXPECT_EQ(key.error().message.find("0123456789abcdef"), std::string::npos) << "the key is never printed";
  }
}

TEST_F(KeyFileTest, ShortKeysAreRefusedWithoutPrintingThem) {
  auto key = read_key_file(write("k", "fifteen-bytes!!\n", 0600));
  ASSERT_FALSE(key.ok());
  EXPECT_NE(key.error().message.find("15-byte key; at least 16"), std::string::npos) << key.error().message;
  EXPECT_EQ(key.error().message.find("fifteen"), std::string::npos);
  EXPECT_FALSE(read_key_file(write("empty", "", 0600)).ok());
}

TEST_F(KeyFileTest, MissingFileAndDirectoryAreNamed) {
  auto missing = read_key_file(dir_ + "/nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_NE(missing.error().message.find(dir_ + "/nope"), std::string::npos);
  chmod(dir_.c_str(), 0700);
  auto dir = read_key_file(dir_);
  ASSERT_FALSE(dir.ok());
  EXPECT_NE(dir.error().message.find("not a regular file"), std::string::npos) << dir.error().message;
}

TEST_F(KeyFileTest, GeneratedKeyIsPrivateFreshAndReadsBack) {
  ASSERT_TRUE(write_random_key_file(dir_ + "/a").ok());
  ASSERT_TRUE(write_random_key_file(dir_ + "/b").ok());
  struct stat st;
  ASSERT_EQ(stat((dir_ + "/a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto a = read_key_file(dir_ + "/a");
  auto b = read_key_file(dir_ + "/b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 64u);
  EXPECT_NE(*a, *b);
  EXPECT_FALSE(write_random_key_file(dir_ + "/a").ok()) << "an existing file is not overwritten";
}

}  // namespace
}  // namespace lm
