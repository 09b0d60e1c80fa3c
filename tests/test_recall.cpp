// The `recall` input distribution and the recall metrics (docs/ALGORITHMS.md §Recall inputs,
// §Recall metrics): the generator plants what its probe says, β sets the logit margin, exact
// attention recalls every pair, a sliding window recalls exactly the pairs it can reach, and
// everything is thread-count independent. Also the err_vs_mean error metric.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "attention/npy.h"
#include "harness/accuracy.h"
#include "test_util.h"

namespace attn::test {
namespace {

using attnbench::measure_recall;
using attnbench::recall_probe;
using attnbench::RecallProbe;
using attnbench::RecallScore;

double logit(const Shape& s, const attnbench::Inputs& in, int64_t bh, int64_t i, int64_t j) {
  const float* q = in.q.head(bh / s.heads, bh % s.heads) + i * s.dim;
  const float* k = in.k.head(bh / s.heads, bh % s.heads) + j * s.dim;
  double dot = 0;
  for (int64_t d = 0; d < s.dim; ++d) dot += double(q[d]) * k[d];
  return dot * s.softmax_scale();
}

RecallScore score(const std::string& spec, const Shape& s, const std::string& dist,
                  uint64_t seed = 1) {
  const auto in = attnbench::make_inputs(s, dist, seed);
  auto a = make_attention(spec);
  a->validate(s);
  Tensor out(s.batch, s.heads, s.nq, s.dim);
  a->forward(s, in.q, in.k, in.v, out);
  return measure_recall(*a, s, in.q, in.k, out, *recall_probe(s, dist, seed));
}

TEST(Recall, PlantedKeySitsAtTheStatedGapWithLogitBeta) {
  const Shape s{1, 2, 1024, 1024, 64, true};
  for (const std::string dist : {"recall", "recall:gap=100,pairs=16,beta=6", "recall:gap=depth"}) {
    SCOPED_TRACE(dist);
    const auto in = attnbench::make_inputs(s, dist, 5);
    const RecallProbe probe = *recall_probe(s, dist, 5);
    ASSERT_EQ(int64_t(probe.queries.size()), s.heads_total());
    for (int64_t bh = 0; bh < s.heads_total(); ++bh) {
      ASSERT_EQ(int64_t(probe.queries[bh].size()), probe.pairs);
      for (const auto& rq : probe.queries[bh]) {
        EXPECT_GT(rq.row, rq.key);
        if (dist.find("gap=100") != std::string::npos) {
          EXPECT_EQ(rq.row - rq.key, 100);
        }
        if (dist.find("depth") != std::string::npos) {
          EXPECT_GE(rq.row, s.nq - probe.pairs);
        }
        EXPECT_NEAR(logit(s, in, bh, rq.row, rq.key), probe.beta, 1e-4 * probe.beta);
        // The planted token's own query is its key (q = k for every non-query token).
        const float* q = in.q.head(0, bh) + rq.key * s.dim;
        const float* k = in.k.head(0, bh) + rq.key * s.dim;
        EXPECT_TRUE(std::equal(q, q + s.dim, k));
        // Its value is the codebook vector of its pair.
        const float* v = in.v.head(0, bh) + rq.key * s.dim;
        const float* c = probe.codebook.data() + (bh * probe.pairs + rq.pair) * s.dim;
        EXPECT_TRUE(std::equal(v, v + s.dim, c));
      }
    }
  }
}

// Every other logit of a query row is a distractor's, ~ N(0, noise²), or another planted key's
// (0: orthonormal keys when P <= D), so β is the margin over the mean and β/noise in sd units.
TEST(Recall, BetaSetsTheMarginOverDistractors) {
  const Shape s{1, 2, 2048, 2048, 64, false};
  for (double noise : {1.0, 0.5}) {
    const std::string dist = "recall:noise=" + std::to_string(noise);
    const auto in = attnbench::make_inputs(s, dist, 2);
    const RecallProbe probe = *recall_probe(s, dist, 2);
    double sum = 0, sum2 = 0, count = 0;
    for (int64_t bh = 0; bh < s.heads_total(); ++bh)
      for (const auto& rq : probe.queries[bh])
        for (int64_t j = 0; j < s.nk; ++j) {
          if (j == rq.key) continue;
          const double z = logit(s, in, bh, rq.row, j);
          sum += z, sum2 += z * z, ++count;
        }
    const double mean = sum / count, sd = std::sqrt(sum2 / count - mean * mean);
    EXPECT_NEAR(mean, 0.0, 0.02) << dist;
    EXPECT_NEAR(sd, noise, 0.05 * noise) << dist;
    for (int64_t bh = 0; bh < s.heads_total(); ++bh)
      for (const auto& a : probe.queries[bh])
        for (const auto& b : probe.queries[bh])
          if (a.pair != b.pair) {
            EXPECT_NEAR(logit(s, in, bh, a.row, b.key), 0.0, 1e-4);
          }
  }
}

TEST(Recall, ExactAttentionRecallsEveryPairAtTheDefaultBeta) {
  for (bool causal : {false, true})
    for (const std::string dist : {"recall", "recall:gap=depth"}) {
      const Shape s{1, 4, 4096, 4096, 64, causal};
      const RecallScore r = score("full", s, dist);
      EXPECT_GE(r.recall, 0.99) << dist << " causal " << causal;
      EXPECT_GT(r.cosine, 0.9);
      EXPECT_GT(r.mass_exact, 0.5);
      EXPECT_FALSE(r.mass_variant.has_value());  // full reports no pattern
    }
}

// A causal window of radius r sees keys i-r..i: pairs with gap <= r are recalled, the others
// fall to chance (1/P), which is a test of the metric as much as of the window.
TEST(Recall, SlidingWindowRecallsExactlyThePairsItReaches) {
  const Shape s{1, 4, 4096, 4096, 64, true};
  const std::string window = "sliding_window:radius=64";
  const RecallScore near = score(window, s, "recall:gap=48");
  const RecallScore far = score(window, s, "recall:gap=300");
  EXPECT_GE(near.recall, 0.99);
  EXPECT_LE(far.recall, 0.15);  // chance is 1/32
  ASSERT_TRUE(near.mass_variant && far.mass_variant);
  EXPECT_GE(*near.mass_variant, near.mass_exact);  // renormalized over fewer keys
  EXPECT_EQ(*far.mass_variant, 0.0);
  // Power-law gaps, binned: bins inside the window recall, bins beyond do not.
  const RecallScore mixed = score(window, s, "recall");
  int inside = 0, beyond = 0;
  for (const auto& b : mixed.by_gap) {
    if (b.hi <= 65) {
      EXPECT_GE(b.recall, 0.95) << b.lo << ".." << b.hi;
      ++inside;
    }
    if (b.lo > 64 && b.rows >= 8) {
      EXPECT_LE(b.recall, 0.3) << b.lo << ".." << b.hi;
      ++beyond;
    }
  }
  EXPECT_GT(inside, 2);
  EXPECT_GT(beyond, 2);
}

TEST(Recall, InputsAndScoresAreThreadCountIndependent) {
  const Shape s{2, 2, 1000, 1000, 32, true};
  for (const std::string dist : {"recall:pairs=16", "recall:gap=depth,pairs=8"}) {
    auto one = with_threads(1, [&] { return attnbench::make_inputs(s, dist, 9); });
    auto two = with_threads(2, [&] { return attnbench::make_inputs(s, dist, 9); });
    EXPECT_TRUE(bit_identical(one.q, two.q) && bit_identical(one.k, two.k) &&
                bit_identical(one.v, two.v))
        << dist;
    const RecallScore a =
        with_threads(1, [&] { return score("sliding_window:radius=100", s, dist, 9); });
    const RecallScore b =
        with_threads(2, [&] { return score("sliding_window:radius=100", s, dist, 9); });
    EXPECT_EQ(a.recall, b.recall);
    EXPECT_EQ(a.cosine, b.cosine);
    EXPECT_EQ(a.mass_exact, b.mass_exact);
    EXPECT_EQ(*a.mass_variant, *b.mass_variant);
  }
}

TEST(Recall, BadParametersAreUsageErrors) {
  const Shape s{1, 1, 256, 256, 64, true};
  for (const char* dist : {"recall:pairs=0", "recall:pairs=2.5", "recall:pairs=100",
                           "recall:gap=abc", "recall:gap=256", "recall:gap=-3", "recall:beta=200",
                           "recall:power=2", "recall:bogus=1", "recall:noise=-1"}) {
    EXPECT_THROW(attnbench::make_inputs(s, dist, 0), UsageError) << dist;
    EXPECT_THROW(recall_probe(s, dist, 0), UsageError) << dist;
  }
  EXPECT_THROW(attnbench::make_inputs(Shape{1, 1, 256, 300, 64, false}, "recall", 0), UsageError);
  EXPECT_FALSE(recall_probe(s, "gaussian", 0).has_value());
}

// err_vs_mean (docs/ALGORITHMS.md §Accuracy metrics): outputting the mean of the visible values
// scores exactly 1, the exact output 0, and outputting 0 scores ‖R‖ / ‖R − mean‖ (large on
// near-uniform attention, where rel_err calls the mean "perfect" and 0 "wrong by 100 %").
TEST(Recall, ErrorVersusMeanIsOneForTheMeanOfVisibleValues) {
  for (bool causal : {false, true}) {
    const Shape s{1, 2, 300, 300, 16, causal};
    const auto in = random_inputs(s, 4);
    const auto ref = attnbench::compute_reference(s, in.q, in.k, in.v);
    Tensor mean(1, 2, 300, 16), exact(1, 2, 300, 16);
    for (size_t e = 0; e < ref.out.size(); ++e)
      mean.data()[e] = float(ref.mean[e]), exact.data()[e] = float(ref.out[e]);
    EXPECT_NEAR(attnbench::measure_accuracy(s, ref, mean).err_vs_mean, 1.0, 1e-5);
    EXPECT_LT(attnbench::measure_accuracy(s, ref, exact).err_vs_mean, 1e-6);
    // The mean row itself: causal row 7 sees v_0..v_7.
    double m = 0;
    for (int64_t j = 0; j <= (causal ? 7 : 299); ++j) m += in.v.head(0, 1)[j * 16 + 3];
    EXPECT_NEAR(ref.mean[(300 + 7) * 16 + 3], m / (causal ? 8 : 300), 1e-12);
  }
}

// `attnbench inputs` writes exactly the generated q, k, v and the answer key, so recall can be
// scored outside attnbench: `apply --variant full` on the files, then each query row's nearest
// codebook vector, is the planted pair for every query (full recalls everything).
TEST(Recall, InputsCommandWritesTheProblemAndItsAnswerKey) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("attn_inputs_" + std::to_string(getpid())))
          .string();
  std::filesystem::remove_all(dir);
  const std::string args =
      "--dist recall:pairs=16 --seq 512 --heads 2 --dim 32 --seed 3 --out " + dir;
  CliResult r = run_cli("inputs " + args);
  ASSERT_EQ(r.code, 0) << r.output;
  const Shape s{1, 2, 512, 512, 32, false};
  const auto in = attnbench::make_inputs(s, "recall:pairs=16", 3);
  const NpyArray q = read_npy(dir + "/q.npy"), k = read_npy(dir + "/k.npy");
  EXPECT_EQ(q.shape, (std::vector<int64_t>{1, 2, 512, 32}));
  EXPECT_TRUE(std::equal(q.data.begin(), q.data.end(), in.q.data()));
  EXPECT_TRUE(std::equal(k.data.begin(), k.data.end(), in.k.data()));
  // A second run refuses to replace the files unasked.
  EXPECT_EQ(run_cli("inputs " + args).code, 2);
  EXPECT_EQ(run_cli("inputs " + args + " --overwrite").code, 0);
  EXPECT_EQ(run_cli("inputs --dist npy:" + dir + " --seq 8 --out " + dir + "/x").code, 2);

  r = run_cli("apply --variant full --q " + dir + "/q.npy --k " + dir + "/k.npy --v " + dir +
              "/v.npy --out " + dir + "/o.npy");
  ASSERT_EQ(r.code, 0) << r.output;
  const NpyArray o = read_npy(dir + "/o.npy"), cb = read_npy(dir + "/recall_codebook.npy");
  ASSERT_EQ(cb.shape, (std::vector<int64_t>{2, 16, 32}));
  const auto key = nlohmann::json::parse(std::ifstream(dir + "/recall.json"));
  ASSERT_EQ(key["queries"].size(), 2u);
  int hits = 0, total = 0;
  for (int64_t h = 0; h < 2; ++h)
    for (const auto& q : key["queries"][h]) {
      const float* out = o.data.data() + (h * 512 + q["row"].get<int64_t>()) * 32;
      int64_t best = -1;
      double best_dot = -1e30;
      for (int64_t p = 0; p < 16; ++p) {
        double dot = 0;
        for (int64_t d = 0; d < 32; ++d) dot += out[d] * cb.data[(h * 16 + p) * 32 + d];
        if (dot > best_dot) best_dot = dot, best = p;
      }
      hits += best == q["pair"].get<int64_t>(), ++total;
    }
  EXPECT_EQ(total, 32);
  EXPECT_EQ(hits, total);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace attn::test
