// `full` and `full_materialized` against the fp64 reference.
#include <gtest/gtest.h>

#include <random>

#include "test_util.h"

namespace attn::test {
namespace {

struct Case {
  int64_t b, h, nq, nk, d;
  bool causal;
};

std::vector<Case> randomized_cases() {
  std::vector<Case> cases = {
      {1, 1, 1, 1, 64, false},       {1, 1, 1, 1, 16, true},       {1, 3, 1, 77, 32, false},
      {2, 3, 65, 65, 64, true},      {1, 2, 130, 129, 128, false}, {1, 5, 200, 33, 16, false},
      {2, 4, 257, 257, 32, true},    {1, 1, 64, 128, 64, false},   {1, 2, 300, 300, 48, true},
      {1, 1, 1000, 1000, 64, false}, {1, 1, 129, 129, 20, true},
  };
  std::mt19937 rng(7);
  const int64_t dims[] = {16, 32, 64, 128};
  for (int i = 0; i < 12; ++i) {
    bool causal = rng() % 2;
    int64_t nq = 1 + rng() % 400, nk = causal ? nq : 1 + rng() % 400;
    cases.push_back(
        {1 + int64_t(rng() % 2), 1 + int64_t(rng() % 5), nq, nk, dims[rng() % 4], causal});
  }
  return cases;
}

class DenseVsReference : public ::testing::TestWithParam<std::string> {};

TEST_P(DenseVsReference, RandomizedShapesMatchFp64) {
  uint64_t seed = 1;
  for (const Case& c : randomized_cases()) {
    Shape s{c.b, c.h, c.nq, c.nk, c.d, c.causal};
    auto in = random_inputs(s, seed++);
    Tensor out = run_variant(GetParam(), s, in);
    EXPECT_LT(relative_error(out, reference_attention(s, in.q, in.k, in.v)), 1e-5) << s.str();
  }
}

TEST_P(DenseVsReference, HugeLogitsStayFiniteAndExact) {
  Shape s{1, 2, 150, 150, 32, false};
  auto in = random_inputs(s, 3);
  // Logits of magnitude ~1e4: exp overflows unless the max is subtracted.
  for (int64_t i = 0; i < in.q.size(); ++i) in.q.data()[i] *= 100.0f, in.k.data()[i] *= 100.0f;
  for (bool causal : {false, true}) {
    s.causal = causal;
    Tensor out = run_variant(GetParam(), s, in);
    EXPECT_TRUE(all_finite(out));
    EXPECT_LT(relative_error(out, reference_attention(s, in.q, in.k, in.v)), 1e-5);
  }
}

TEST_P(DenseVsReference, BitIdenticalForOneAndTwoThreads) {
  Shape s{1, 3, 333, 333, 64, true};
  auto in = random_inputs(s, 5);
  Tensor one = with_threads(1, [&] { return run_variant(GetParam(), s, in); });
  Tensor two = with_threads(2, [&] { return run_variant(GetParam(), s, in); });
  EXPECT_TRUE(bit_identical(one, two));
}

TEST_P(DenseVsReference, CausalRowZeroIsFirstValue) {
  Shape s{1, 1, 70, 70, 16, true};
  auto in = random_inputs(s, 9);
  Tensor out = run_variant(GetParam(), s, in);
  for (int64_t d = 0; d < s.dim; ++d) EXPECT_FLOAT_EQ(out.data()[d], in.v.data()[d]);
}

INSTANTIATE_TEST_SUITE_P(Variants, DenseVsReference,
                         ::testing::Values("full", "full_materialized"));

TEST(Reference, MaskedRowsAreZeroAndMaskRestrictsKeys) {
  Shape s{1, 1, 4, 4, 8, false};
  auto in = random_inputs(s, 2);
  ElementMask only_first = [](int64_t, int64_t, int64_t i, int64_t j) { return i > 0 && j == 0; };
  auto out = reference_attention(s, in.q, in.k, in.v, &only_first);
  for (int d = 0; d < 8; ++d) {
    EXPECT_EQ(out[d], 0.0);                         // row 0 sees nothing
    EXPECT_NEAR(out[8 + d], in.v.data()[d], 1e-7);  // row 1 sees only key 0
  }
}

}  // namespace
}  // namespace attn::test
