#include <gtest/gtest.h>

#include "attention/registry.h"

namespace attn {
namespace {

std::string usage_error(const std::string& spec) {
  try {
    make_attention(spec);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(Registry, KnownVariantsAreListed) {
  for (const char* name : {"reference", "full_materialized", "full"})
    EXPECT_EQ(make_attention(name)->name(), name);
}

TEST(Registry, UnknownVariantListsValidNames) {
  std::string e = usage_error("flash");
  EXPECT_NE(e.find("unknown variant 'flash'"), std::string::npos) << e;
  EXPECT_NE(e.find("full_materialized"), std::string::npos) << e;
}

TEST(Registry, UnknownKeyIsAnError) {
  std::string e = usage_error("full:radius=3");
  EXPECT_NE(e.find("unknown parameter 'radius'"), std::string::npos) << e;
  EXPECT_NE(usage_error("full:radius").find("key=value"), std::string::npos);
  EXPECT_NE(usage_error("").find("empty variant spec"), std::string::npos);
}

TEST(Registry, ParamValuesAreValidated) {
  VariantInfo info{"toy",
                   "doc",
                   {{"n", ParamSpec::Kind::Int, "4", "count", 1, 10},
                    {"x", ParamSpec::Kind::Float, "0.5", "frac", 0, 1},
                    {"on", ParamSpec::Kind::Bool, "false", "flag"},
                    {"mode", ParamSpec::Kind::Choice, "a", "mode", 0, 0, {"a", "b"}}},
                   nullptr};
  Params p = parse_params(info, "n=7, x=0.25,on=true,mode=b");
  EXPECT_EQ(p.get_int("n"), 7);
  EXPECT_DOUBLE_EQ(p.get_float("x"), 0.25);
  EXPECT_TRUE(p.get_bool("on"));
  EXPECT_EQ(p.get("mode"), "b");
  EXPECT_EQ(parse_params(info, "").get_int("n"), 4);
  for (const char* bad : {"n=0", "n=11", "n=2.5", "n=abc", "x=2", "x=nan", "on=maybe", "mode=c"}) {
    try {
      parse_params(info, bad);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("expected"), std::string::npos) << e.what();
    }
  }
}

TEST(Registry, ImpossibleShapesAreUsageErrors) {
  auto full = make_attention("full");
  EXPECT_THROW(full->validate(Shape{1, 1, 0, 4, 64}), UsageError);
  EXPECT_THROW(full->validate(Shape{1, 1, 4, 8, 64, true}), UsageError);
  EXPECT_NO_THROW(full->validate(Shape{1, 1, 4, 8, 64, false}));
}

}  // namespace
}  // namespace attn
