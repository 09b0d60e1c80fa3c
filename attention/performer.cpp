// `performer`: FAVOR+ random-feature attention (arXiv:2009.14794; docs/ALGORITHMS.md §Performer).
//
// out = φ(Q)·(φ(K)ᵀV) / (φ(Q)·(φ(K)ᵀ1)), φ a random feature map whose inner products estimate
// exp(q·k·scale), so the output approximates plain dense softmax attention in O(n·m·D) time.
// The sums, the causal prefix sums and the scheduling are the shared feature-map driver's
// (attention/feature_attention.h); this file supplies φ.
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 reductions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include "attention/feature_attention.h"
#include "attention/kernels/gemm.h"
#include "attention/kernels/vec_exp.h"
#include "attention/npy.h"
#include "attention/random.h"
#include "attention/registry.h"

namespace attn {
namespace {

using feature::dot;
using feature::HeadWork;
using feature::kBlockRows;
using kernels::sgemm;

enum class Kernel { Softmax, Relu, Trig };

// ReLU kernel's additive epsilon (performer-pytorch generalized_kernel, kernel_epsilon).
constexpr float kReluEps = 1e-3f;
constexpr int64_t kMaxFeatures = 1 << 16;

// ---------------------------------------------------------------------------------------------
// Random projection W [m, D] (docs/ALGORITHMS.md §Performer projection), generated in double.

// Q of A = QR (A is d x d, row-major) by Householder reflections, with column k multiplied
// by sign(R_kk) so that Q is Haar-distributed for Gaussian A (Mezzadri, math-ph/0609050;
// docs/ALGORITHMS.md §Performer projection). Returns Q row-major.
std::vector<double> haar_orthogonal(std::vector<double> a, int64_t d) {
  std::vector<double> vs(d * d, 0.0);  // reflector k in vs[k*d + k .. k*d + d-1]
  std::vector<double> sign_r(d, 1.0);
  for (int64_t k = 0; k < d; ++k) {
    double norm2 = 0;
    for (int64_t i = k; i < d; ++i) norm2 += a[i * d + k] * a[i * d + k];
    const double norm = std::sqrt(norm2), x0 = a[k * d + k];
    const double alpha = x0 >= 0 ? -norm : norm;  // R_kk (LAPACK's sign convention)
    sign_r[k] = alpha >= 0 ? 1.0 : -1.0;
    double* v = &vs[k * d];
    for (int64_t i = k; i < d; ++i) v[i] = a[i * d + k];
    v[k] -= alpha;
    double vnorm2 = 0;
    for (int64_t i = k; i < d; ++i) vnorm2 += v[i] * v[i];
    if (vnorm2 == 0) continue;  // column already e_k·alpha: H_k = I
    const double inv = 1.0 / std::sqrt(vnorm2);
    for (int64_t i = k; i < d; ++i) v[i] *= inv;
    for (int64_t j = k; j < d; ++j) {  // A[k:, j] -= 2 v (vᵀ A[k:, j])
      double dot = 0;
      for (int64_t i = k; i < d; ++i) dot += v[i] * a[i * d + j];
      for (int64_t i = k; i < d; ++i) a[i * d + j] -= 2 * dot * v[i];
    }
  }
  // Q = H_0 H_1 … H_{d-1}: apply the reflectors to the identity, last one first.
  std::vector<double> q(d * d, 0.0);
  for (int64_t i = 0; i < d; ++i) q[i * d + i] = 1.0;
  for (int64_t k = d - 1; k >= 0; --k) {
    const double* v = &vs[k * d];
    for (int64_t j = 0; j < d; ++j) {
      double dot = 0;
      for (int64_t i = k; i < d; ++i) dot += v[i] * q[i * d + j];
      for (int64_t i = k; i < d; ++i) q[i * d + j] -= 2 * dot * v[i];
    }
  }
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < d; ++j) q[i * d + j] *= sign_r[j];
  return q;
}

// Orthogonal: stacked blocks of d orthonormal rows (columns of a Haar Q), the last block
// truncated; rows then rescaled by the norm of an independent N(0, I_d) vector (each row is
// marginally N(0, I_d)) or by sqrt(d). iid: N(0, 1) entries.
std::vector<float> random_projection(int64_t m, int64_t d, bool ortho, bool norm_scaling,
                                     uint64_t seed) {
  // One sequential stream: the entries are drawn in the order this function consumes them.
  NormalSequence g(RandomStream(seed, RandomDomain::kPerformerProjection, 0));
  std::vector<float> w(m * d);
  if (!ortho) {
    for (auto& x : w) x = float(g());
    return w;
  }
  for (int64_t r0 = 0; r0 < m; r0 += d) {
    std::vector<double> a(d * d);
    for (auto& x : a) x = g();
    const std::vector<double> q = haar_orthogonal(std::move(a), d);
    for (int64_t r = r0; r < std::min(m, r0 + d); ++r)
      for (int64_t j = 0; j < d; ++j) w[r * d + j] = float(q[j * d + (r - r0)]);
  }
  for (int64_t r = 0; r < m; ++r) {
    double scale = std::sqrt(double(d));
    if (norm_scaling) {
      double n2 = 0;
      for (int64_t j = 0; j < d; ++j) {
        const double x = g();
        n2 += x * x;
      }
      scale = std::sqrt(n2);
    }
    for (int64_t j = 0; j < d; ++j) w[r * d + j] = float(w[r * d + j] * scale);
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// Vectorized pieces of the feature maps.

#if defined(__AVX512F__)
using kernels::exp16;
inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
}
#endif

float max_of(const float* x, int64_t n) {
  float mx = -INFINITY;
  int64_t i = 0;
#if defined(__AVX512F__)
  __m512 acc = _mm512_set1_ps(-INFINITY);
  for (; i + 16 <= n; i += 16) acc = _mm512_max_ps(acc, _mm512_loadu_ps(x + i));
  mx = _mm512_reduce_max_ps(acc);
#endif
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  return mx;
}

// x[i] = a·(exp(x[i] − shift) + eps)
void exp_features(float* x, int64_t n, float shift, float a, float eps) {
#if defined(__AVX512F__)
  const __m512 vs = _mm512_set1_ps(shift), va = _mm512_set1_ps(a), ve = _mm512_set1_ps(eps);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = tail_mask(n - i);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vs));
    _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(va, _mm512_add_ps(e, ve)));
  }
#else
  for (int64_t i = 0; i < n; ++i) x[i] = a * (std::exp(x[i] - shift) + eps);
#endif
}

// ---------------------------------------------------------------------------------------------

struct Config {
  int64_t features = 0;  // 0 = int(D·ln D)
  Kernel kernel = Kernel::Softmax;
  bool ortho = true;
  bool norm_scaling = true;
  float eps = 1e-4f;
  std::string eps_text = "1e-4";
  uint64_t seed = 0;
};

class Performer final : public feature::FeatureAttention {
 public:
  explicit Performer(const Config& c) : cfg_(c) {}

  std::string name() const override { return "performer"; }

  ParamValues params() const override {
    const char* kernels[] = {"softmax", "relu", "trig"};
    return {{"features", cfg_.features ? std::to_string(cfg_.features) : "auto"},
            {"kernel", kernels[int(cfg_.kernel)]},
            {"ortho", cfg_.ortho ? "true" : "false"},
            {"scaling", cfg_.norm_scaling ? "norm" : "sqrt"},
            {"eps", cfg_.eps_text},
            {"seed", std::to_string(cfg_.seed)}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (!(s.softmax_scale() > 0))
      throw UsageError(
          "performer needs a positive scale (its features estimate exp(scale·q·k) "
          "with x = q·sqrt(scale)), got " +
          std::to_string(s.scale));
    check_fits_in_memory(extra_bytes(s), "performer at " + s.str());
  }

  // Model FLOPs (docs/ALGORITHMS.md §FLOPs): projections 2·(Nq + Nk)·m·D, φ(K)ᵀV 2·Nk·M·D, φ(Q)·S
  // 2·Nq·M·D, denominators 2·Nq·M, column sums Nk·M; M = m (2m for trig). Causal executes more: the
  // block sums again (2·n·M·D) and the masked diagonal tiles (2·n·kChunkRows·(M + D)).
  double flops(const Shape& s) const override {
    const double m = features(s.dim), M = width(s.dim), D = s.dim;
    const double nq = s.nq, nk = s.nk;
    return s.heads_total() * (2 * (nq + nk) * m * D + 2 * (nk + nq) * M * D + 2 * nq * M + nk * M);
  }

  // The feature-map driver's φ(K), block sums and scratch (work_bytes), plus W itself.
  double extra_bytes(const Shape& s) const override {
    return work_bytes(s) + double(features(s.dim)) * s.dim * sizeof(float);
  }

  // DIR/features.npy: the raw W [m, D] (rows ω), without D^(-1/4) or m^(-1/2) folded in.
  void save_random(const std::string& dir, const Shape& s) const override {
    ensure_projection(s.dim);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw RuntimeError("cannot create directory " + dir + ": " + ec.message());
    write_npy(dir + "/features.npy", {features(s.dim), s.dim}, w_.data());
  }

  void load_random(const std::string& dir, const Shape& s) override {
    const std::string path = dir + "/features.npy";
    NpyArray a = read_npy(path);
    const int64_t m = features(s.dim);
    if (a.shape != std::vector<int64_t>{m, s.dim})
      throw RuntimeError(path + " must have shape [" + std::to_string(m) + ", " +
                         std::to_string(s.dim) + "] (features=m, head dim) for this instance");
    w_ = std::move(a.data);
    w_dim_ = s.dim;
  }

 private:
  int64_t features(int64_t d) const {
    if (cfg_.features) return cfg_.features;
    return std::max<int64_t>(1, int64_t(double(d) * std::log(double(d))));  // performer-pytorch
  }
  int64_t width(int64_t d) const override {
    return cfg_.kernel == Kernel::Trig ? 2 * features(d) : features(d);
  }

  void ensure_projection(int64_t d) const {
    if (w_dim_ == d) return;
    w_ = random_projection(features(d), d, cfg_.ortho, cfg_.norm_scaling, cfg_.seed);
    w_dim_ = d;
  }

  void project(const float* x, int64_t rows, int64_t d, float* f, int64_t ldf) const;
  void feature_rows(const float* x, int64_t rows, int64_t d, float* f, bool keys, float key_shift,
                    float* block_max) const;
  void prepare(const Shape& s) override {
    ensure_projection(s.dim);
    c_ = std::sqrt(s.softmax_scale());
  }
  void key_block_pass1(const Shape& s, HeadWork& h, int64_t b) const override;
  void finish_key_block(const Shape& s, HeadWork& h, int64_t b) const override;
  float key_shift(const HeadWork& h, int64_t blocks) const override;
  void query_features(const float* x, int64_t rows, int64_t d, float* f) const override {
    feature_rows(x, rows, d, f, false, 0.0f, nullptr);
  }

  Config cfg_;
  // W [m, D] for head dim w_dim_: drawn from the seed on first use, or loaded.
  mutable std::vector<float> w_;
  mutable int64_t w_dim_ = 0;
  float c_ = 1;  // data normalizer sqrt(scale) = D^(-1/4) by default
};

// f[r, 0:m] = c·x_r·Wᵀ
void Performer::project(const float* x, int64_t rows, int64_t d, float* f, int64_t ldf) const {
  sgemm(false, true, rows, features(d), d, c_, x, d, w_.data(), d, 0.0f, f, ldf);
}

// Turns rows of x into φ(x) in f [rows, M] (docs/ALGORITHMS.md §Performer features).
// Queries: softmax subtracts the row's own max of u; trig drops exp(‖x'‖²/2) (a per-row
// factor, cancels in the normalization). Keys: the (batch, head)'s key_shift is subtracted
// (max of u for softmax, max of ‖x'‖²/2 for trig). With block_max given (keys, first pass),
// only u is computed and the block's contribution to that maximum is returned instead.
void Performer::feature_rows(const float* x, int64_t rows, int64_t d, float* f, bool keys,
                             float key_shift, float* block_max) const {
  const int64_t m = features(d), M = width(d);
  project(x, rows, d, f, M);
  const float a = 1.0f / std::sqrt(float(m)), c2 = c_ * c_;
  auto half_norm2 = [&](const float* xr) { return 0.5f * c2 * dot(xr, xr, d); };
  float bmax = -INFINITY;
  for (int64_t r = 0; r < rows; ++r) {
    float* fr = f + r * M;
    const float* xr = x + r * d;
    switch (cfg_.kernel) {
      case Kernel::Softmax:
        if (block_max) {
          bmax = std::max(bmax, max_of(fr, m));
        } else {
          const float shift = keys ? key_shift : max_of(fr, m);
          exp_features(fr, m, shift + half_norm2(xr), a, cfg_.eps);
        }
        break;
      case Kernel::Relu:
#pragma omp simd
        for (int64_t i = 0; i < m; ++i) fr[i] = std::max(fr[i], 0.0f) + kReluEps;
        break;
      case Kernel::Trig: {
        const float h = half_norm2(xr);
        if (block_max) {
          bmax = std::max(bmax, h);
          break;
        }
        const float amp = keys ? a * std::exp(h - key_shift) : a;
        for (int64_t i = 0; i < m; ++i) {
          const float u = fr[i];
          fr[i] = amp * std::sin(u), fr[m + i] = amp * std::cos(u);
        }
        break;
      }
    }
  }
  if (block_max) *block_max = bmax;
}

// Projects key block b into φ(K) storage and records its maximum (softmax, trig); the ReLU
// features need no shift and are final after this pass.
void Performer::key_block_pass1(const Shape& s, HeadWork& h, int64_t b) const {
  const int64_t d = s.dim, M = width(d), r0 = b * kBlockRows;
  const int64_t rows = std::min(kBlockRows, s.nk - r0);
  float* f = h.kf.data() + r0 * M;
  feature_rows(h.k + r0 * d, rows, d, f, true, 0.0f,
               cfg_.kernel == Kernel::Relu ? nullptr : &h.bmax[b]);
}

// Finishes φ(K) of block b (shift known now); the driver then adds its partial sums.
void Performer::finish_key_block(const Shape& s, HeadWork& h, int64_t b) const {
  const int64_t d = s.dim, m = features(d), M = width(d), r0 = b * kBlockRows;
  const int64_t rows = std::min(kBlockRows, s.nk - r0);
  float* f = h.kf.data() + r0 * M;
  const float* x = h.k + r0 * d;
  const float a = 1.0f / std::sqrt(float(m)), c2 = c_ * c_;
  if (cfg_.kernel == Kernel::Softmax) {
    for (int64_t r = 0; r < rows; ++r)
      exp_features(f + r * M, m, h.shift + 0.5f * c2 * dot(x + r * d, x + r * d, d), a, cfg_.eps);
  } else if (cfg_.kernel == Kernel::Trig) {
    feature_rows(x, rows, d, f, true, h.shift, nullptr);
  }
}

float Performer::key_shift(const HeadWork& h, int64_t blocks) const {
  return cfg_.kernel == Kernel::Relu ? 0.0f : max_of(h.bmax.data(), blocks);
}

Config parse_config(const Params& p) {
  Config c;
  const std::string& m = p.get("features");
  if (m != "auto") {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(m.c_str(), &end, 10);
    if (m.empty() || *end != '\0' || errno || v < 1 || v > kMaxFeatures)
      throw UsageError("performer: features=" + m +
                       " is invalid; expected auto or an integer in [1, " +
                       std::to_string(kMaxFeatures) + "]");
    c.features = v;
  }
  const std::string& kern = p.get("kernel");
  c.kernel = kern == "relu" ? Kernel::Relu : kern == "trig" ? Kernel::Trig : Kernel::Softmax;
  c.ortho = p.get_bool("ortho");
  c.norm_scaling = p.get("scaling") == "norm";
  c.eps = float(p.get_float("eps"));
  c.eps_text = p.get("eps");
  c.seed = uint64_t(p.get_int("seed"));
  return c;
}

}  // namespace

VariantInfo performer_variant() {
  using K = ParamSpec::Kind;
  return {
      "performer",
      "Performer / FAVOR+ random-feature attention (arXiv:2009.14794): approximates plain dense "
      "softmax attention by φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1) with m random features; causal by "
      "block-wise prefix sums. O(n·m·D) time, extra memory O(n·m + m·D) per concurrent head. "
      "The random matrix W [m, D] (raw rows ω, no D^-1/4 or m^-1/2 folded in) is exported / "
      "imported as DIR/features.npy by `apply --random-out/--random-in`.",
      {{"features", K::Text, "auto",
        "random features m: an integer >= 1, or auto = int(D·ln D) as in performer-pytorch "
        "(266 at D = 64; google-research's JAX default is 256)"},
       {"kernel",
        K::Choice,
        "softmax",
        "softmax: positive features exp(ω·x - |x|^2/2)/sqrt(m), x = q·D^-1/4; relu: "
        "ReLU(ω·x) + 1e-3; trig: sin/cos features (2m columns), unstable, for the paper's "
        "comparison",
        0,
        0,
        {"softmax", "relu", "trig"}},
       {"ortho", K::Bool, "true",
        "orthogonal random features (blocks of sign-fixed QR Gaussian matrices); false = iid"},
       {"scaling",
        K::Choice,
        "norm",
        "orthogonal row norms: norm = norms of independent Gaussian vectors (rows marginally "
        "N(0, I)), sqrt = sqrt(D)",
        0,
        0,
        {"norm", "sqrt"}},
       {"eps", K::Float, "1e-4",
        "softmax-kernel stabilizer added to every feature (performer-pytorch 1e-4, JAX 1e-6)", 0,
        1},
       {"seed", K::Int, "0", "seed of the random projection", 0, 9.0e15}},
      [](const Params& p) { return std::make_unique<Performer>(parse_config(p)); }};
}

}  // namespace attn
