#include <gtest/gtest.h>

#include "common/args.hpp"

namespace {

const std::vector<lm::OptionSpec> kSpecs = {
    {"pid", true, "target"}, {"json", false, "json output"}, {"size", true, "bytes"}};

TEST(Args, ParsesValuesFlagsAndPositionals) {
  auto a = lm::Args::parse({"--pid", "42", "--json", "x", "--size=64K"}, kSpecs);
  ASSERT_TRUE(a.ok()) << a.error().message;
  EXPECT_EQ(*a->get_u64("pid", 0), 42u);
  EXPECT_TRUE(a->has("json"));
  EXPECT_EQ(*a->get_size("size", 0), 65536u);
  ASSERT_EQ(a->positional().size(), 1u);
  EXPECT_EQ(a->positional()[0], "x");
}

TEST(Args, UnknownOptionIsNamed) {
  auto a = lm::Args::parse({"--bogus"}, kSpecs);
  ASSERT_FALSE(a.ok());
  EXPECT_NE(a.error().message.find("--bogus"), std::string::npos);
}

TEST(Args, MissingValueAndBadNumber) {
  EXPECT_FALSE(lm::Args::parse({"--pid"}, kSpecs).ok());
  auto a = lm::Args::parse({"--pid", "abc"}, kSpecs);
  ASSERT_TRUE(a.ok());
  auto v = a->get_u64("pid", 0);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().message.find("--pid"), std::string::npos);
}

TEST(Args, Sizes) {
  EXPECT_EQ(*lm::parse_size("1G"), 1ull << 30);
  EXPECT_EQ(*lm::parse_size("256MiB"), 256ull << 20);
  EXPECT_EQ(*lm::parse_size("4096"), 4096u);
  EXPECT_EQ(*lm::parse_size("1.5K"), 1536u);
  EXPECT_FALSE(lm::parse_size("12X").ok());
  EXPECT_FALSE(lm::parse_size("").ok());
}

}  // namespace
