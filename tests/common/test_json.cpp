#include <gtest/gtest.h>

#include "common/json.hpp"

TEST(Json, NestedCompact) {
  lm::JsonWriter w(false);
  w.begin_object().field("a", uint64_t(1)).field("s", "x\"y").begin_array("v").value(uint64_t(2)).value(
      uint64_t(3)).end_array().begin_object("o").field("b", true).end_object().end_object();
  EXPECT_EQ(w.str(), R"({"a":1,"s":"x\"y","v":[2,3],"o":{"b":true}})");
}

TEST(Json, NonFiniteIsNull) {
  lm::JsonWriter w(false);
  w.begin_object().field("x", 1.0 / 0.0).end_object();
  EXPECT_EQ(w.str(), R"({"x":null})");
}
