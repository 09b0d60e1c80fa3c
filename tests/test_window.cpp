// `sliding_window` and `longformer` against the fp64 reference restricted to the same pattern.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "test_util.h"

namespace attn::test {
namespace {

// The patterns, written directly from their definitions (docs/ALGORITHMS.md §Band, §Longformer);
// the causal mask is applied by the reference on top.
struct Pattern {
  int64_t radius = 0, dilation = 1;
  std::set<int64_t> globals;
  bool longformer = false;
  std::string spec() const {
    std::string s = std::string(longformer ? "longformer" : "sliding_window") +
                    ":radius=" + std::to_string(radius) + ",dilation=" + std::to_string(dilation);
    if (longformer && !globals.empty()) {
      std::string idx;
      for (int64_t g : globals) idx += std::to_string(g) + ";";
      idx.pop_back();
      s += ",global_idx=" + idx;
    }
    return s;
  }
  bool in_band(int64_t i, int64_t j) const {
    const int64_t d = i > j ? i - j : j - i;
    return d % dilation == 0 && d / dilation <= radius;
  }
  bool visible(int64_t i, int64_t j) const {
    if (!longformer) return in_band(i, j);
    return globals.count(i) || globals.count(j) || in_band(i, j);
  }
  ElementMask mask() const {
    return [p = *this](int64_t, int64_t, int64_t i, int64_t j) { return p.visible(i, j); };
  }
  int64_t count_pairs(int64_t n, bool causal) const {
    int64_t c = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= (causal ? i : n - 1); ++j) c += visible(i, j);
    return c;
  }
};

// Radii 0, 1, odd, beyond n; dilations 1, 2, 3 and beyond n; lengths around the 64-row block.
Pattern random_pattern(std::mt19937& rng, int64_t n, bool longformer) {
  Pattern p;
  p.longformer = longformer;
  const int64_t radii[] = {0, 1, 2 * int64_t(rng() % 40) + 1, int64_t(rng() % 100), n + 3};
  const int64_t dilations[] = {1, 1, 2, 3, 1 + int64_t(rng() % 7), n + 1};
  p.radius = radii[rng() % 5];
  p.dilation = dilations[rng() % 6];
  if (longformer) {
    const int64_t g = rng() % std::min<int64_t>(n + 1, 6);
    while (int64_t(p.globals.size()) < g) p.globals.insert(rng() % n);
  }
  return p;
}

void check_random_patterns(bool longformer) {
  std::mt19937 rng(longformer ? 11 : 5);
  const int64_t lengths[] = {1, 7, 63, 64, 65, 130, 200, 257, 300};
  const int64_t dims[] = {16, 32, 64};
  uint64_t seed = 1;
  for (int c = 0; c < 36; ++c) {
    const int64_t n = lengths[rng() % 9];
    Shape s{1 + int64_t(rng() % 2), 1 + int64_t(rng() % 3), n, n, dims[rng() % 3], bool(rng() % 2)};
    const Pattern p = random_pattern(rng, n, longformer);
    auto in = random_inputs(s, seed++);
    Tensor out = run_variant(p.spec(), s, in);
    const ElementMask m = p.mask();
    EXPECT_LT(relative_error(out, reference_attention(s, in.q, in.k, in.v, &m)), 1e-5)
        << p.spec() << " " << s.str();
  }
}

TEST(SlidingWindow, MatchesMaskedReferenceOnRandomPatterns) {
  check_random_patterns(false);
}
TEST(Longformer, MatchesMaskedReferenceOnRandomPatterns) {
  check_random_patterns(true);
}

TEST(Longformer, FirstGGlobalsMatchMaskedReference) {
  for (bool causal : {false, true}) {
    Shape s{1, 2, 290, 290, 32, causal};
    auto in = random_inputs(s, 21);
    Pattern p{17, 1, {}, true};
    for (int64_t g = 0; g < 70; ++g) p.globals.insert(g);  // more than one 64-row chunk
    const ElementMask m = p.mask();
    Tensor out = run_variant("longformer:radius=17,global=70", s, in);
    EXPECT_LT(relative_error(out, reference_attention(s, in.q, in.k, in.v, &m)), 1e-5);
  }
}

TEST(Window, RadiusCoveringTheSequenceIsDense) {
  for (bool causal : {false, true})
    for (int64_t n : {1, 100, 129}) {
      Shape s{1, 2, n, n, 32, causal};
      auto in = random_inputs(s, n);
      const auto dense = reference_attention(s, in.q, in.k, in.v);
      for (const std::string spec : {"sliding_window", "longformer:global=1"}) {
        Tensor out = run_variant(
            spec + (spec == "sliding_window" ? ":" : ",") + "radius=" + std::to_string(n - 1), s,
            in);
        EXPECT_LT(relative_error(out, dense), 1e-5) << spec << " n=" << n;
      }
      Tensor huge = run_variant("sliding_window:radius=9000000000000000000", s, in);
      EXPECT_LT(relative_error(huge, dense), 1e-5) << "huge radius, n=" << n;
    }
}

TEST(Longformer, EveryTokenGlobalIsDense) {
  for (bool causal : {false, true}) {
    Shape s{2, 2, 150, 150, 64, causal};
    auto in = random_inputs(s, 4);
    Tensor out = run_variant("longformer:radius=3,dilation=2,global=150", s, in);
    EXPECT_LT(relative_error(out, reference_attention(s, in.q, in.k, in.v)), 1e-5);
  }
}

TEST(Window, RadiusZeroReturnsEachRowsValue) {
  Shape s{1, 2, 133, 133, 16, false};
  auto in = random_inputs(s, 8);
  for (const char* spec :
       {"sliding_window:radius=0", "sliding_window:radius=0,dilation=5", "longformer:radius=0",
        // A dilation beyond n leaves every row alone in its residue class.
        "sliding_window:radius=5,dilation=9000000000000000000"}) {
    for (bool causal : {false, true}) {  // causal radius 0 = a window of W = 1 token
      s.causal = causal;
      Tensor out = run_variant(spec, s, in);
      for (int64_t e = 0; e < out.size(); ++e)
        ASSERT_FLOAT_EQ(out.data()[e], in.v.data()[e]) << spec << " causal=" << causal;
    }
  }
}

TEST(Window, HugeLogitsStayFiniteAndExact) {
  Shape s{1, 1, 200, 200, 32, false};
  auto in = random_inputs(s, 3);
  for (int64_t i = 0; i < in.q.size(); ++i) in.q.data()[i] *= 100.0f, in.k.data()[i] *= 100.0f;
  const Pattern p{20, 2, {5, 150}, true};
  const ElementMask m = p.mask();
  for (bool causal : {false, true}) {
    s.causal = causal;
    Tensor out = run_variant(p.spec(), s, in);
    EXPECT_TRUE(all_finite(out));
    EXPECT_LT(relative_error(out, reference_attention(s, in.q, in.k, in.v, &m)), 1e-5);
  }
}

// flops() by its closed form against a count of the pattern, and visited_keys() against the
// pattern's rows.
TEST(Window, FlopsAndVisitedKeysMatchBruteForce) {
  std::mt19937 rng(3);
  for (int c = 0; c < 300; ++c) {
    const int64_t n = 1 + rng() % 150;
    const bool causal = rng() % 2, longformer = rng() % 2;
    Pattern p = random_pattern(rng, n, longformer);
    std::string spec = p.spec();
    if (longformer && rng() % 3 == 0) {  // the first-g form
      const int64_t g = rng() % (n + 1);
      p.globals.clear();
      for (int64_t j = 0; j < g; ++j) p.globals.insert(j);
      spec = "longformer:radius=" + std::to_string(p.radius) +
             ",dilation=" + std::to_string(p.dilation) + ",global=" + std::to_string(g);
    }
    const Shape s{2, 3, n, n, 16, causal};
    auto a = make_attention(spec);
    a->validate(s);
    const double pairs = double(p.count_pairs(n, causal));
    ASSERT_EQ(a->flops(s), 4.0 * s.dim * pairs * s.heads_total()) << spec << " " << s.str();
    VisitedKeys keys;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(a->visited_keys(s, 0, 0, i, keys));
      ASSERT_EQ(keys.size(), 1u);
      std::vector<int64_t> expect;
      for (int64_t j = 0; j <= (causal ? i : n - 1); ++j)
        if (p.visible(i, j)) expect.push_back(j);
      ASSERT_EQ(keys[0], expect) << spec << " " << s.str() << " row " << i;
    }
  }
}

TEST(Window, ClosedFormsOfSection7) {
  // docs/ALGORITHMS.md §Band: symmetric window n(2w+1) − w(w+1); causal window of W keys
  // nW − W(W−1)/2.
  const Shape s{1, 1, 16384, 16384, 64, false};
  auto sw = make_attention("sliding_window:radius=256");
  EXPECT_EQ(sw->flops(s), 4.0 * 64 * (16384.0 * 513 - 256.0 * 257));
  Shape c = s;
  c.causal = true;
  EXPECT_EQ(sw->flops(c), 4.0 * 64 * (16384.0 * 257 - 257.0 * 256 / 2));
}

TEST(Window, BitIdenticalForOneAndTwoThreads) {
  Shape s{1, 3, 333, 333, 64, true};
  auto in = random_inputs(s, 5);
  for (const char* spec : {"sliding_window:radius=40", "sliding_window:radius=9,dilation=3",
                           "longformer:radius=20,dilation=2,global_idx=3;100;250"}) {
    for (bool causal : {false, true}) {
      s.causal = causal;
      Tensor one = with_threads(1, [&] { return run_variant(spec, s, in); });
      Tensor two = with_threads(2, [&] { return run_variant(spec, s, in); });
      EXPECT_TRUE(bit_identical(one, two)) << spec;
    }
  }
}

TEST(Window, ListedWithTheirConventions) {
  const std::string sw = find_variant("sliding_window").doc, lf = find_variant("longformer").doc;
  EXPECT_NE(sw.find("attention_window = 2*radius"), std::string::npos) << sw;
  EXPECT_NE(sw.find("radius = W - 1"), std::string::npos) << sw;
  EXPECT_NE(lf.find("separate global projections"), std::string::npos) << lf;
  EXPECT_EQ(make_attention("sliding_window")->params().at("radius"), "256");
  EXPECT_EQ(make_attention("longformer:global_idx=9;2")->params().at("global_idx"), "2;9");
}

TEST(Window, BadParametersAreUsageErrors) {
  const Shape s{1, 1, 100, 100, 16, false};
  const std::pair<const char*, const char*> cases[] = {
      {"sliding_window:radius=-1", "out of range"},
      {"sliding_window:dilation=0", "out of range"},
      {"longformer:radius=-3", "out of range"},
      {"longformer:dilation=0", "out of range"},
      {"longformer:global_idx=3;100", "out of range"},
      {"longformer:global_idx=3;7;3", "twice"},
      {"longformer:global_idx=3;x", "non-negative integer"},
      {"longformer:global_idx=-2", "non-negative integer"},
      {"longformer:global=2,global_idx=5", "not both"},
      {"longformer:global=101", "exceeds"},
  };
  for (auto [spec, what] : cases) {
    const std::string e = usage_error(spec, s);
    EXPECT_NE(e.find(what), std::string::npos) << spec << ": '" << e << "'";
  }
  EXPECT_EQ(usage_error("longformer:global_idx=0;99", s), "");
  for (const char* name : {"sliding_window", "longformer"})
    EXPECT_NE(usage_error(name, Shape{1, 1, 100, 90, 16, false}).find("Nq must equal Nk"),
              std::string::npos);
}

}  // namespace
}  // namespace attn::test
