// `performer` (FAVOR+): implementation exactness against an fp64 evaluation of the same
// formula with the same features, the statistics of the random features (unbiasedness,
// m^(-1/2) error decay, orthogonal < iid, positive < trig) and the engineering contract
// (determinism, parameter errors, feature export/import).
#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <random>

#include <unistd.h>

#include "attention/npy.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;

// A fresh temporary directory, removed at scope exit.
struct TempDir {
  TempDir() {
    static int counter = 0;
    // tmpfs when there is one: the unbiasedness test writes thousands of small files.
    const fs::path base =
        fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    path =
        (base / ("attn_performer_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
            .string();
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string path;
};

// The raw projection W [m, D] an instance uses for head dim d (through its public export),
// written into `dir` (a fresh temporary directory when none is given).
std::vector<double> exported_features(Attention& a, const Shape& s, int64_t* m = nullptr,
                                      const TempDir* dir = nullptr) {
  std::optional<TempDir> own;
  if (!dir) dir = &own.emplace();
  const std::string& path = dir->path;
  a.save_random(path, s);
  NpyArray w = read_npy(path + "/features.npy");
  EXPECT_EQ(w.shape.size(), 2u);
  EXPECT_EQ(w.shape[1], s.dim);
  if (m) *m = w.shape[0];
  return std::vector<double>(w.data.begin(), w.data.end());
}

enum class Kind { Softmax, Relu, Trig };

// φ of one row in fp64, the formula of docs/ALGORITHMS.md §Performer features as documented for the
// variant: x' = x·D^(-1/4), u = W x'; softmax: m^(-1/2)(exp(u − ‖x'‖²/2 − shift) + eps) with
// shift = the row's max of u (queries) or `key_shift` (keys); relu: max(u, 0) + 1e-3;
// trig: m^(-1/2)·amp·[sin u, cos u], amp = 1 (queries) or exp(‖x'‖²/2 − key_shift) (keys).
std::vector<double> phi(const float* x, int64_t d, const std::vector<double>& w, int64_t m,
                        Kind kind, double eps, bool key, double key_shift) {
  const double c = std::pow(double(d), -0.25);
  std::vector<double> u(m);
  double h = 0;
  for (int64_t j = 0; j < d; ++j) h += 0.5 * (c * x[j]) * (c * x[j]);
  for (int64_t f = 0; f < m; ++f) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) s += w[f * d + j] * c * x[j];
    u[f] = s;
  }
  const double a = 1.0 / std::sqrt(double(m));
  std::vector<double> out;
  if (kind == Kind::Softmax) {
    const double shift = key ? key_shift : *std::max_element(u.begin(), u.end());
    for (double v : u) out.push_back(a * (std::exp(v - h - shift) + eps));
  } else if (kind == Kind::Relu) {
    for (double v : u) out.push_back(std::max(v, 0.0) + 1e-3);
  } else {
    const double amp = key ? a * std::exp(h - key_shift) : a;
    for (double v : u) out.push_back(amp * std::sin(v));
    for (double v : u) out.push_back(amp * std::cos(v));
  }
  return out;
}

// The shift contribution of key row x: max over features of u (softmax), ‖x'‖²/2 (trig), 0 (relu).
double row_shift(const float* x, int64_t d, const std::vector<double>& w, int64_t m, Kind kind) {
  const double c = std::pow(double(d), -0.25);
  double mx = -INFINITY;
  if (kind == Kind::Relu) return 0.0;
  if (kind == Kind::Trig) {
    double h = 0;
    for (int64_t j = 0; j < d; ++j) h += 0.5 * (c * x[j]) * (c * x[j]);
    return h;
  }
  for (int64_t f = 0; f < m; ++f) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) s += w[f * d + j] * c * x[j];
    mx = std::max(mx, s);
  }
  return mx;
}

// FAVOR in fp64 with explicit (masked) weights φ(q_i)·φ_i(k_j): independent of the prefix-sum
// and blocking structure the implementation uses. The key shift of row i is the max of
// row_shift over all keys (non-causal) or over keys j <= i (causal, docs/ALGORITHMS.md
// §Performer causal shift); φ_i(k_j) = φ(k_j at shift 0, no ε)·exp(−shift_i) + ε·m^(-1/2).
// `cancellation`, if given, receives per row Σ_j |p_ij| / |Σ_j p_ij|: 1 for the positive
// kernels; for trig, whose weights take both signs, how much fp32 rounding in the sums is
// amplified by the division.
std::vector<double> favor_fp64(const Shape& s, const attnbench::Inputs& in,
                               const std::vector<double>& w, int64_t m, Kind kind, double eps,
                               std::vector<double>* cancellation = nullptr) {
  const int64_t d = s.dim;
  const double eps_k = kind == Kind::Softmax ? eps / std::sqrt(double(m)) : 0.0;
  std::vector<double> out(size_t(s.heads_total() * s.nq * d));
  if (cancellation) cancellation->assign(size_t(s.heads_total() * s.nq), 1.0);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const float *q = in.q.head(b, h), *k = in.k.head(b, h), *v = in.v.head(b, h);
      std::vector<double> shift(s.nk);
      for (int64_t j = 0; j < s.nk; ++j) shift[j] = row_shift(k + j * d, d, w, m, kind);
      for (int64_t j = 1; j < s.nk; ++j) shift[j] = std::max(shift[j], shift[j - 1]);
      std::vector<std::vector<double>> kf;
      for (int64_t j = 0; j < s.nk; ++j) kf.push_back(phi(k + j * d, d, w, m, kind, 0, true, 0));
      double* o = out.data() + (b * s.heads + h) * s.nq * d;
      for (int64_t i = 0; i < s.nq; ++i) {
        const auto qf = phi(q + i * d, d, w, m, kind, eps, false, 0);
        double qsum = 0;
        for (double x : qf) qsum += x;
        const int64_t last = s.causal ? i : s.nk - 1;
        const double scale = std::exp(-shift[last]);
        double den = 0, magnitude = 0;
        for (int64_t j = 0; j <= last; ++j) {
          double p = 0;
          for (size_t f = 0; f < qf.size(); ++f) p += qf[f] * kf[j][f];
          p = p * scale + eps_k * qsum;
          den += p, magnitude += std::abs(p);
          for (int64_t e = 0; e < d; ++e) o[i * d + e] += p * v[j * d + e];
        }
        for (int64_t e = 0; e < d; ++e) o[i * d + e] /= den;
        if (cancellation)
          (*cancellation)[size_t((b * s.heads + h) * s.nq + i)] = magnitude / std::abs(den);
      }
    }
  return out;
}

Tensor forward(Attention& a, const Shape& s, const attnbench::Inputs& in) {
  a.validate(s);
  Tensor out(s.batch, s.heads, s.nq, s.dim);
  a.forward(s, in.q, in.k, in.v, out);
  return out;
}

TEST(Performer, MatchesFp64FavorWithTheSameFeatures) {
  struct Case {
    Shape s;
    std::string spec;
    Kind kind;
    double eps;
  };
  const std::vector<Case> cases = {
      {{1, 2, 150, 150, 32, false}, "performer:features=64", Kind::Softmax, 1e-4},
      {{1, 2, 150, 150, 32, true}, "performer:features=64", Kind::Softmax, 1e-4},
      {{2, 1, 70, 333, 16, false}, "performer:features=40,ortho=false", Kind::Softmax, 1e-4},
      {{1, 1, 300, 300, 64, true}, "performer:eps=0,scaling=sqrt", Kind::Softmax, 0},
      {{1, 1, 4100, 4100, 16, true}, "performer:features=24", Kind::Softmax, 1e-4},
      {{1, 1, 4100, 4200, 16, false}, "performer:features=24", Kind::Softmax, 1e-4},
      {{1, 2, 130, 130, 32, true}, "performer:features=48,kernel=relu", Kind::Relu, 0},
      {{1, 2, 100, 90, 32, false}, "performer:features=48,kernel=relu", Kind::Relu, 0},
      {{1, 1, 129, 129, 16, true}, "performer:features=16,kernel=trig,seed=3", Kind::Trig, 0},
  };
  uint64_t seed = 1;
  for (const Case& c : cases) {
    auto in = random_inputs(c.s, seed++);
    auto a = make_attention(c.spec);
    Tensor out = forward(*a, c.s, in);
    int64_t m = 0;
    const auto w = exported_features(*a, c.s, &m);
    std::vector<double> cancellation;
    const auto ref = favor_fp64(c.s, in, w, m, c.kind, c.eps, &cancellation);
    // Rows whose denominator cancels more than 100-fold (trig only: its weights have both
    // signs) amplify fp32 rounding beyond what 1e-5 can test; every other row is compared.
    // Most rows must remain, or the case would test nothing.
    std::vector<float> got;
    std::vector<double> want;
    for (size_t row = 0; row < cancellation.size(); ++row) {
      if (cancellation[row] > 100) continue;
      for (int64_t e = 0; e < c.s.dim; ++e) {
        got.push_back(out.data()[row * c.s.dim + e]);
        want.push_back(ref[row * c.s.dim + e]);
      }
    }
    EXPECT_GE(got.size(), 0.9 * ref.size()) << c.spec << " " << c.s.str();
    if (c.kind != Kind::Trig) {
      EXPECT_EQ(got.size(), ref.size()) << "positive kernels never cancel";
    }
    EXPECT_LT(relative_error(got.data(), want), 1e-5) << c.spec << " " << c.s.str();
  }
}

// Scales q and k (not v): larger logits, more peaked attention.
attnbench::Inputs scaled_inputs(const Shape& s, uint64_t seed, float qk_scale) {
  auto in = random_inputs(s, seed);
  for (int64_t i = 0; i < in.q.size(); ++i) in.q.data()[i] *= qk_scale;
  for (int64_t i = 0; i < in.k.size(); ++i) in.k.data()[i] *= qk_scale;
  return in;
}

// Mean over seeds of the relative error against dense fp64 attention.
double mean_error(const std::string& spec, const Shape& s, const attnbench::Inputs& in, int seeds) {
  const auto ref = reference_attention(s, in.q, in.k, in.v);
  double sum = 0;
  for (int seed = 0; seed < seeds; ++seed)
    sum += relative_error(run_variant(spec + ",seed=" + std::to_string(seed), s, in), ref);
  return sum / seeds;
}

// Unbiasedness of the positive features (docs/ALGORITHMS.md §Performer kernel): over draws of W,
// the mean of φ(x)·φ(y) (no stabilizer, no shifts) is exp(q·k/sqrt(D)). Tolerance: 4.5
// standard errors of the mean, from the sample variance.
TEST(Performer, PositiveFeaturesAreUnbiased) {
  const Shape s{1, 1, 1, 1, 8, false};
  const int64_t d = s.dim;
  std::mt19937 rng(11);
  std::normal_distribution<double> g;
  std::vector<double> q(d), k(d);
  for (auto& x : q) x = 0.8 * g(rng);
  for (auto& x : k) x = 0.8 * g(rng);
  const double c = std::pow(double(d), -0.25);
  double qk = 0, hq = 0, hk = 0;
  for (int64_t j = 0; j < d; ++j)
    qk += q[j] * k[j], hq += c * c * q[j] * q[j] / 2, hk += c * c * k[j] * k[j] / 2;
  const double truth = std::exp(qk / std::sqrt(double(d)));
  for (const std::string spec : {"performer:features=12", "performer:features=12,ortho=false"}) {
    const int draws = 3000;
    const TempDir dir;
    double sum = 0, sum2 = 0;
    for (int seed = 0; seed < draws; ++seed) {
      auto a = make_attention(spec + ",seed=" + std::to_string(seed));
      int64_t m = 0;
      const auto w = exported_features(*a, s, &m, &dir);
      double est = 0;
      for (int64_t f = 0; f < m; ++f) {
        double uq = 0, uk = 0;
        for (int64_t j = 0; j < d; ++j)
          uq += w[f * d + j] * c * q[j], uk += w[f * d + j] * c * k[j];
        est += std::exp(uq - hq) * std::exp(uk - hk) / double(m);
      }
      sum += est, sum2 += est * est;
    }
    const double mean = sum / draws, var = (sum2 - draws * mean * mean) / (draws - 1);
    const double se = std::sqrt(var / draws);
    EXPECT_LT(std::abs(mean - truth), 4.5 * se)
        << spec << ": mean " << mean << " vs exp(q·k/sqrt D) = " << truth << ", se " << se;
    EXPECT_GT(var, 0.0);
  }
}

// Exported W is raw: orthogonal rows within each block of D, and squared row norms averaging
// D (rows marginally N(0, I)), i.e. neither D^(-1/4) nor m^(-1/2) folded in.
TEST(Performer, ExportedFeaturesAreRawOrthogonalBlocks) {
  const Shape s{1, 1, 4, 4, 16, false};
  auto a = make_attention("performer:features=1000,seed=5");
  int64_t m = 0;
  const auto w = exported_features(*a, s, &m);
  ASSERT_EQ(m, 1000);
  const int64_t d = s.dim;
  auto row_dot = [&](int64_t r, int64_t t) {
    double x = 0;
    for (int64_t j = 0; j < d; ++j) x += w[r * d + j] * w[t * d + j];
    return x;
  };
  double mean_norm2 = 0;
  for (int64_t r = 0; r < m; ++r) {
    mean_norm2 += row_dot(r, r) / m;
    for (int64_t t = (r / d) * d; t < std::min(m, (r / d + 1) * d); ++t) {
      if (t != r) {
        EXPECT_LT(std::abs(row_dot(r, t)), 1e-5 * std::sqrt(row_dot(r, r) * row_dot(t, t)));
      }
    }
  }
  EXPECT_NEAR(mean_norm2, double(d), 0.1 * d);
  auto sq = make_attention("performer:features=40,scaling=sqrt");
  const auto ws = exported_features(*sq, s);
  for (int64_t r = 0; r < 40; ++r) {
    double n2 = 0;
    for (int64_t j = 0; j < d; ++j) n2 += ws[r * d + j] * ws[r * d + j];
    EXPECT_NEAR(n2, double(d), 1e-4 * d);
  }
}

// Paper Lemma 2: MSE ∝ 1/m, so the error falls as m^(-1/2). Inputs of moderate norm (‖x‖² ≈ 0.5)
// keep the estimator in its statistical regime; eps = 0 removes the stabilizer's bias floor.
TEST(Performer, ErrorVersusDenseFallsAsInverseSqrtFeatures) {
  const Shape s{1, 2, 64, 64, 16, false};
  const auto in = scaled_inputs(s, 21, 0.35f);
  std::vector<double> xs, ys;
  for (int m = 16; m <= 1024; m *= 2) {
    const double e = mean_error("performer:eps=0,features=" + std::to_string(m), s, in, 8);
    xs.push_back(std::log(double(m))), ys.push_back(std::log(e));
  }
  const double n = xs.size();
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < xs.size(); ++i)
    sx += xs[i], sy += ys[i], sxx += xs[i] * xs[i], sxy += xs[i] * ys[i];
  const double slope = (n * sxy - sx * sy) / (n * sxx - sx * sx);
  EXPECT_GE(slope, -0.7);
  EXPECT_LE(slope, -0.3);
  std::printf("log-log slope of mean error over m = 16..1024: %.3f\n", slope);
}

TEST(Performer, OrthogonalFeaturesBeatIid) {
  const Shape s{1, 2, 64, 64, 16, false};
  const auto in = scaled_inputs(s, 22, 0.5f);
  const double ortho = mean_error("performer:eps=0,features=16", s, in, 40);
  const double iid = mean_error("performer:eps=0,features=16,ortho=false", s, in, 40);
  std::printf("mean error at m = 16: orthogonal %.4f, iid %.4f\n", ortho, iid);
  EXPECT_LT(ortho, iid);
}

// Paper §4 / docs/ALGORITHMS.md §Performer error: positive features stay accurate where the kernel
// is small, trigonometric ones do not; peaked attention (large logits) is where it shows.
TEST(Performer, PositiveFeaturesBeatTrigOnPeakedInputs) {
  const Shape s{1, 2, 64, 64, 16, false};
  const auto in = scaled_inputs(s, 23, 1.5f);
  const double pos = mean_error("performer:features=64", s, in, 10);
  const double trig = mean_error("performer:features=64,kernel=trig", s, in, 10);
  std::printf("mean error on peaked inputs: softmax %.4f, trig %.4f\n", pos, trig);
  EXPECT_LT(pos, trig);
}

TEST(Performer, BitIdenticalForOneAndTwoThreads) {
  for (const Shape& s : {Shape{1, 1, 9000, 9000, 32, false}, Shape{1, 1, 9000, 9000, 32, true},
                         Shape{2, 3, 600, 700, 16, false}, Shape{1, 3, 5000, 5000, 16, true}}) {
    auto in = random_inputs(s, 4);
    for (const char* spec : {"performer:features=64", "performer:features=20,kernel=relu"}) {
      Tensor one = with_threads(1, [&] { return run_variant(spec, s, in); });
      Tensor two = with_threads(2, [&] { return run_variant(spec, s, in); });
      EXPECT_TRUE(bit_identical(one, two)) << spec << " " << s.str();
    }
  }
}

// Row i cannot see keys or values after i (with eps = 0 here; tests/test_causality.cpp checks
// the default eps bit for bit).
TEST(Performer, CausalRowsIgnoreTheFuture) {
  const Shape s{1, 1, 300, 300, 32, true};
  auto in = random_inputs(s, 8);
  const std::string spec = "performer:features=64,eps=0";
  Tensor before = run_variant(spec, s, in);
  const int64_t cut = 150;
  for (int64_t i = cut * s.dim; i < in.k.size(); ++i) in.k.data()[i] *= 1.7f, in.v.data()[i] += 3;
  Tensor after = run_variant(spec, s, in);
  for (int64_t i = 0; i < cut * s.dim; ++i)
    EXPECT_NEAR(after.data()[i], before.data()[i], 1e-5 * (1 + std::abs(before.data()[i])));
}

// docs/ALGORITHMS.md §Performer causal shift: causal row i is the non-causal estimator on keys
// 0…i (the default eps, so the shift matters), for the softmax and trig kernels.
TEST(Performer, CausalRowIsTheNonCausalEstimatorOnItsPrefix) {
  const Shape s{1, 2, 200, 200, 32, true};
  auto in = random_inputs(s, 12);
  for (const char* spec : {"performer:features=48", "performer:features=16,kernel=trig"}) {
    SCOPED_TRACE(spec);
    const Tensor causal = run_variant(spec, s, in);
    for (int64_t len : {1, 2, 37, 64, 65, 130, 200}) {
      const Shape p{1, 2, 1, len, 32, false};
      attnbench::Inputs prefix{Tensor(1, 2, 1, 32), Tensor(1, 2, len, 32), Tensor(1, 2, len, 32)};
      for (int64_t h = 0; h < 2; ++h) {
        std::copy_n(in.q.head(0, h) + (len - 1) * 32, 32, prefix.q.head(0, h));
        std::copy_n(in.k.head(0, h), len * 32, prefix.k.head(0, h));
        std::copy_n(in.v.head(0, h), len * 32, prefix.v.head(0, h));
      }
      const Tensor row = run_variant(spec, p, prefix);
      for (int64_t h = 0; h < 2; ++h)
        for (int64_t e = 0; e < 32; ++e) {
          const float want = row.head(0, h)[e], got = causal.head(0, h)[(len - 1) * 32 + e];
          EXPECT_NEAR(got, want, 2e-5 * (1 + std::abs(want))) << "len " << len << " head " << h;
        }
    }
  }
}

TEST(Performer, LargeNormInputsStayFinite) {
  for (bool causal : {false, true}) {
    const Shape s{1, 2, 200, 200, 64, causal};
    const auto in = scaled_inputs(s, 9, 10.0f);
    for (const char* spec : {"performer", "performer:kernel=relu", "performer:eps=1e-6"})
      EXPECT_TRUE(all_finite(run_variant(spec, s, in))) << spec;
  }
}

TEST(Performer, BadParametersAreUsageErrors) {
  for (const char* spec :
       {"performer:features=0", "performer:features=-4", "performer:features=abc",
        "performer:features=1e9", "performer:kernel=gauss", "performer:eps=-1",
        "performer:scaling=unit", "performer:ortho=maybe", "performer:bogus=1"})
    EXPECT_THROW(make_attention(spec), UsageError) << spec;
  auto a = make_attention("performer");
  Shape neg{1, 1, 4, 4, 16, false};
  neg.scale = -0.5f;
  EXPECT_THROW(a->validate(neg), UsageError);
  EXPECT_THROW(a->validate(Shape{1, 1, 4, 8, 16, true}), UsageError);
}

TEST(Performer, DefaultFeaturesAreDLnD) {
  auto a = make_attention("performer");
  int64_t m = 0;
  exported_features(*a, Shape{1, 1, 4, 4, 64, false}, &m);
  EXPECT_EQ(m, 266);  // int(64·ln 64), performer-pytorch
}

TEST(Performer, SavedFeaturesReproduceTheOutput) {
  const Shape s{1, 2, 100, 100, 32, true};
  auto in = random_inputs(s, 6);
  auto a = make_attention("performer:features=48,seed=1");
  Tensor out_a = forward(*a, s, in);
  TempDir dir;
  a->save_random(dir.path, s);
  auto b = make_attention("performer:features=48,seed=2");
  EXPECT_FALSE(bit_identical(forward(*b, s, in), out_a));
  b->load_random(dir.path, s);
  EXPECT_TRUE(bit_identical(forward(*b, s, in), out_a));
  auto c = make_attention("performer:features=50");
  EXPECT_THROW(c->load_random(dir.path, s), RuntimeError);
}

}  // namespace
}  // namespace attn::test
