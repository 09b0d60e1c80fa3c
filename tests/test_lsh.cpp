// `lsh` (Reformer LSH attention) against an independent fp64 brute force of the same buckets,
// chunks and rounds, against its dense counterpart, and its properties.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>

#include <unistd.h>

#include "attention/npy.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;

// A fresh empty directory under the system temp dir, removed at scope exit.
struct TempDir {
  explicit TempDir(const std::string& tag) {
    path = fs::temp_directory_path() / ("attn_lsh_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path path;
};

// Keys of the dense counterpart of shared-QK LSH: k̂ = q / ‖q‖.
Tensor unit_rows(const Tensor& q) {
  Tensor k(q.batch(), q.heads(), q.seq(), q.dim());
  for (int64_t r = 0; r < q.size() / q.dim(); ++r) {
    const float* x = q.data() + r * q.dim();
    double ss = 0;
    for (int64_t d = 0; d < q.dim(); ++d) ss += double(x[d]) * x[d];
    for (int64_t d = 0; d < q.dim(); ++d)
      k.data()[r * q.dim() + d] = ss > 0 ? float(x[d] / std::sqrt(ss)) : 0.0f;
  }
  return k;
}

// The self-mask rule: a query sees itself only when it sees nothing else (causal row 0, n = 1).
ElementMask self_mask(const Shape& s) {
  return [s](int64_t, int64_t, int64_t i, int64_t j) {
    return j != i || s.nk == 1 || (s.causal && i == 0);
  };
}

struct LshParams {
  std::vector<int64_t> factors;  // bucket = a1 + b1·a2 + …
  int64_t rounds, chunk, before = 1, after = 0;
  bool shared = true, dedup = false;
  std::string spec() const {
    std::string b;
    for (int64_t f : factors) b += (b.empty() ? "" : "x") + std::to_string(f);
    return "lsh:buckets=" + b + ",rounds=" + std::to_string(rounds) +
           ",chunk=" + std::to_string(chunk) + ",before=" + std::to_string(before) +
           ",after=" + std::to_string(after) + ",shared_qk=" + (shared ? "true" : "false") +
           ",dedup=" + (dedup ? "true" : "false");
  }
  int64_t width() const {
    int64_t w = 0;
    for (int64_t f : factors) w += f / 2;
    return w;
  }
};

// Rotations [H, r, D, width] with N(0,1) entries from the test's own generator.
std::vector<float> test_rotations(const Shape& s, const LshParams& p, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  std::vector<float> r(size_t(s.heads * p.rounds * s.dim * p.width()));
  for (float& x : r) x = g(rng);
  return r;
}

// fp64 brute force of Reformer LSH as docs/ALGORITHMS.md §LSH states it, written independently of
// attention/lsh.cpp: explicit candidate lists per query slot, one softmax per round, rounds
// mixed by softmax over their lse. Sets `ambiguous` when a hash argmax is a near-tie (then
// fp32 hashing may legitimately pick another bucket).
std::vector<double> brute_force(const Shape& s, const LshParams& p, const std::vector<float>& rot,
                                const Tensor& q, const Tensor& k, const Tensor& v,
                                bool& ambiguous) {
  const int64_t n = s.nq, D = s.dim, R = p.rounds, c = p.chunk, W = p.width();
  const int64_t padded = (n + c - 1) / c * c, M = R * padded / c;
  const double scale = s.softmax_scale();
  std::vector<double> out(size_t(s.batch * s.heads * n * D), 0.0);
  ambiguous = false;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const float* qh = q.head(b, h);
      const float* vh = v.head(b, h);
      std::vector<double> kh(size_t(n * D));
      for (int64_t j = 0; j < n; ++j) {
        const float* src = p.shared ? qh + j * D : k.head(b, h) + j * D;
        double norm = 0;
        for (int64_t d = 0; d < D; ++d) norm += double(src[d]) * src[d];
        norm = p.shared ? std::sqrt(norm) : 1.0;
        for (int64_t d = 0; d < D; ++d) kh[j * D + d] = norm > 0 ? src[d] / norm : 0.0;
      }
      // Sorted, padded, concatenated order of one side: position or -1 per slot.
      auto order = [&](const float* x) {
        std::vector<int64_t> all;
        for (int64_t r = 0; r < R; ++r) {
          const float* rt = rot.data() + (h * R + r) * D * W;
          std::vector<int64_t> bucket(static_cast<size_t>(n));
          for (int64_t i = 0; i < n; ++i) {
            int64_t id = 0, radix = 1, col = 0;
            for (int64_t f : p.factors) {
              std::vector<double> cand;
              for (int64_t t = 0; t < f / 2; ++t) {
                double dot = 0;
                for (int64_t d = 0; d < D; ++d) dot += double(x[i * D + d]) * rt[d * W + col + t];
                cand.push_back(dot);
              }
              for (int64_t t = 0; t < f / 2; ++t) cand.push_back(-cand[size_t(t)]);
              const int64_t best = std::max_element(cand.begin(), cand.end()) - cand.begin();
              std::vector<double> sorted = cand;
              std::sort(sorted.rbegin(), sorted.rend());
              if (sorted[0] - sorted[1] < 1e-4 * (1 + std::abs(sorted[0]))) ambiguous = true;
              id += radix * best, radix *= f, col += f / 2;
            }
            bucket[size_t(i)] = id;
          }
          std::vector<int64_t> pos(static_cast<size_t>(n));
          for (int64_t i = 0; i < n; ++i) pos[size_t(i)] = i;
          std::stable_sort(pos.begin(), pos.end(), [&](int64_t a, int64_t z) {
            return bucket[size_t(a)] < bucket[size_t(z)];
          });
          pos.resize(size_t(padded), -1);
          all.insert(all.end(), pos.begin(), pos.end());
        }
        return all;
      };
      const std::vector<int64_t> qs = order(qh);
      const std::vector<int64_t> ks = p.shared ? qs : order(k.head(b, h));
      // Candidates of each query position in each round (keys may repeat).
      std::vector<std::vector<std::vector<int64_t>>> cand{
          static_cast<size_t>(n), std::vector<std::vector<int64_t>>(static_cast<size_t>(R))};
      for (int64_t slot = 0; slot < R * padded; ++slot) {
        const int64_t i = qs[size_t(slot)];
        if (i < 0) continue;
        const int64_t g = slot / c;
        for (int64_t off = -p.before; off <= p.after; ++off) {
          const int64_t gg = ((g + off) % M + M) % M;
          for (int64_t t = gg * c; t < gg * c + c; ++t)
            if (ks[size_t(t)] >= 0) cand[size_t(i)][size_t(slot / padded)].push_back(ks[size_t(t)]);
        }
      }
      for (int64_t i = 0; i < n; ++i) {
        std::map<int64_t, int> meets;
        for (const auto& round : cand[size_t(i)])
          for (int64_t j : round) ++meets[j];
        std::vector<double> lse(static_cast<size_t>(R)), o(size_t(R * D), 0.0);
        for (int64_t r = 0; r < R; ++r) {
          std::vector<double> z;
          std::vector<int64_t> keys;
          for (int64_t j : cand[size_t(i)][size_t(r)]) {
            if (s.causal && j > i) continue;
            double dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += double(qh[i * D + d]) * kh[j * D + d];
            double zi = scale * dot;
            if (p.shared && j == i) zi += -1e5;
            if (p.dedup) zi -= std::log(double(meets[j]));
            z.push_back(zi), keys.push_back(j);
          }
          if (z.empty()) {
            lse[size_t(r)] = -INFINITY;
            continue;
          }
          const double m = *std::max_element(z.begin(), z.end());
          double sum = 0;
          for (double zi : z) sum += std::exp(zi - m);
          lse[size_t(r)] = m + std::log(sum);
          for (size_t e = 0; e < z.size(); ++e)
            for (int64_t d = 0; d < D; ++d)
              o[size_t(r * D + d)] += std::exp(z[e] - lse[size_t(r)]) * vh[keys[e] * D + d];
        }
        const double m = *std::max_element(lse.begin(), lse.end());
        if (!std::isfinite(m)) continue;  // no visible key in any round: output 0
        double total = 0;
        for (double l : lse) total += std::exp(l - m);
        double* dst = out.data() + ((b * s.heads + h) * n + i) * D;
        for (int64_t r = 0; r < R; ++r)
          for (int64_t d = 0; d < D; ++d)
            dst[d] += std::exp(lse[size_t(r)] - m) / total * o[size_t(r * D + d)];
      }
    }
  return out;
}

// Runs `spec` with rotations imported from DIR/rotations.npy.
Tensor run_with_rotations(const std::string& spec, const Shape& s, const attnbench::Inputs& in,
                          const std::vector<float>& rot, int64_t width, int64_t rounds) {
  TempDir dir("rot");
  write_npy((dir.path / "rotations.npy").string(), {s.heads, rounds, s.dim, width}, rot.data());
  auto a = make_attention(spec);
  a->validate(s);
  a->load_random(dir.path.string(), s);
  Tensor out(s.batch, s.heads, s.nq, s.dim);
  a->forward(s, in.q, in.k, in.v, out);
  return out;
}

TEST(Lsh, OneChunkCoveringTheSequenceIsTheDenseCounterpart) {
  for (int64_t n : {1, 37, 100})
    for (bool causal : {false, true})
      for (int64_t rounds : {1, 3})
        for (int64_t extra : {0, 13}) {  // chunk = n, and a padded chunk > n
          Shape s{2, 2, n, n, 32, causal};
          auto in = random_inputs(s, uint64_t(n + rounds));
          const std::string common = "lsh:buckets=2,rounds=" + std::to_string(rounds) +
                                     ",chunk=" + std::to_string(n + extra);
          Tensor shared = run_variant(common, s, in);
          Tensor khat = unit_rows(in.q);
          ElementMask mask = self_mask(s);
          EXPECT_LT(relative_error(shared, reference_attention(s, in.q, khat, in.v, &mask)), 1e-5)
              << s.str() << " rounds=" << rounds;
          Tensor separate = run_variant(common + ",shared_qk=false", s, in);
          EXPECT_LT(relative_error(separate, reference_attention(s, in.q, in.k, in.v)), 1e-5)
              << s.str() << " rounds=" << rounds;
        }
}

TEST(Lsh, MatchesFp64BruteForceOfTheSameBucketsChunksAndRounds) {
  struct Case {
    int64_t b, h, n, d;
    LshParams p;
  };
  const std::vector<Case> cases = {
      {1, 2, 50, 16, {{4}, 3, 8}},
      {2, 1, 77, 32, {{2, 4}, 2, 16}},
      {1, 2, 130, 24, {{6}, 4, 32, 1, 1}},
      {1, 1, 90, 16, {{8}, 2, 12, 2, 0}},
      {1, 1, 20, 16, {{4}, 1, 16, 2, 1}},  // 2 chunks, window of 4: chunks repeat
      {1, 2, 61, 16, {{4, 2}, 3, 10, 1, 0, true, true}},
  };
  uint32_t seed = 1;
  int compared = 0, total = 0;
  for (const Case& c : cases)
    for (bool shared : {true, false})
      for (bool dedup : {false, true})
        for (bool causal : {false, true}) {
          LshParams p = c.p;
          p.shared = shared, p.dedup = dedup;
          Shape s{c.b, c.h, c.n, c.n, c.d, causal};
          auto in = random_inputs(s, seed);
          const auto rot = test_rotations(s, p, seed++);
          bool ambiguous = false;
          const auto want = brute_force(s, p, rot, in.q, in.k, in.v, ambiguous);
          ++total;
          if (ambiguous) continue;  // fp32 and fp64 hashing may rightly differ on a near-tie
          ++compared;
          Tensor got = run_with_rotations(p.spec(), s, in, rot, p.width(), p.rounds);
          EXPECT_LT(relative_error(got, want), 1e-5) << p.spec() << " " << s.str();
        }
  EXPECT_GE(compared, total * 9 / 10) << "too many near-ties skipped";
}

// q (and k) near a few random centroids: LSH buckets then track the clusters.
attnbench::Inputs clustered(const Shape& s, uint32_t seed) {
  auto in = random_inputs(s, seed);
  std::mt19937 rng(seed);
  std::normal_distribution<float> g;
  const int64_t K = 8;
  std::vector<float> centroid(size_t(K * s.dim));
  for (int64_t e = 0; e < K; ++e) {
    double norm = 0;
    for (int64_t d = 0; d < s.dim; ++d)
      norm += std::pow(centroid[size_t(e * s.dim + d)] = g(rng), 2);
    for (int64_t d = 0; d < s.dim; ++d)
      centroid[size_t(e * s.dim + d)] *= float(20 / std::sqrt(norm));
  }
  for (Tensor* t : {&in.q, &in.k})
    for (int64_t r = 0; r < t->size() / s.dim; ++r) {
      const int64_t e = rng() % K;
      for (int64_t d = 0; d < s.dim; ++d)
        t->data()[r * s.dim + d] = centroid[size_t(e * s.dim + d)] + 0.5f * g(rng);
    }
  return in;
}

TEST(Lsh, ClusteredErrorDecreasesWithRounds) {
  Shape s{1, 2, 512, 512, 32, false};
  for (bool shared : {true, false}) {
    std::vector<double> err;
    for (int rounds : {1, 2, 4, 8}) {
      double sum = 0;
      const int seeds = 6;
      for (int seed = 0; seed < seeds; ++seed) {
        auto in = clustered(s, uint32_t(100 + seed));
        Tensor khat = unit_rows(in.q);
        ElementMask mask = self_mask(s);
        const auto ref = shared ? reference_attention(s, in.q, khat, in.v, &mask)
                                : reference_attention(s, in.q, in.k, in.v);
        const std::string spec = "lsh:buckets=16,chunk=32,rounds=" + std::to_string(rounds) +
                                 ",seed=" + std::to_string(seed) +
                                 ",shared_qk=" + (shared ? "true" : "false");
        sum += relative_error(run_variant(spec, s, in), ref);
      }
      err.push_back(sum / seeds);
    }
    for (size_t i = 1; i < err.size(); ++i)
      EXPECT_LT(err[i], err[i - 1]) << "shared=" << shared << " rounds " << (1 << i);
  }
}

// With dedup the rounds together are one softmax over the union of the keys visited.
TEST(Lsh, DedupEqualsDenseAttentionOverTheVisitedUnion) {
  for (bool shared : {true, false})
    for (bool causal : {false, true}) {
      Shape s{1, 2, 150, 150, 16, causal};
      auto in = random_inputs(s, 21);
      auto a = make_attention(std::string("lsh:buckets=8,chunk=16,rounds=3,dedup=true,shared_qk=") +
                              (shared ? "true" : "false"));
      a->validate(s);
      Tensor out(s.batch, s.heads, s.nq, s.dim);
      a->forward(s, in.q, in.k, in.v, out);
      std::vector<std::vector<std::vector<bool>>> seen(
          size_t(s.heads),
          std::vector<std::vector<bool>>(size_t(s.nq), std::vector<bool>(size_t(s.nq))));
      std::vector<std::vector<int>> others(size_t(s.heads), std::vector<int>(size_t(s.nq)));
      for (int64_t h = 0; h < s.heads; ++h)
        for (int64_t i = 0; i < s.nq; ++i) {
          VisitedKeys keys;
          ASSERT_TRUE(a->visited_keys(s, 0, h, i, keys));
          ASSERT_EQ(keys.size(), 3u);
          for (const auto& round : keys) {
            EXPECT_TRUE(std::is_sorted(round.begin(), round.end()));
            EXPECT_TRUE(std::adjacent_find(round.begin(), round.end()) == round.end());
            if (shared) {  // a query's own chunk holds its own position as a key
              EXPECT_TRUE(std::find(round.begin(), round.end(), i) != round.end());
            }
            for (int64_t j : round) {
              EXPECT_TRUE(!causal || j <= i);
              if (!seen[h][i][j] && j != i) ++others[h][i];
              seen[h][i][j] = true;
            }
          }
        }
      ElementMask mask = [&](int64_t, int64_t h, int64_t i, int64_t j) {
        return seen[h][i][j] && (!shared || j != i || others[h][i] == 0);
      };
      const Tensor keys = shared ? unit_rows(in.q) : Tensor(1, 1, 1, 1);
      const auto ref = reference_attention(s, in.q, shared ? keys : in.k, in.v, &mask);
      EXPECT_LT(relative_error(out, ref), 1e-5) << "shared=" << shared << " causal=" << causal;
    }
}

TEST(Lsh, CausalRowZeroIsItsOwnValue) {
  Shape s{1, 2, 100, 100, 16, true};
  auto in = random_inputs(s, 4);
  Tensor out = run_variant("lsh:buckets=4,chunk=16,rounds=2", s, in);
  for (int64_t h = 0; h < s.heads; ++h)
    for (int64_t d = 0; d < s.dim; ++d) EXPECT_FLOAT_EQ(out.head(0, h)[d], in.v.head(0, h)[d]);
}

TEST(Lsh, BitIdenticalForOneAndTwoThreads) {
  for (const char* spec : {"lsh:chunk=16,rounds=3", "lsh:chunk=20,rounds=2,dedup=true,after=1",
                           "lsh:chunk=16,rounds=2,shared_qk=false"})
    for (bool causal : {false, true}) {
      // 6 heads run a whole head per task, 2 heads run the chunks of each round in parallel
      // with 2 threads (and a head per task with 1): both must give the same bits.
      for (int64_t heads : {3, 1}) {
        Shape s{2, heads, 333, 333, 32, causal};
        auto in = random_inputs(s, 5);
        Tensor one = with_threads(1, [&] { return run_variant(spec, s, in); });
        Tensor two = with_threads(2, [&] { return run_variant(spec, s, in); });
        EXPECT_TRUE(bit_identical(one, two)) << spec;
        EXPECT_TRUE(all_finite(one)) << spec;
      }
    }
}

std::string usage_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(Lsh, BadParametersAreUsageErrors) {
  for (const char* spec : {"lsh:buckets=5", "lsh:buckets=0", "lsh:buckets=3x4", "lsh:buckets=x",
                           "lsh:buckets=4x", "lsh:chunk=0", "lsh:chunk=-3", "lsh:rounds=0",
                           "lsh:rounds=-1", "lsh:before=-1", "lsh:factorize=maybe"}) {
    const std::string e = usage_error([&] { make_attention(spec); });
    EXPECT_FALSE(e.empty()) << spec;
    EXPECT_NE(e.find("lsh"), std::string::npos) << e;
  }
  EXPECT_NE(usage_error([] {
              make_attention("lsh")->validate(Shape{1, 1, 10, 12, 16});
            }).find("Nq"),
            std::string::npos);
}

TEST(Lsh, RotationsRoundTripReproducesTheOutputExactly) {
  Shape s{1, 3, 200, 200, 32, true};
  auto in = random_inputs(s, 8);
  TempDir dir("roundtrip");
  auto a = make_attention("lsh:chunk=16,seed=7");
  Tensor first(s.batch, s.heads, s.nq, s.dim), second(s.batch, s.heads, s.nq, s.dim),
      other(s.batch, s.heads, s.nq, s.dim);
  a->forward(s, in.q, in.k, in.v, first);
  a->save_random(dir.path.string(), s);
  const NpyArray rot = read_npy((dir.path / "rotations.npy").string());
  const int64_t buckets = 2 * (200 / 32);  // buckets=auto: n/c rounded down to even
  EXPECT_EQ(rot.shape, (std::vector<int64_t>{3, 4, 32, buckets / 2}));

  auto b = make_attention("lsh:chunk=16,seed=8");
  b->forward(s, in.q, in.k, in.v, other);
  EXPECT_FALSE(bit_identical(first, other));  // another seed, other rotations
  b->load_random(dir.path.string(), s);
  b->forward(s, in.q, in.k, in.v, second);
  EXPECT_TRUE(bit_identical(first, second));

  Shape wrong = s;
  wrong.dim = 16;
  EXPECT_THROW(b->load_random(dir.path.string(), wrong), RuntimeError);
}

TEST(Lsh, BucketRulesAndCostFormulas) {
  Shape s{1, 8, 65536, 65536, 64};
  auto lucid = make_attention("lsh:chunk=64,rounds=4");
  EXPECT_EQ(lucid->params().at("buckets"), "auto");
  // 4·D·r·n·c·(1+before+after) attention + hashing 2·r·n·D·(32+32)/2 (1024 = 32x32 factored).
  const double per_head = 4.0 * 64 * 4 * 65536 * 64 * 2 + 2.0 * 4 * 65536 * 64 * 32;
  EXPECT_DOUBLE_EQ(lucid->flops(s), 8 * per_head);
  auto flat = make_attention("lsh:chunk=64,rounds=4,factorize=no");
  EXPECT_DOUBLE_EQ(flat->flops(s),
                   8 * (4.0 * 64 * 4 * 65536 * 64 * 2 + 2.0 * 4 * 65536 * 64 * 512));
  // An integer bucket count is factorized by the same rule; hf: 2048 = 32x64 -> 16 + 32 columns.
  EXPECT_DOUBLE_EQ(make_attention("lsh:chunk=64,rounds=4,buckets=1024")->flops(s), 8 * per_head);
  EXPECT_DOUBLE_EQ(make_attention("lsh:chunk=64,rounds=4,buckets=hf")->flops(s),
                   8 * (4.0 * 64 * 4 * 65536 * 64 * 2 + 2.0 * 4 * 65536 * 64 * 48));
  // Short last chunk (n = 100, c = 64): every query's window holds both chunks, n² pairs; a
  // chunk longer than n is one chunk per round, seen twice with before=1 (the window wraps).
  Shape small{1, 1, 100, 100, 16};
  const double hash = 2.0 * 100 * 16 * 1;
  EXPECT_DOUBLE_EQ(make_attention("lsh:chunk=64,rounds=1,buckets=2")->flops(small),
                   4.0 * 16 * 100 * 100 + hash);
  EXPECT_DOUBLE_EQ(make_attention("lsh:chunk=1000,rounds=1,buckets=2")->flops(small),
                   4.0 * 16 * 100 * 100 * 2 + hash);
  EXPECT_GT(lucid->extra_bytes(s), 4.0 * 8 * 4 * 65536 * 2);  // at least perm + inv per round
  EXPECT_LT(lucid->extra_bytes(s), 4.0 * 8 * 65536 * 64);     // far below one copy of q
}

}  // namespace
}  // namespace attn::test
