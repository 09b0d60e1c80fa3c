// lsh causal_mode=strict (issue 18): outputs never depend on later positions, and match an
// fp64 brute force of the strict definition; Reformer mode (the default) is unchanged.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <random>

#include "attention/npy.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;

Tensor forward(const std::string& spec, const Shape& s, const attnbench::Inputs& in) {
  return run_variant(spec, s, in);
}

// Replaces rows >= from of q, k and v of every head with other random values.
attnbench::Inputs change_rows_from(const attnbench::Inputs& in, int64_t from, uint32_t seed) {
  const Tensor& q = in.q;
  attnbench::Inputs out{Tensor(q.batch(), q.heads(), q.seq(), q.dim()),
                        Tensor(q.batch(), q.heads(), q.seq(), q.dim()),
                        Tensor(q.batch(), q.heads(), q.seq(), q.dim())};
  std::copy_n(in.q.data(), q.size(), out.q.data());
  std::copy_n(in.k.data(), q.size(), out.k.data());
  std::copy_n(in.v.data(), q.size(), out.v.data());
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  for (Tensor* t : {&out.q, &out.k, &out.v})
    for (int64_t b = 0; b < t->batch(); ++b)
      for (int64_t h = 0; h < t->heads(); ++h)
        for (int64_t e = from * t->dim(); e < t->seq() * t->dim(); ++e) t->head(b, h)[e] = g(rng);
  return out;
}

// Rows [0, rows) of every head equal bit for bit.
int64_t rows_differing_before(const Tensor& a, const Tensor& b, int64_t rows) {
  int64_t diff = 0;
  for (int64_t bb = 0; bb < a.batch(); ++bb)
    for (int64_t h = 0; h < a.heads(); ++h)
      for (int64_t i = 0; i < rows; ++i)
        diff += !std::equal(a.head(bb, h) + i * a.dim(), a.head(bb, h) + (i + 1) * a.dim(),
                            b.head(bb, h) + i * b.dim());
  return diff;
}

const char* kStrictShared = "lsh:buckets=4,rounds=3,chunk=8,causal_mode=strict";
const char* kStrictSeparate = "lsh:buckets=4,rounds=3,chunk=8,shared_qk=false,causal_mode=strict";

TEST(LshStrict, EarlierRowsNeverDependOnLaterOnes) {
  const Shape s{1, 2, 96, 96, 16, true};
  const auto in = random_inputs(s, 3);
  const int64_t from = 70;
  const auto changed = change_rows_from(in, from, 99);
  for (const char* spec : {kStrictShared, kStrictSeparate}) {
    const Tensor a = forward(spec, s, in), b = forward(spec, s, changed);
    EXPECT_TRUE(all_finite(a));
    EXPECT_EQ(rows_differing_before(a, b, from), 0) << spec;
    EXPECT_GT(rows_differing_before(a, b, s.nq), 0) << spec << ": later rows must change";
  }
  // Reformer mode: the same change reaches earlier rows (the documented behaviour).
  const std::string reformer = "lsh:buckets=4,rounds=3,chunk=8";
  EXPECT_GT(rows_differing_before(forward(reformer, s, in), forward(reformer, s, changed), from),
            0);
}

// fp64 brute force of the strict definition, independent of attention/lsh.cpp: per round the
// fp64 bucket (argmax over [xR, -xR]) of every position, then for query i the at most c latest
// j <= i of its bucket; softmax per round, rounds mixed by softmax over their lse.
std::vector<double> strict_brute_force(const Shape& s, int64_t buckets, int64_t rounds, int64_t c,
                                       bool shared, const std::vector<float>& rot,
                                       const attnbench::Inputs& in, bool& ambiguous) {
  const int64_t n = s.nq, D = s.dim, W = buckets / 2;
  std::vector<double> out(size_t(s.batch * s.heads * n * D), 0.0);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const float* qh = in.q.head(b, h);
      const float* kh = shared ? qh : in.k.head(b, h);
      const float* vh = in.v.head(b, h);
      auto bucket = [&](const float* x, int64_t r) {
        const float* rt = rot.data() + (h * rounds + r) * D * W;
        std::vector<double> cand;
        for (int64_t t = 0; t < W; ++t) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += double(x[d]) * rt[d * W + t];
          cand.push_back(dot);
        }
        for (int64_t t = 0; t < W; ++t) cand.push_back(-cand[size_t(t)]);
        std::vector<double> sorted = cand;
        std::sort(sorted.rbegin(), sorted.rend());
        if (sorted[0] - sorted[1] < 1e-4 * (1 + std::abs(sorted[0]))) ambiguous = true;
        return std::max_element(cand.begin(), cand.end()) - cand.begin();
      };
      for (int64_t i = 0; i < n; ++i) {
        std::vector<double> lse, o;
        for (int64_t r = 0; r < rounds; ++r) {
          const auto bq = bucket(qh + i * D, r);
          std::vector<int64_t> keys;
          for (int64_t j = i; j >= 0 && int64_t(keys.size()) < c; --j)
            if (bucket(kh + j * D, r) == bq) keys.push_back(j);
          if (keys.empty()) continue;
          std::vector<double> z;
          for (int64_t j : keys) {
            double dot = 0, norm = 0;
            for (int64_t d = 0; d < D; ++d)
              dot += double(qh[i * D + d]) * kh[j * D + d],
                  norm += double(kh[j * D + d]) * kh[j * D + d];
            double zi = s.softmax_scale() * (shared ? dot / std::sqrt(norm) : dot);
            if (shared && j == i) zi -= 1e5;
            z.push_back(zi);
          }
          const double m = *std::max_element(z.begin(), z.end());
          double sum = 0;
          for (double zi : z) sum += std::exp(zi - m);
          lse.push_back(m + std::log(sum));
          for (int64_t d = 0; d < D; ++d) {
            double acc = 0;
            for (size_t e = 0; e < keys.size(); ++e)
              acc += std::exp(z[e] - lse.back()) * vh[keys[e] * D + d];
            o.push_back(acc);
          }
        }
        if (lse.empty()) continue;
        const double m = *std::max_element(lse.begin(), lse.end());
        double total = 0;
        for (double l : lse) total += std::exp(l - m);
        double* dst = out.data() + ((b * s.heads + h) * n + i) * D;
        for (size_t r = 0; r < lse.size(); ++r)
          for (int64_t d = 0; d < D; ++d) dst[d] += std::exp(lse[r] - m) / total * o[r * D + d];
      }
    }
  return out;
}

TEST(LshStrict, MatchesFp64BruteForceOfTheStrictDefinition) {
  const fs::path dir = fs::temp_directory_path() / ("attn_lsh_strict_" + std::to_string(getpid()));
  fs::create_directories(dir);
  int checked = 0;
  for (bool shared : {true, false})
    for (uint32_t seed : {1u, 2u, 3u, 4u, 5u, 6u}) {
      const Shape s{2, 2, 53, 53, 8, true};
      const int64_t buckets = 4, rounds = 3, c = 6;
      std::mt19937 rng(seed);
      std::normal_distribution<float> g;
      std::vector<float> rot(size_t(s.heads * rounds * s.dim * (buckets / 2)));
      for (float& x : rot) x = g(rng);
      write_npy((dir / "rotations.npy").string(), {s.heads, rounds, s.dim, buckets / 2},
                rot.data());
      const auto in = random_inputs(s, seed + 10);
      bool ambiguous = false;
      const auto ref = strict_brute_force(s, buckets, rounds, c, shared, rot, in, ambiguous);
      if (ambiguous) continue;  // an fp32 hash may legitimately pick the other bucket
      auto a = make_attention("lsh:buckets=4,rounds=3,chunk=6,causal_mode=strict,shared_qk=" +
                              std::string(shared ? "true" : "false"));
      a->validate(s);
      a->load_random(dir.string(), s);
      Tensor out(s.batch, s.heads, s.nq, s.dim);
      a->forward(s, in.q, in.k, in.v, out);
      double worst = 0;
      for (size_t e = 0; e < ref.size(); ++e)
        worst = std::max(worst, std::abs(double(out.data()[e]) - ref[e]));
      EXPECT_LT(worst, 2e-5) << "shared=" << shared << " seed=" << seed;
      ++checked;
    }
  fs::remove_all(dir);
  EXPECT_GE(checked, 3);
}

TEST(LshStrict, VisitedKeysAreTheLatestSameBucketKeysAtOrBefore) {
  const Shape s{1, 1, 64, 64, 16, true};
  const auto in = random_inputs(s, 5);
  auto a = make_attention("lsh:buckets=4,rounds=2,chunk=64,causal_mode=strict");
  a->validate(s);
  Tensor out(1, 1, 64, 16);
  a->forward(s, in.q, in.k, in.v, out);
  std::vector<VisitedKeys> all(64);
  for (int64_t i = 0; i < 64; ++i) ASSERT_TRUE(a->visited_keys(s, 0, 0, i, all[size_t(i)]));
  for (int64_t i = 0; i < 64; ++i)
    for (size_t r = 0; r < 2; ++r) {
      const auto& keys = all[size_t(i)][r];
      ASSERT_FALSE(keys.empty());
      EXPECT_EQ(keys.back(), i);  // shared QK: its own bucket always holds itself
      for (int64_t j : keys) {
        EXPECT_LE(j, i);
        // Same bucket is an equivalence: j's keys are i's keys up to j (c covers n here).
        std::vector<int64_t> prefix;
        for (int64_t x : keys)
          if (x <= j) prefix.push_back(x);
        EXPECT_EQ(all[size_t(j)][r], prefix) << "i=" << i << " j=" << j;
      }
    }
  // A short chunk bounds the window to the c latest.
  auto b = make_attention("lsh:buckets=2,rounds=1,chunk=3,causal_mode=strict");
  b->validate(s);
  b->forward(s, in.q, in.k, in.v, out);
  for (int64_t i = 0; i < 64; ++i) {
    VisitedKeys v;
    ASSERT_TRUE(b->visited_keys(s, 0, 0, i, v));
    EXPECT_LE(v[0].size(), 3u);
  }
}

TEST(LshStrict, BitIdenticalForOneAndTwoThreadsAndDefaultModeUnchanged) {
  const Shape s{2, 3, 80, 80, 16, true};
  const auto in = random_inputs(s, 8);
  for (const char* spec : {kStrictShared, kStrictSeparate}) {
    const Tensor one = with_threads(1, [&] { return forward(spec, s, in); });
    const Tensor two = with_threads(2, [&] { return forward(spec, s, in); });
    EXPECT_TRUE(bit_identical(one, two)) << spec;
  }
  for (bool causal : {false, true}) {
    const Shape t{1, 2, 80, 80, 16, causal};
    const auto x = random_inputs(t, 9);
    EXPECT_TRUE(bit_identical(forward("lsh:buckets=4,chunk=8", t, x),
                              forward("lsh:buckets=4,chunk=8,causal_mode=reformer", t, x)));
  }
}

TEST(LshStrict, NeedsACausalProblemAndNoDedup) {
  const Shape s{1, 1, 32, 32, 8, false};
  EXPECT_THROW(make_attention(kStrictShared)->validate(s), UsageError);
  Shape c = s;
  c.causal = true;
  EXPECT_THROW(make_attention(std::string(kStrictShared) + ",dedup=true")->validate(c), UsageError);
  EXPECT_THROW(make_attention("lsh:causal_mode=future"), UsageError);
  EXPECT_NO_THROW(make_attention(kStrictShared)->validate(c));
}

}  // namespace
}  // namespace attn::test
