// Accuracy metrics: attention-mass coverage on hand-computed cases, and the sampled fp64
// reference agreeing with the all-rows one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "harness/accuracy.h"
#include "test_util.h"

namespace attn::test {
namespace {

using attnbench::attention_coverage;

// A pattern variant whose visited keys are fixed per row (several rounds, with duplicates).
class FixedPattern final : public Attention {
 public:
  explicit FixedPattern(std::vector<VisitedKeys> rows) : rows_(std::move(rows)) {}
  std::string name() const override { return "fixed_pattern"; }
  void forward(const Shape&, const Tensor&, const Tensor&, const Tensor&, Tensor&) override {}
  double flops(const Shape&) const override { return 0; }
  double extra_bytes(const Shape&) const override { return 0; }
  bool visited_keys(const Shape&, int64_t, int64_t, int64_t i, VisitedKeys& out) const override {
    out = rows_[i];
    return true;
  }

 private:
  std::vector<VisitedKeys> rows_;
};

// Zero queries: every row's softmax is uniform (1/4 per key), so coverage = |union| / 4.
TEST(Coverage, UniformAttentionCountsTheUnionOfRounds) {
  Shape s{1, 1, 4, 4, 2};
  Tensor q(1, 1, 4, 2), k(1, 1, 4, 2);
  q.fill(0.0f);
  for (int64_t j = 0; j < 4; ++j) k.data()[2 * j] = float(j), k.data()[2 * j + 1] = 1.0f;
  FixedPattern p({{{0, 1}, {1, 2}},  // union {0,1,2}: 3/4 (key 1 counted once)
                  {{1}},             // 1/4
                  {{}},              // nothing visited: 0
                  {{0, 1, 2, 3}}});  // everything: 1
  auto c = attention_coverage(p, s, q, k, {0, 1, 2, 3});
  ASSERT_TRUE(c.has_value());
  EXPECT_NEAR(*c, (0.75 + 0.25 + 0.0 + 1.0) / 4, 1e-12);
  // Only the rows asked for are averaged.
  EXPECT_NEAR(*attention_coverage(p, s, q, k, {1, 3}), (0.25 + 1.0) / 2, 1e-12);
}

// Scale 1, q = (1, 0), k_j = (j, 0): p_j = e^j / (1 + e + e² + e³).
TEST(Coverage, PeakedAttentionByHand) {
  Shape s{1, 1, 2, 4, 2};
  s.scale = 1.0f;
  Tensor q(1, 1, 2, 2), k(1, 1, 4, 2);
  q.fill(0.0f), k.fill(0.0f);
  q.data()[0] = q.data()[2] = 1.0f;
  for (int64_t j = 0; j < 4; ++j) k.data()[2 * j] = float(j);
  const double z = 1 + std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  FixedPattern p({{{3}}, {{0, 1}}});
  const double expect = (std::exp(3.0) / z + (1 + std::exp(1.0)) / z) / 2;
  EXPECT_NEAR(*attention_coverage(p, s, q, k, {0, 1}), expect, 1e-12);
  // Causal: row 0 sees key 0 only, so visiting it covers all of row 0's mass.
  Shape sc{1, 1, 4, 4, 2, true};
  sc.scale = 1.0f;
  Tensor q4(1, 1, 4, 2);
  q4.fill(0.0f);
  FixedPattern pc({{{0}}, {{0}}, {{0}}, {{0}}});
  EXPECT_NEAR(*attention_coverage(pc, sc, q4, k, {0, 1, 2, 3}), (1 + 0.5 + 1.0 / 3 + 0.25) / 4,
              1e-12);
}

TEST(Coverage, DenseVariantsHaveNone) {
  Shape s{1, 2, 16, 16, 8};
  auto in = random_inputs(s, 1);
  for (const char* name : {"reference", "full_materialized", "full"}) {
    auto dense = make_attention(name);
    EXPECT_FALSE(attention_coverage(*dense, s, in.q, in.k, {0, 5}).has_value()) << name;
  }
}

// max |out − ref| over rows `rows` of every head; `ref` is [B, H, N, D] over all rows.
double max_abs_over_rows(const Shape& s, const Tensor& out, const std::vector<double>& ref,
                         const std::vector<int64_t>& rows) {
  double m = 0;
  for (int64_t bh = 0; bh < s.heads_total(); ++bh)
    for (int64_t i : rows)
      for (int64_t d = 0; d < s.dim; ++d) {
        const size_t e = size_t((bh * s.nq + i) * s.dim + d);
        m = std::max(m, std::abs(double(out.data()[e]) - ref[e]));
      }
  return m;
}

// A local-window approximation of dense attention (fp64 with a |i − j| <= 64 mask, stored in
// fp32) has a clear error; the 256-row sampled figures must match the all-rows ones within 10%.
TEST(Accuracy, SampledReferenceAgreesWithAllRows) {
  Shape s{1, 2, 2048, 2048, 32};
  auto in = random_inputs(s, 9);
  ElementMask window = [](int64_t, int64_t, int64_t i, int64_t j) { return std::abs(i - j) <= 64; };
  std::vector<double> approx = reference_attention(s, in.q, in.k, in.v, &window);
  Tensor out(1, 2, 2048, 32);
  for (size_t i = 0; i < approx.size(); ++i) out.data()[i] = float(approx[i]);

  auto all = attnbench::compute_reference(s, in.q, in.k, in.v, 4096, 256, 0);
  auto sampled = attnbench::compute_reference(s, in.q, in.k, in.v, 1024, 256, 0);
  ASSERT_TRUE(all.all_rows);
  ASSERT_FALSE(sampled.all_rows);
  ASSERT_EQ(sampled.rows.size(), 256u);
  auto a = attnbench::measure_accuracy(s, all, out);
  auto b = attnbench::measure_accuracy(s, sampled, out);
  EXPECT_GT(a.rel_fro, 0.05);  // a real approximation error, not rounding
  EXPECT_NEAR(b.rel_fro, a.rel_fro, 0.1 * a.rel_fro);
  EXPECT_NEAR(1 - b.mean_cosine, 1 - a.mean_cosine, 0.1 * (1 - a.mean_cosine));
  // max_abs is the largest |out − dense| over exactly the rows each reference holds, checked
  // against the dense fp64 output computed here over every row.
  const std::vector<double> dense = reference_attention(s, in.q, in.k, in.v);
  std::vector<int64_t> every_row(2048);
  std::iota(every_row.begin(), every_row.end(), 0);
  const double max_all = max_abs_over_rows(s, out, dense, every_row);
  const double max_sampled = max_abs_over_rows(s, out, dense, sampled.rows);
  ASSERT_LT(max_sampled, max_all);  // else the check below could not tell the two apart
  EXPECT_NEAR(a.max_abs, max_all, 1e-9);
  EXPECT_NEAR(b.max_abs, max_sampled, 1e-9);
  // The same seed draws the same rows; another seed other rows.
  EXPECT_EQ(attnbench::compute_reference(s, in.q, in.k, in.v, 1024, 256, 0).rows, sampled.rows);
  EXPECT_NE(attnbench::compute_reference(s, in.q, in.k, in.v, 1024, 256, 1).rows, sampled.rows);
}

}  // namespace
}  // namespace attn::test
