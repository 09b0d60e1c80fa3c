#include <gtest/gtest.h>

#include <set>
#include <sstream>

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

// The seven variants the project ships must stay registered, every registered name must build
// a variant of that name, and no name may be registered twice.
TEST(Registry, KnownVariantsAreListed) {
  std::set<std::string> registered;
  for (const VariantInfo& v : variants()) {
    EXPECT_TRUE(registered.insert(v.name).second) << v.name << " registered twice";
    EXPECT_EQ(make_attention(v.name)->name(), v.name);
  }
  for (const char* name : {"reference", "full_materialized", "full", "sliding_window", "longformer",
                           "lsh", "performer"})
    EXPECT_EQ(registered.count(name), 1u) << name << " is not registered";
}

// The names after "valid variants: " up to " (see", split at ", ".
std::vector<std::string> names_in_error(const std::string& e) {
  const std::string from = "valid variants: ", to = " (see";
  const size_t a = e.find(from), b = e.find(to);
  if (a == std::string::npos || b == std::string::npos || b < a) return {};
  std::vector<std::string> names;
  std::istringstream list(e.substr(a + from.size(), b - a - from.size()));
  for (std::string name; std::getline(list, name, ',');)
    names.push_back(name.substr(name.find_first_not_of(' ')));
  return names;
}

TEST(Registry, UnknownVariantListsValidNames) {
  std::string e = usage_error("flash");
  EXPECT_NE(e.find("unknown variant 'flash'"), std::string::npos) << e;
  std::vector<std::string> registered;
  for (const VariantInfo& v : variants()) registered.push_back(v.name);
  EXPECT_EQ(names_in_error(e), registered) << e;
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

// Variants whose definition has no causal form: they refuse causal shapes with a usage error.
const std::set<std::string> kNonCausal = {"linformer", "nystrom"};

std::string usage_error_of(const Attention& a, const Shape& s) {
  try {
    a.validate(s);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

// For every registered variant in its default spec: a zero size, and a causal problem with
// Nq != Nk, are usage errors; a square problem long enough for every default pattern (bigbird
// needs 3 random blocks outside its window and globals) is accepted, causal too unless the
// variant has no causal form.
TEST(Registry, ImpossibleShapesAreUsageErrors) {
  for (const VariantInfo& v : variants()) {
    SCOPED_TRACE(v.name);
    auto a = make_attention(v.name);
    EXPECT_THROW(a->validate(Shape{1, 1, 0, 4, 64}), UsageError);
    EXPECT_THROW(a->validate(Shape{1, 1, 4, 0, 64}), UsageError);
    EXPECT_THROW(a->validate(Shape{0, 1, 4, 4, 64}), UsageError);
    EXPECT_THROW(a->validate(Shape{1, 0, 4, 4, 64}), UsageError);
    EXPECT_THROW(a->validate(Shape{1, 1, 4, 4, 0}), UsageError);
    EXPECT_THROW(a->validate(Shape{1, 1, 4, 8, 64, true}), UsageError);
    if (kNonCausal.count(v.name)) {
      const std::string e = usage_error_of(*a, Shape{1, 1, 1024, 1024, 64, true});
      EXPECT_NE(e.find("not defined for causal attention"), std::string::npos) << e;
    } else {
      EXPECT_NO_THROW(a->validate(Shape{1, 1, 1024, 1024, 64, true}));
    }
    EXPECT_NO_THROW(a->validate(Shape{1, 1, 1024, 1024, 64, false}));
  }
  // Cross-attention (Nq != Nk) is a valid problem for the dense variants.
  for (const char* name : {"reference", "full_materialized", "full"})
    EXPECT_NO_THROW(make_attention(name)->validate(Shape{1, 1, 4, 8, 64, false})) << name;
}

}  // namespace
}  // namespace attn
