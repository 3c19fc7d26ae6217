#include <gtest/gtest.h>

#include "common/error.hpp"

namespace {

lm::Result<int> half(int x) {
  if (x % 2) return lm::Error::msg(lm::strf("%d is odd", x));
  return x / 2;
}

lm::Result<int> quarter(int x) {
  int h = LM_TRY_CTX(half(x), "quarter");
  return LM_TRY(half(h));
}

lm::Result<void> fails_with_errno() { return lm::Error::sys(ENOENT, "open /nonexistent"); }

lm::Result<void> chain() {
  LM_TRY(fails_with_errno());
  return lm::ok();
}

TEST(Error, ValueAndErrorPropagate) {
  auto r = quarter(8);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 2);
  auto bad = quarter(6);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message, "3 is odd");
  auto bad2 = quarter(5);
  EXPECT_EQ(bad2.error().message, "quarter: 5 is odd");
}

TEST(Error, SysKeepsErrnoAndText) {
  auto r = chain();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_NE(r.error().message.find("open /nonexistent: No such file"), std::string::npos);
}

TEST(Error, ContextOnResult) {
  lm::Result<int> r = lm::Error::msg("inner");
  auto r2 = std::move(r).context("outer");
  EXPECT_EQ(r2.error().message, "outer: inner");
}

}  // namespace
