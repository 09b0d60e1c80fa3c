// `performer`: FAVOR+ random-feature attention (arXiv:2009.14794; docs/ALGORITHMS.md §Performer).
//
// out = φ(Q)·(φ(K)ᵀV) / (φ(Q)·(φ(K)ᵀ1)), φ a random feature map whose inner products estimate
// exp(q·k·scale), so the output approximates plain dense softmax attention in O(n·m·D) time.
// The causal mode uses prefix sums of φ(K_j)ᵀV_j, computed block-wise so the work is GEMMs, with
// a key shift that only looks backwards (docs/ALGORITHMS.md §Performer causal shift): causal row
// i is the non-causal estimator on keys 0…i, and depends on nothing after i.
//
// Determinism: every sum over sequence positions is taken over fixed-size blocks (kBlockRows,
// and chunks of kChunkRows inside a causal block) whose partial results are combined in
// order, and every oneDNN call runs inside the parallel region (single-threaded there), so
// outputs do not depend on the thread count or on which thread did what.
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <omp.h>

// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 reductions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <vector>

#include "attention/kernels/gemm.h"
#include "attention/kernels/vec_exp.h"
#include "attention/npy.h"
#include "attention/random.h"
#include "attention/registry.h"

namespace attn {
namespace {

using kernels::sgemm;

enum class Kernel { Softmax, Relu, Trig };

// Key rows per partial sum of φ(K)ᵀV: fixed, so reductions never depend on the thread count.
constexpr int64_t kBlockRows = 4096;
// Causal: rows per diagonal tile (masked φ(Q_c)φ(K_c)ᵀ). Its cost per row, 2·C·(M + D), is
// small next to the 8·M·D of the rest at C = 64 (M = 256, D = 64: 41k against 131k FLOPs).
constexpr int64_t kChunkRows = 64;
// Non-causal: query rows per task (one feature-map buffer of this many rows per thread).
constexpr int64_t kQueryRows = 256;
// ReLU kernel's additive epsilon (performer-pytorch generalized_kernel, kernel_epsilon).
constexpr float kReluEps = 1e-3f;
constexpr int64_t kMaxFeatures = 1 << 16;
constexpr int64_t kMaxRun = 256;  // columns combined at once (stack buffer)

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

// z[f] += Σ_r f_r[f] over `rows` rows of stride ld, in row order.
void add_column_sums(const float* f, int64_t rows, int64_t ld, int64_t n, float* z) {
  for (int64_t r = 0; r < rows; ++r)
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) z[i] += f[r * ld + i];
}

float dot(const float* a, const float* b, int64_t n) {
  float s = 0;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = tail_mask(n - i);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), acc);
  }
  s = _mm512_reduce_add_ps(acc);
#else
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
#endif
  return s;
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

// One (batch, head) being processed: its inputs, φ(K) and per-block partial sums.
struct HeadWork {
  const float *q, *k, *v;
  float* out;
  FloatBuffer kf;    // φ(K) [nk, M]
  FloatBuffer sums;  // per key block: [M·D] φ(K_b)ᵀV_b then [M] φ(K_b)ᵀ1
  FloatBuffer bmax;  // per key block: max of u (softmax) or of ‖x'‖²/2 (trig)
  float shift = 0;   // the (batch, head)'s key shift
  FloatBuffer g;     // causal: per key row j, its running shift (the max over rows <= j)
};

class Performer final : public Attention {
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

  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override;

  // Model FLOPs (docs/ALGORITHMS.md §FLOPs): projections 2·(Nq + Nk)·m·D, φ(K)ᵀV 2·Nk·M·D, φ(Q)·S
  // 2·Nq·M·D, denominators 2·Nq·M, column sums Nk·M; M = m (2m for trig). Causal executes more: the
  // block sums again (2·n·M·D) and the masked diagonal tiles (2·n·kChunkRows·(M + D)).
  double flops(const Shape& s) const override {
    const double m = features(s.dim), M = width(s.dim), D = s.dim;
    const double nq = s.nq, nk = s.nk;
    return s.heads_total() * (2 * (nq + nk) * m * D + 2 * (nk + nq) * M * D + 2 * nq * M + nk * M);
  }

  // Per concurrently processed head: φ(K) and the block partial sums; per thread: the
  // feature buffer of a query task (causal: plus the diagonal tile and the running state);
  // plus W itself.
  double extra_bytes(const Shape& s) const override {
    const double M = width(s.dim), D = s.dim;
    const double blocks =
        double(checked_add(s.nk, kBlockRows - 1, "performer key blocks") / kBlockRows);
    const double per_head =
        s.nk * M + blocks * (double(state_floats(s)) + 1) + (s.causal ? s.nk : 0);
    const double per_thread = double(scratch_floats(s));
    const double T = omp_get_max_threads();
    const double G = s.heads_total() >= T ? T : 1;
    return (G * per_head + T * per_thread + features(s.dim) * D) * sizeof(float);
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
  int64_t width(int64_t d) const {
    return cfg_.kernel == Kernel::Trig ? 2 * features(d) : features(d);
  }

  void ensure_projection(int64_t d) const {
    if (w_dim_ == d) return;
    w_ = random_projection(features(d), d, cfg_.ortho, cfg_.norm_scaling, cfg_.seed);
    w_dim_ = d;
  }

  void project(const float* x, int64_t rows, int64_t d, float* f, int64_t ldf) const;
  void feature_rows(const float* x, int64_t rows, int64_t d, float* f, bool keys, float key_shift,
                    float* block_max, float* row_max = nullptr) const;
  void key_block_pass1(const Shape& s, HeadWork& h, int64_t b) const;
  void running_shift(const Shape& s, HeadWork& h, int64_t b) const;
  void causal_key_features(const Shape& s, HeadWork& h, int64_t r0, int64_t rows) const;
  void key_block_pass2(const Shape& s, HeadWork& h, int64_t b, bool want_sums,
                       float* scratch) const;
  void query_rows(const Shape& s, HeadWork& h, int64_t row0, int64_t rows, float* scratch) const;
  template <class Before>
  void accumulate_block(const Shape& s, const HeadWork& h, int64_t r0, int64_t end, Before&& before,
                        float* sum, float* keys) const;
  void causal_block(const Shape& s, HeadWork& h, int64_t b, const float* start,
                    float* scratch) const;
  void combine_blocks(const Shape& s, HeadWork& h, int64_t f) const;
  float key_shift(const HeadWork& h, int64_t blocks) const;
  void head_alone(const Shape& s, HeadWork& h, float* scratch) const;
  void head_shared(const Shape& s, HeadWork& h, float* scratch, std::exception_ptr& error) const;
  // Floats of one running state: S [M·D], z [M], and (causal) Σ v [D] for the ε term.
  int64_t state_floats(const Shape& s) const {
    const int64_t M = width(s.dim);
    return M * s.dim + M + (s.causal ? s.dim : 0);
  }
  size_t scratch_floats(const Shape& s) const {
    const int64_t M = width(s.dim);
    return s.causal ? size_t(2 * state_floats(s) + kChunkRows * (2 * M + kChunkRows))
                    : size_t(kQueryRows * M);
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
// only u is computed and the block's contribution to that maximum is returned instead (and,
// with row_max given, each row's own contribution).
void Performer::feature_rows(const float* x, int64_t rows, int64_t d, float* f, bool keys,
                             float key_shift, float* block_max, float* row_max) const {
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
          const float mx = max_of(fr, m);
          bmax = std::max(bmax, mx);
          if (row_max) row_max[r] = mx;
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
          if (row_max) row_max[r] = h;
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
  float* row_max = s.causal ? h.g.data() + r0 : nullptr;
  feature_rows(h.k + r0 * d, rows, d, f, true, 0.0f,
               cfg_.kernel == Kernel::Relu ? nullptr : &h.bmax[b], row_max);
  if (row_max && cfg_.kernel == Kernel::Relu) std::fill(row_max, row_max + rows, 0.0f);
}

// Causal, after pass 1 of every block: turns the row maxima of block b into running maxima
// g_j = max over rows <= j (the backward-looking key shift). Max is exact, so the result does
// not depend on which thread did which block. ReLU features have no shift (g = 0).
void Performer::running_shift(const Shape& s, HeadWork& h, int64_t b) const {
  if (cfg_.kernel == Kernel::Relu) return;
  const int64_t r0 = b * kBlockRows, end = std::min(s.nk, r0 + kBlockRows);
  float carry = b ? max_of(h.bmax.data(), b) : -INFINITY;
  for (int64_t r = r0; r < end; ++r) h.g[r] = carry = std::max(carry, h.g[r]);
}

// The shift of the state that holds rows < r: the running shift of row r - 1 (row 0's for r = 0,
// where the state is still zero).
float shift_before(const HeadWork& h, int64_t r) {
  return h.g.data()[r > 0 ? r - 1 : 0];
}

// Causal key features of rows [r0, r0 + rows) from the stored u, each row with its own running
// shift g_j and without ε (the ε part is added exactly in causal_block):
// softmax m^(-1/2)·exp(u − h − g_j), trig m^(-1/2)·exp(h − g_j)·[sin u, cos u].
void Performer::causal_key_features(const Shape& s, HeadWork& h, int64_t r0, int64_t rows) const {
  const int64_t d = s.dim, m = features(d), M = width(d);
  const float a = 1.0f / std::sqrt(float(m)), c2 = c_ * c_;
  for (int64_t r = r0; r < r0 + rows; ++r) {
    float* fr = h.kf.data() + r * M;
    const float* x = h.k + r * d;
    const float half_norm2 = 0.5f * c2 * dot(x, x, d);
    if (cfg_.kernel == Kernel::Softmax) {
      exp_features(fr, m, h.g[r] + half_norm2, a, 0.0f);
    } else if (cfg_.kernel == Kernel::Trig) {
      const float amp = a * std::exp(half_norm2 - h.g[r]);
      for (int64_t i = 0; i < m; ++i) {
        const float u = fr[i];
        fr[i] = amp * std::sin(u), fr[m + i] = amp * std::cos(u);
      }
    }
  }
}

// Finishes φ(K) of block b (shift known now) and, if wanted, its partial sums φ(K_b)ᵀV_b and
// φ(K_b)ᵀ1.
void Performer::key_block_pass2(const Shape& s, HeadWork& h, int64_t b, bool want_sums,
                                float* scratch) const {
  const int64_t d = s.dim, m = features(d), M = width(d), r0 = b * kBlockRows;
  const int64_t rows = std::min(kBlockRows, s.nk - r0);
  float* f = h.kf.data() + r0 * M;
  const float* x = h.k + r0 * d;
  const float a = 1.0f / std::sqrt(float(m)), c2 = c_ * c_;
  if (s.causal) {
    causal_key_features(s, h, r0, rows);
  } else if (cfg_.kernel == Kernel::Softmax) {
    for (int64_t r = 0; r < rows; ++r)
      exp_features(f + r * M, m, h.shift + 0.5f * c2 * dot(x + r * d, x + r * d, d), a, cfg_.eps);
  } else if (cfg_.kernel == Kernel::Trig) {
    feature_rows(x, rows, d, f, true, h.shift, nullptr);
  }
  if (!want_sums) return;
  float* sum = h.sums.data() + b * state_floats(s);
  if (!s.causal) {
    sgemm(true, false, M, d, rows, 1.0f, f, M, h.v + r0 * d, d, 0.0f, sum, d);
    std::fill(sum + M * d, sum + M * d + M, 0.0f);
    add_column_sums(f, rows, M, M, sum + M * d);
  } else {
    std::fill(sum, sum + state_floats(s), 0.0f);
    accumulate_block(
        s, h, r0, r0 + rows, [](int64_t, int64_t) {}, sum, scratch);
  }
}

// Non-causal output rows: φ(Q)·S / φ(Q)·z with S, z the head's totals (in sums[0]).
void Performer::query_rows(const Shape& s, HeadWork& h, int64_t row0, int64_t rows,
                           float* qf) const {
  const int64_t d = s.dim, M = width(d);
  feature_rows(h.q + row0 * d, rows, d, qf, false, 0.0f, nullptr);
  const float* S = h.sums.data();
  const float* z = S + M * d;
  float* o = h.out + row0 * d;
  sgemm(false, false, rows, d, M, 1.0f, qf, M, S, d, 0.0f, o, d);
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / dot(qf + r * M, z, M);
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) o[r * d + j] *= inv;
  }
}

// Scales rows [c0, c0 + rows) of the causal φ(K) from their own running shifts g_j to the shift
// `to` (>= every g_j there) into `keys`; returns φ(K) itself when every factor is 1 (the same
// bits: multiplying by 1 is exact).
const float* rescaled_keys(const HeadWork& h, int64_t c0, int64_t rows, int64_t M, float to,
                           float* keys) {
  bool all_one = true;
  for (int64_t r = c0; r < c0 + rows; ++r) all_one = all_one && h.g.data()[r] == to;
  const float* kf = h.kf.data() + c0 * M;
  if (all_one) return kf;
  for (int64_t r = 0; r < rows; ++r) {
    const float f = std::exp(h.g.data()[c0 + r] - to);
#pragma omp simd
    for (int64_t i = 0; i < M; ++i) keys[r * M + i] = kf[r * M + i] * f;
  }
  return keys;
}

// out = start·factor + add on the S and z parts (exactly rounded fma: the same bits in every
// code path that folds states), out = start + add on the Σ v part.
void fold_state(const float* start, float factor, const float* add, float* out, int64_t scaled,
                int64_t total) {
#pragma omp simd
  for (int64_t i = 0; i < scaled; ++i) out[i] = std::fma(start[i], factor, add[i]);
  for (int64_t i = scaled; i < total; ++i) out[i] = start[i] + add[i];
}

// Runs over the chunks of rows [r0, end) in order, calling before(c0, rows) for each chunk
// and then adding the chunk to the causal state sum [M·D + M + D] of rows [r0, c0): sum holds
// Σ_j φ(k_j)·exp(g_j − G)ᵀ v_j, Σ_j φ(k_j)·exp(g_j − G) and Σ_j v_j, G = shift_before(c0), and
// is moved to the next chunk's G (a factor <= 1) before the chunk is added. Both the causal
// outputs and the block sums of the team-shared path accumulate through this one loop, so a
// block's sum has the same bits whichever path computed it. `keys`: kChunkRows·M scratch.
template <class Before>
void Performer::accumulate_block(const Shape& s, const HeadWork& h, int64_t r0, int64_t end,
                                 Before&& before, float* sum, float* keys) const {
  const int64_t d = s.dim, M = width(d);
  for (int64_t c0 = r0; c0 < end; c0 += kChunkRows) {
    const int64_t rows = std::min(kChunkRows, end - c0);
    before(c0, rows);
    const float to = shift_before(h, c0 + rows);
    const float factor = std::exp(shift_before(h, c0) - to);
    if (factor != 1.0f)
#pragma omp simd
      for (int64_t i = 0; i < M * d + M; ++i) sum[i] *= factor;
    const float* kf = rescaled_keys(h, c0, rows, M, to, keys);
    sgemm(true, false, M, d, rows, 1.0f, kf, M, h.v + c0 * d, d, 1.0f, sum, d);
    add_column_sums(kf, rows, M, M, sum + M * d);
    add_column_sums(h.v + c0 * d, rows, d, d, sum + M * d + M);
  }
}

// Causal output rows of key block b, given start = the state of all blocks before b (at shift
// shift_before(r0)). Row i of chunk c uses the shift g_i (docs/ALGORITHMS.md §Performer causal
// shift): with P the state of rows < c0 at shift G = shift_before(c0),
//   num_i = exp(G − g_i)·φ(q_i)·P_S + Σ_{c0<=j<=i} φ(q_i)·φ(k_j)·exp(g_j − g_i)·v_j +
//   ε'·σ_i·Σ_{j<=i} v_j den_i = exp(G − g_i)·φ(q_i)·P_z + Σ_{c0<=j<=i} φ(q_i)·φ(k_j)·exp(g_j − g_i)
//   + ε'·σ_i·(i + 1)
// with ε' = ε·m^(-1/2) (softmax; 0 otherwise) and σ_i = Σ_f φ(q_i)_f: exactly the features
// m^(-1/2)·(exp(u − h − g_i) + ε) for every key j <= i. Returns R (the block's own sum) in
// scratch.
void Performer::causal_block(const Shape& s, HeadWork& h, int64_t b, const float* start,
                             float* scratch) const {
  const int64_t d = s.dim, M = width(d), r0 = b * kBlockRows, state = state_floats(s);
  const int64_t end = std::min(s.nk, r0 + kBlockRows);
  const float eps =
      cfg_.kernel == Kernel::Softmax ? cfg_.eps * (1.0f / std::sqrt(float(features(d)))) : 0.0f;
  float* run = scratch;                          // R [state]
  float* total = run + state;                    // P: start + R at the chunk's shift
  float* qf = total + state;                     // φ(Q_c) [kChunkRows, M]
  float* tile = qf + kChunkRows * M;             // [kChunkRows, kChunkRows]
  float* keys = tile + kChunkRows * kChunkRows;  // rescaled φ(K_c) [kChunkRows, M]
  std::fill(run, run + state, 0.0f);
  accumulate_block(
      s, h, r0, end,
      [&](int64_t c0, int64_t rows) {
        const float* kf = h.kf.data() + c0 * M;
        const float* g = h.g.data() + c0;
        const float G = shift_before(h, c0);
        float* o = h.out + c0 * d;
        fold_state(start, std::exp(shift_before(h, r0) - G), run, total, M * d + M, state);
        feature_rows(h.q + c0 * d, rows, d, qf, false, 0.0f, nullptr);
        sgemm(false, true, rows, rows, M, 1.0f, qf, M, kf, M, 0.0f, tile, kChunkRows);
        for (int64_t r = 0; r < rows; ++r) {
          float* t = tile + r * kChunkRows;
          std::fill(t + r + 1, t + rows, 0.0f);
          for (int64_t j = 0; j < r; ++j)
            if (g[j] != g[r]) t[j] *= std::exp(g[j] - g[r]);
        }
        sgemm(false, false, rows, d, rows, 1.0f, tile, kChunkRows, h.v + c0 * d, d, 0.0f, o, d);
        float sigma[kChunkRows];
        for (int64_t r = 0; r < rows; ++r) {
          float* qr = qf + r * M;
          sigma[r] = 0;
          for (int64_t i = 0; i < M; ++i) sigma[r] += qr[i];
          if (g[r] != G) {
            const float f = std::exp(G - g[r]);
#pragma omp simd
            for (int64_t i = 0; i < M; ++i) qr[i] *= f;
          }
        }
        sgemm(false, false, rows, d, M, 1.0f, qf, M, total, d, 1.0f, o, d);
        float* vsum = total + M * d + M;  // Σ v over rows <= c0 + r, advanced row by row
        for (int64_t r = 0; r < rows; ++r) {
          float den = dot(qf + r * M, total + M * d, M);
          for (int64_t j = 0; j <= r; ++j) den += tile[r * kChunkRows + j];
          float* orow = o + r * d;
          if (eps != 0.0f) {
            const float* vr = h.v + (c0 + r) * d;
            const float w = eps * sigma[r];
            for (int64_t j = 0; j < d; ++j) vsum[j] += vr[j], orow[j] += w * vsum[j];
            den += w * float(c0 + r + 1);
          }
          const float inv = 1.0f / den;
#pragma omp simd
          for (int64_t j = 0; j < d; ++j) orow[j] *= inv;
        }
      },
      run, keys);
}

// Causal: the factor that moves a state from block b's starting shift to block b + 1's.
float block_factor(const HeadWork& h, int64_t b, int64_t nk) {
  return std::exp(shift_before(h, b * kBlockRows) -
                  shift_before(h, std::min(nk, (b + 1) * kBlockRows)));
}

// Folds the block sums of feature row f (f = M: the φ(K)ᵀ1 row; causal f = M + 1: the Σ v row)
// in block order: non-causal totals into block slot 0, causal exclusive prefixes in place of
// each slot, each moved to the next block's shift as fold_state does.
void Performer::combine_blocks(const Shape& s, HeadWork& h, int64_t f) const {
  const int64_t d = s.dim, M = width(d), state = state_floats(s);
  const int64_t blocks = (s.nk + kBlockRows - 1) / kBlockRows;
  const int64_t off = f < M ? f * d : f == M ? M * d : M * d + M, len = f == M ? M : d;
  float* base = h.sums.data();
  float run[kMaxRun];
  for (int64_t j0 = 0; j0 < len; j0 += kMaxRun) {
    const int64_t n = std::min(kMaxRun, len - j0);
    std::fill(run, run + n, 0.0f);
    for (int64_t b = 0; b < blocks; ++b) {
      float* slot = base + b * state + off + j0;
      const bool has_sum = !s.causal || b + 1 < blocks;  // the causal last block has none
      if (!s.causal) {
        for (int64_t j = 0; j < n; ++j) run[j] += slot[j];
        continue;
      }
      const float factor = f <= M && has_sum ? block_factor(h, b, s.nk) : 1.0f;
      for (int64_t j = 0; j < n; ++j) {
        const float x = has_sum ? slot[j] : 0.0f;
        slot[j] = run[j];
        run[j] = f <= M ? std::fma(run[j], factor, x) : run[j] + x;
      }
    }
    if (!s.causal) std::copy(run, run + n, base + off + j0);
  }
}

float Performer::key_shift(const HeadWork& h, int64_t blocks) const {
  return cfg_.kernel == Kernel::Relu ? 0.0f : max_of(h.bmax.data(), blocks);
}

// The steps of one head, each a list of independent tasks. Either one thread runs them all
// in order (head_alone) or the team shares each step (head_shared); the arithmetic of every
// task is the same, so both give the same bits.
void Performer::head_alone(const Shape& s, HeadWork& h, float* scratch) const {
  const int64_t blocks = (s.nk + kBlockRows - 1) / kBlockRows;
  for (int64_t b = 0; b < blocks; ++b) key_block_pass1(s, h, b);
  h.shift = key_shift(h, blocks);
  if (s.causal)
    for (int64_t b = 0; b < blocks; ++b) running_shift(s, h, b);
  // Causal: block b's start is block b-1's start plus its own sum, which causal_block
  // returns, so the block sums need no separate pass (the shared path's combine_blocks adds
  // them in the same order).
  for (int64_t b = 0; b < blocks; ++b) key_block_pass2(s, h, b, !s.causal, scratch);
  if (s.causal) {
    const int64_t state = state_floats(s), M = width(s.dim);
    float* start = h.sums.data();
    std::fill(start, start + state, 0.0f);
    for (int64_t b = 0; b < blocks; ++b) {
      causal_block(s, h, b, start, scratch);
      if (b + 1 == blocks) break;
      float* next = start + state;
      fold_state(start, block_factor(h, b, s.nk), scratch, next, M * s.dim + M, state);
      start = next;
    }
  } else {
    for (int64_t f = 0; f <= width(s.dim); ++f) combine_blocks(s, h, f);
    for (int64_t r0 = 0; r0 < s.nq; r0 += kQueryRows)
      query_rows(s, h, r0, std::min(kQueryRows, s.nq - r0), scratch);
  }
}

// Runs body(i) for i in [0, n) over the team, dynamically scheduled; the first exception is
// kept for the caller to rethrow after the parallel region.
template <class Body>
void parallel_tasks(int64_t n, std::exception_ptr& error, Body&& body) {
#pragma omp for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    try {
      body(i);
    } catch (...) {
#pragma omp critical(performer_error)
      if (!error) error = std::current_exception();
    }
  }
}

// Called by every thread of the team.
void Performer::head_shared(const Shape& s, HeadWork& h, float* scratch,
                            std::exception_ptr& error) const {
  const int64_t blocks = (s.nk + kBlockRows - 1) / kBlockRows;
  const int64_t qtasks = (s.nq + kQueryRows - 1) / kQueryRows;
  parallel_tasks(blocks, error, [&](int64_t b) { key_block_pass1(s, h, b); });
#pragma omp single
  h.shift = key_shift(h, blocks);
  if (s.causal) parallel_tasks(blocks, error, [&](int64_t b) { running_shift(s, h, b); });
  parallel_tasks(blocks, error, [&](int64_t b) {
    key_block_pass2(s, h, b, !s.causal || b + 1 < blocks, scratch);
  });
  parallel_tasks(width(s.dim) + 1 + (s.causal ? 1 : 0), error,
                 [&](int64_t f) { combine_blocks(s, h, f); });
  if (s.causal) {
    parallel_tasks(blocks, error, [&](int64_t b) {
      causal_block(s, h, b, h.sums.data() + b * state_floats(s), scratch);
    });
  } else {
    parallel_tasks(qtasks, error, [&](int64_t t) {
      const int64_t r0 = t * kQueryRows;
      query_rows(s, h, r0, std::min(kQueryRows, s.nq - r0), scratch);
    });
  }
}

void Performer::forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                        Tensor& out) {
  const int64_t d = s.dim, M = width(d);
  ensure_projection(d);
  c_ = std::sqrt(s.softmax_scale());
  const int64_t heads = s.heads_total(), threads = omp_get_max_threads();
  const int64_t blocks = (s.nk + kBlockRows - 1) / kBlockRows;
  // Enough heads at once to occupy every thread and no more: memory is per head. With at
  // least as many heads as threads each thread takes whole heads (no barriers, which cost a
  // scheduler slice each on a busy machine); otherwise the team shares one head at a time.
  const bool alone = heads >= threads;
  std::vector<HeadWork> work(alone ? threads : 1);
  for (auto& w : work) {
    w.kf = FloatBuffer(size_t(s.nk) * M);
    w.sums = FloatBuffer(size_t(blocks) * size_t(state_floats(s)));
    w.bmax = FloatBuffer(size_t(blocks));
    if (s.causal) w.g = FloatBuffer(size_t(s.nk));
  }
  auto bind = [&](HeadWork& w, int64_t bh) {
    const int64_t b = bh / s.heads, hh = bh % s.heads;
    w.q = q.head(b, hh), w.k = k.head(b, hh), w.v = v.head(b, hh), w.out = out.head(b, hh);
  };
  std::exception_ptr error;
#pragma omp parallel
  {
    FloatBuffer scratch(scratch_floats(s));
    if (alone) {
      HeadWork& w = work[omp_get_thread_num()];
      parallel_tasks(heads, error, [&](int64_t bh) {
        bind(w, bh);
        head_alone(s, w, scratch.data());
      });
    } else {
      for (int64_t bh = 0; bh < heads; ++bh) {
#pragma omp single
        bind(work[0], bh);
        head_shared(s, work[0], scratch.data(), error);
      }
    }
  }
  if (error) std::rethrow_exception(error);
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
      "Causal key stabilizer: row i shifts by the running max over keys j <= i, so causal row i "
      "is the non-causal estimator on keys 0..i and strictly causal; performer-pytorch (and the "
      "JAX/TF code) shift by the max over all keys, which with eps > 0 leaks future keys into "
      "earlier rows, so attnbench's causal outputs differ from theirs there. "
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
