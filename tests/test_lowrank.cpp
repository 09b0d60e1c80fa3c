// `linformer`, `nystrom` and `linear`: each against an fp64 evaluation of its own definition
// written here from the paper's equations (given the same random matrices, landmarks and
// iteration count), Nyström's pseudo-inverse iteration against an fp64 Gauss-Jordan inverse,
// the engineering contract (bad parameters, determinism across thread counts, random-state
// export/import) and the strict causality of causal `linear`.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "attention/npy.h"
#include "attention/nystrom.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  TempDir() {
    static int counter = 0;
    path = (fs::temp_directory_path() /
            ("attn_lowrank_" + std::to_string(::getpid()) + "_" + std::to_string(counter++)))
               .string();
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string path;
};

using Matrix = std::vector<double>;  // row-major

// Row i of head (b, h) of t, in fp64.
std::vector<double> row(const Tensor& t, int64_t b, int64_t h, int64_t i) {
  const float* p = t.head(b, h) + i * t.dim();
  return std::vector<double>(p, p + t.dim());
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Σ_j softmax_j(s·q·keys_j) values_j, in fp64.
std::vector<double> attend(const std::vector<double>& q,
                           const std::vector<std::vector<double>>& keys,
                           const std::vector<std::vector<double>>& values, double s) {
  std::vector<double> z(keys.size());
  double mx = -INFINITY, sum = 0;
  for (size_t j = 0; j < keys.size(); ++j) mx = std::max(mx, z[j] = s * dot(q, keys[j]));
  std::vector<double> o(values[0].size(), 0.0);
  for (size_t j = 0; j < keys.size(); ++j) {
    const double p = std::exp(z[j] - mx);
    sum += p;
    for (size_t d = 0; d < o.size(); ++d) o[d] += p * values[j][d];
  }
  for (double& x : o) x /= sum;
  return o;
}

void append(std::vector<double>& out, const std::vector<double>& x) {
  out.insert(out.end(), x.begin(), x.end());
}

// ---------------------------------------------------------------------------------------------
// Linformer: out_i = softmax(s·q_i (E K)ᵀ)·(F V) (arXiv:2006.04768), E, F [k, Nk].

std::vector<double> linformer_fp64(const Shape& s, const attnbench::Inputs& in, const NpyArray& e,
                                   const NpyArray& f, bool per_head) {
  const int64_t k = e.shape[1], nk = e.shape[2];
  std::vector<double> out;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t g = per_head ? h : 0;
      std::vector<std::vector<double>> kp(k, std::vector<double>(s.dim, 0.0)), vp = kp;
      for (int64_t r = 0; r < k; ++r)
        for (int64_t j = 0; j < nk; ++j) {
          const double er = e.data[(g * k + r) * nk + j], fr = f.data[(g * k + r) * nk + j];
          const auto kj = row(in.k, b, h, j), vj = row(in.v, b, h, j);
          for (int64_t d = 0; d < s.dim; ++d) kp[r][d] += er * kj[d], vp[r][d] += fr * vj[d];
        }
      for (int64_t i = 0; i < s.nq; ++i)
        append(out, attend(row(in.q, b, h, i), kp, vp, s.softmax_scale()));
    }
  return out;
}

TEST(Linformer, MatchesFp64OfItsDefinitionGivenTheSameProjections) {
  struct Case {
    std::string spec;
    Shape shape;
  };
  const std::vector<Case> cases = {
      {"linformer:k=40", Shape{2, 3, 150, 130, 16}},  // cross-attention, k < one task's rows
      {"linformer:k=100,per_head=true,seed=5", Shape{1, 2, 200, 200, 32}},
      {"linformer:k=70,shared_kv=true", Shape{1, 2, 96, 96, 16}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.spec);
    auto a = make_attention(c.spec);
    a->validate(c.shape);
    auto in = random_inputs(c.shape, 3);
    Tensor out(c.shape.batch, c.shape.heads, c.shape.nq, c.shape.dim);
    a->forward(c.shape, in.q, in.k, in.v, out);
    TempDir dir;
    a->save_random(dir.path, c.shape);
    const NpyArray e = read_npy(dir.path + "/E.npy");
    const bool shared_kv = a->params().at("shared_kv") == "true";
    EXPECT_EQ(fs::exists(dir.path + "/F.npy"), !shared_kv);
    const NpyArray f = shared_kv ? e : read_npy(dir.path + "/F.npy");
    const bool per_head = a->params().at("per_head") == "true";
    EXPECT_EQ(e.shape, (std::vector<int64_t>{per_head ? c.shape.heads : 1,
                                             std::stoll(a->params().at("k")), c.shape.nk}));
    EXPECT_LT(relative_error(out, linformer_fp64(c.shape, in, e, f, per_head)), 1e-5);
  }
}

// Entries N(0, 1/k): mean 0 and variance 1/k within sampling error; E and F independent.
TEST(Linformer, ProjectionsAreGaussianWithVarianceOneOverK) {
  const Shape s{1, 1, 2048, 2048, 16};
  auto a = make_attention("linformer:k=128");
  TempDir dir;
  a->save_random(dir.path, s);
  const NpyArray e = read_npy(dir.path + "/E.npy"), f = read_npy(dir.path + "/F.npy");
  double sum = 0, sum2 = 0, cross = 0;
  for (size_t i = 0; i < e.data.size(); ++i)
    sum += e.data[i], sum2 += double(e.data[i]) * e.data[i], cross += double(e.data[i]) * f.data[i];
  const double n = double(e.data.size()), var = sum2 / n - (sum / n) * (sum / n);
  // 262144 draws: the sample variance is within 1 % of 1/k (its sd is 0.28 %).
  EXPECT_NEAR(var * 128, 1.0, 0.01);
  EXPECT_NEAR(sum / n * std::sqrt(128.0), 0.0, 0.01);
  EXPECT_NEAR(cross / n * 128, 0.0, 0.01);
}

// Imported matrices replace the seeded ones exactly (the apply --random-in path).
TEST(Linformer, ImportedProjectionsReproduceTheExportingRun) {
  const Shape s{1, 2, 128, 128, 16};
  auto in = random_inputs(s, 4);
  for (const char* spec : {"linformer:k=32,per_head=true", "linformer:k=32,shared_kv=true"}) {
    SCOPED_TRACE(spec);
    auto a = make_attention(std::string(spec) + ",seed=1");
    Tensor want(1, 2, 128, 16), got(1, 2, 128, 16), other(1, 2, 128, 16);
    a->forward(s, in.q, in.k, in.v, want);
    TempDir dir;
    a->save_random(dir.path, s);
    auto b = make_attention(std::string(spec) + ",seed=2");
    b->forward(s, in.q, in.k, in.v, other);
    EXPECT_FALSE(bit_identical(want, other)) << "the seed does not change E, F";
    b->load_random(dir.path, s);
    b->forward(s, in.q, in.k, in.v, got);
    EXPECT_TRUE(bit_identical(want, got));
    // A file of the wrong shape (another Nk) is refused, naming the expected shape.
    try {
      b->load_random(dir.path, Shape{1, 2, 100, 100, 16});
      ADD_FAILURE() << "a [.., 128] E was loaded for Nk = 100";
    } catch (const RuntimeError& e) {
      EXPECT_NE(std::string(e.what()).find("must have shape"), std::string::npos) << e.what();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Nyström (arXiv:2102.03902): out = softmax(s·Q K̃ᵀ) · Z · softmax(s·Q̃ Kᵀ) · V,
// Z the iterative pseudo-inverse of Ã = softmax(s·Q̃ K̃ᵀ); landmarks the means of m segments,
// segment i = rows [⌊i·n/m⌋, ⌊(i+1)·n/m⌋) (docs/ALGORITHMS.md §Nyström).

std::vector<std::vector<double>> landmarks(const Tensor& x, int64_t b, int64_t h, int64_t m) {
  const int64_t n = x.seq();
  std::vector<std::vector<double>> out;
  for (int64_t i = 0; i < m; ++i) {
    std::vector<double> mean(x.dim(), 0.0);
    const int64_t lo = i * n / m, hi = (i + 1) * n / m;
    for (int64_t r = lo; r < hi; ++r) {
      const auto xr = row(x, b, h, r);
      for (int64_t d = 0; d < x.dim(); ++d) mean[d] += xr[d] / double(hi - lo);
    }
    out.push_back(mean);
  }
  return out;
}

Matrix matmul(const Matrix& a, const Matrix& b, int64_t n) {
  Matrix c(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t l = 0; l < n; ++l)
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += a[i * n + l] * b[l * n + j];
  return c;
}

// c·I − x
Matrix shifted(double c, Matrix x, int64_t n) {
  for (double& v : x) v = -v;
  for (int64_t i = 0; i < n; ++i) x[i * n + i] += c;
  return x;
}

// Z_{j+1} = ¼ Z_j (13I − A Z_j (15I − A Z_j (7I − A Z_j))), Z_0 = Aᵀ / (‖A‖₁‖A‖∞), in fp64.
Matrix pinv_iteration_fp64(const Matrix& a, int64_t n, int iterations) {
  double norm1 = 0, norm_inf = 0;
  for (int64_t i = 0; i < n; ++i) {
    double col = 0, rw = 0;
    for (int64_t j = 0; j < n; ++j) col += std::abs(a[j * n + i]), rw += std::abs(a[i * n + j]);
    norm1 = std::max(norm1, col), norm_inf = std::max(norm_inf, rw);
  }
  Matrix z(n * n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) z[i * n + j] = a[j * n + i] / (norm1 * norm_inf);
  for (int it = 0; it < iterations; ++it) {
    const Matrix az = matmul(a, z, n);
    Matrix t = shifted(13, matmul(az, shifted(15, matmul(az, shifted(7, az, n), n), n), n), n);
    z = matmul(z, t, n);
    for (double& v : z) v *= 0.25;
  }
  return z;
}

std::vector<double> nystrom_fp64(const Shape& s, const attnbench::Inputs& in, int64_t m,
                                 int iterations) {
  const double sc = s.softmax_scale();
  std::vector<double> out;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const auto ql = landmarks(in.q, b, h, m), kl = landmarks(in.k, b, h, m);
      // Ã row i = softmax over landmark keys of landmark query i (attending to unit vectors).
      Matrix a(m * m);
      std::vector<std::vector<double>> unit(m, std::vector<double>(m, 0.0));
      for (int64_t j = 0; j < m; ++j) unit[j][j] = 1;
      for (int64_t i = 0; i < m; ++i) {
        const auto r = attend(ql[i], kl, unit, sc);
        std::copy(r.begin(), r.end(), a.begin() + i * m);
      }
      const Matrix z = pinv_iteration_fp64(a, m, iterations);
      std::vector<std::vector<double>> keys, values;
      for (int64_t j = 0; j < s.nk; ++j)
        keys.push_back(row(in.k, b, h, j)), values.push_back(row(in.v, b, h, j));
      std::vector<std::vector<double>> bv;  // B̃·V [m, D]
      for (int64_t i = 0; i < m; ++i) bv.push_back(attend(ql[i], keys, values, sc));
      std::vector<std::vector<double>> g(m, std::vector<double>(s.dim, 0.0));  // Z·B̃V
      for (int64_t i = 0; i < m; ++i)
        for (int64_t l = 0; l < m; ++l)
          for (int64_t d = 0; d < s.dim; ++d) g[i][d] += z[i * m + l] * bv[l][d];
      for (int64_t i = 0; i < s.nq; ++i) append(out, attend(row(in.q, b, h, i), kl, g, sc));
    }
  return out;
}

TEST(Nystrom, MatchesFp64OfItsDefinitionGivenTheSameLandmarks) {
  struct Case {
    std::string spec;
    int64_t m;
    int iterations;
    Shape shape;
  };
  const std::vector<Case> cases = {
      {"nystrom:landmarks=16", 16, 6, Shape{1, 2, 256, 256, 32}},               // m divides n
      {"nystrom:landmarks=12", 12, 6, Shape{2, 1, 200, 200, 16}},               // uneven segments
      {"nystrom:landmarks=70,iterations=3", 70, 3, Shape{1, 2, 150, 130, 16}},  // cross, 2 blocks
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.spec);
    auto in = random_inputs(c.shape, 6);
    const Tensor out = run_variant(c.spec, c.shape, in);
    EXPECT_LT(relative_error(out, nystrom_fp64(c.shape, in, c.m, c.iterations)), 1e-5);
  }
}

// fp64 inverse by Gauss-Jordan elimination with partial pivoting.
Matrix gauss_jordan_inverse(Matrix a, int64_t n) {
  Matrix inv(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i) inv[i * n + i] = 1;
  for (int64_t c = 0; c < n; ++c) {
    int64_t p = c;
    for (int64_t r = c + 1; r < n; ++r)
      if (std::abs(a[r * n + c]) > std::abs(a[p * n + c])) p = r;
    for (int64_t j = 0; j < n; ++j)
      std::swap(a[c * n + j], a[p * n + j]), std::swap(inv[c * n + j], inv[p * n + j]);
    const double d = a[c * n + c];
    for (int64_t j = 0; j < n; ++j) a[c * n + j] /= d, inv[c * n + j] /= d;
    for (int64_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = a[r * n + c];
      for (int64_t j = 0; j < n; ++j)
        a[r * n + j] -= f * a[c * n + j], inv[r * n + j] -= f * inv[c * n + j];
    }
  }
  return inv;
}

// Row-stochastic like Ã (softmax rows), well conditioned by a strong diagonal: the fp32
// iteration converges to the true inverse within 6 iterations; fewer leave it visibly off.
TEST(Nystrom, PseudoInverseIterationConvergesToTheInverse) {
  std::mt19937_64 rng(8);
  std::normal_distribution<double> noise(0.0, 1.0);
  for (int64_t m : {8, 64, 100}) {
    SCOPED_TRACE(m);
    std::vector<float> a(m * m);
    for (int64_t i = 0; i < m; ++i) {
      double sum = 0;
      for (int64_t j = 0; j < m; ++j)
        sum += a[i * m + j] =
            float(std::exp(noise(rng) * 0.5 + (i == j ? std::log(double(m)) + 1 : 0)));
      for (int64_t j = 0; j < m; ++j) a[i * m + j] = float(a[i * m + j] / sum);
    }
    const Matrix inv = gauss_jordan_inverse(Matrix(a.begin(), a.end()), m);
    auto error_after = [&](int iterations) {
      std::vector<float> z(m * m), scratch(3 * m * m);
      nystrom::iterative_pinv(a.data(), m, iterations, z.data(), scratch.data());
      double e = 0, r = 0;
      for (int64_t i = 0; i < m * m; ++i)
        e += (z[i] - inv[i]) * (z[i] - inv[i]), r += inv[i] * inv[i];
      return std::sqrt(e / r);
    };
    EXPECT_LT(error_after(6), 1e-5);
    EXPECT_GT(error_after(1), 1e-3) << "one iteration should not have converged yet";
  }
}

// ---------------------------------------------------------------------------------------------
// Linear transformer (arXiv:2006.16236): φ(x) = elu(x) + 1,
// out_i = φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / φ(q_i)ᵀ Σ_j φ(k_j), j over all keys or j ≤ i (causal).

std::vector<double> phi(std::vector<double> x) {
  for (double& v : x) v = v > 0 ? v + 1 : std::exp(v);
  return x;
}

std::vector<double> linear_fp64(const Shape& s, const attnbench::Inputs& in) {
  const int64_t D = s.dim;
  std::vector<double> out;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      Matrix S(D * D, 0.0);
      std::vector<double> z(D, 0.0);
      auto add_key = [&](int64_t j) {
        const auto fk = phi(row(in.k, b, h, j)), vj = row(in.v, b, h, j);
        for (int64_t f = 0; f < D; ++f) {
          z[f] += fk[f];
          for (int64_t d = 0; d < D; ++d) S[f * D + d] += fk[f] * vj[d];
        }
      };
      if (!s.causal)
        for (int64_t j = 0; j < s.nk; ++j) add_key(j);
      for (int64_t i = 0; i < s.nq; ++i) {
        if (s.causal) add_key(i);
        const auto fq = phi(row(in.q, b, h, i));
        std::vector<double> o(D, 0.0);
        for (int64_t f = 0; f < D; ++f)
          for (int64_t d = 0; d < D; ++d) o[d] += fq[f] * S[f * D + d];
        const double den = dot(fq, z);
        for (double& x : o) x /= den;
        append(out, o);
      }
    }
  return out;
}

// Shapes over several 4096-row key blocks and 64-row chunks, with one head (the team shares
// it) and with three heads (each thread takes whole heads), at 1 and 2 threads.
TEST(Linear, MatchesFp64OfItsDefinitionCausalAndNot) {
  const std::vector<Shape> shapes = {
      Shape{1, 1, 4500, 4500, 16, true}, Shape{1, 3, 700, 700, 32, true},
      Shape{1, 1, 4500, 4200, 16, false}, Shape{2, 3, 300, 500, 32, false}};
  for (const Shape& s : shapes) {
    SCOPED_TRACE(s.str());
    auto in = random_inputs(s, 7);
    const std::vector<double> ref = linear_fp64(s, in);
    for (int threads : {1, 2}) {
      const Tensor out = with_threads(threads, [&] { return run_variant("linear", s, in); });
      EXPECT_LT(relative_error(out, ref), 1e-5) << threads << " threads";
    }
  }
}

// Changing keys and values from row t on leaves every output row before t bit-identical, with
// t inside the first chunk, at a chunk edge and inside the second key block.
TEST(Linear, CausalIsStrictlyCausal) {
  for (int64_t heads : {1, 3}) {
    const Shape s{1, heads, 4500, 4500, 16, true};
    auto in = random_inputs(s, 9);
    for (int64_t t : {int64_t(37), int64_t(128), int64_t(4200)}) {
      SCOPED_TRACE("heads " + std::to_string(heads) + ", t " + std::to_string(t));
      auto changed = random_inputs(s, 9);
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = t * s.dim; i < s.nk * s.dim; ++i)
          changed.k.head(0, h)[i] += 3.0f, changed.v.head(0, h)[i] *= -2.0f;
      const Tensor a = with_threads(2, [&] { return run_variant("linear", s, in); });
      const Tensor b = with_threads(2, [&] { return run_variant("linear", s, changed); });
      for (int64_t h = 0; h < heads; ++h) {
        EXPECT_TRUE(std::equal(a.head(0, h), a.head(0, h) + t * s.dim, b.head(0, h)))
            << "head " << h << ": a row before t changed";
        EXPECT_FALSE(std::equal(a.head(0, h) + t * s.dim, a.head(0, h) + s.nq * s.dim,
                                b.head(0, h) + t * s.dim))
            << "head " << h << ": the change did not reach rows from t on";
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Contract

TEST(LowRank, SameOutputBitsForOneAndTwoThreads) {
  for (const char* spec : {"linformer:k=100", "linformer:k=64,per_head=true", "nystrom",
                           "nystrom:landmarks=100", "linear"}) {
    for (const Shape& s : {Shape{1, 1, 1000, 1000, 32}, Shape{2, 3, 500, 500, 16}}) {
      SCOPED_TRACE(std::string(spec) + " " + s.str());
      auto in = random_inputs(s, 2);
      const Tensor one = with_threads(1, [&] { return run_variant(spec, s, in); });
      const Tensor two = with_threads(2, [&] { return run_variant(spec, s, in); });
      EXPECT_TRUE(all_finite(one));
      EXPECT_TRUE(bit_identical(one, two));
    }
  }
  const Shape causal{1, 1, 5000, 5000, 16, true};
  auto in = random_inputs(causal, 3);
  EXPECT_TRUE(bit_identical(with_threads(1, [&] { return run_variant("linear", causal, in); }),
                            with_threads(2, [&] { return run_variant("linear", causal, in); })));
}

// One-line usage errors that say what was wrong and what is valid.
TEST(LowRank, BadParametersAreOneLineUsageErrors) {
  struct Bad {
    std::string spec;
    Shape shape;
    std::string says;
  };
  const std::vector<Bad> bad = {
      {"linformer:k=300", Shape{1, 1, 512, 256, 16}, "use k <= Nk"},
      {"linformer", Shape{1, 1, 512, 512, 16, true}, "not defined for causal attention"},
      {"linformer:k=0", Shape{1, 1, 512, 512, 16}, "expected k=int in [1, 65536]"},
      {"nystrom:landmarks=65", Shape{1, 1, 64, 64, 16}, "use landmarks <= 64"},
      {"nystrom:landmarks=20", Shape{1, 1, 512, 16, 16}, "use landmarks <= 16"},
      {"nystrom:landmarks=0", Shape{1, 1, 64, 64, 16}, "expected landmarks=int in [1, 4096]"},
      {"nystrom:iterations=0", Shape{1, 1, 64, 64, 16}, "expected iterations=int in [1, 100]"},
      {"nystrom", Shape{1, 1, 512, 512, 16, true}, "not defined for causal attention"},
      {"linear:features=3", Shape{1, 1, 64, 64, 16}, "unknown parameter 'features'"},
  };
  for (const Bad& b : bad) {
    const std::string e = usage_error(b.spec, b.shape);
    EXPECT_NE(e.find(b.says), std::string::npos) << b.spec << ": '" << e << "'";
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
  EXPECT_EQ(usage_error("linformer:k=256", Shape{1, 1, 256, 256, 16}), "");
  EXPECT_EQ(usage_error("nystrom:landmarks=64", Shape{1, 1, 64, 100, 16}), "");
  EXPECT_EQ(usage_error("linear", Shape{1, 1, 64, 64, 16, true}), "");
  const CliResult r = run_cli("run --variant linformer --seq 512 --causal --reps 1");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("not defined for causal attention"), std::string::npos) << r.output;
}

// A sweep that lists both causal values runs Linformer non-causal and records its causal case
// as skipped rows with the reason (two n: Google Benchmark crashed on a family whose every run
// was skipped); a sweep of causal cases only is a usage error.
TEST(LowRank, SweepsSkipTheCausalCasesOfNonCausalVariants) {
  TempDir dir;
  const std::string base =
      "variant = linformer:k=16\nvariant = linear\nseq = 64,128\nheads = 1\n"
      "dim = 16\nreps = 1\nmin_time = 0.001\nthreads = 1\n";
  std::ofstream(dir.path + "/both.ini") << base << "causal = false\ncausal = true\n";
  std::ofstream(dir.path + "/causal.ini") << base << "causal = true\n";
  CliResult r = run_cli("sweep " + dir.path + "/both.ini --out " + dir.path + "/out --quiet");
  ASSERT_EQ(r.code, 0) << r.output;
  std::ifstream csv(dir.path + "/out/results.csv");
  const std::string all((std::istreambuf_iterator<char>(csv)), std::istreambuf_iterator<char>());
  EXPECT_NE(all.find("skipped: linformer is not defined for causal attention"), std::string::npos)
      << all;
  r = run_cli("sweep " + dir.path + "/causal.ini --out " + dir.path + "/out2 --quiet");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("not defined for causal attention"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace attn::test
