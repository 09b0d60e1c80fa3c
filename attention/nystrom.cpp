// `nystrom`: Nyströmformer's landmark approximation of the softmax matrix (Xiong et al.,
// arXiv:2102.03902; docs/ALGORITHMS.md §Nyström).
//
//   out = F̃ · Ã⁺ · (B̃ · V),   F̃ = softmax(s·Q K̃ᵀ) [Nq×m],  Ã = softmax(s·Q̃ K̃ᵀ) [m×m],
//                              B̃ = softmax(s·Q̃ Kᵀ) [m×Nk],
//
// Q̃, K̃ the m landmarks (segment means of the rows of Q and K), Ã⁺ by the paper's iteration.
// B̃·V is dense attention of the m landmark queries over all keys and F̃·G (G = Ã⁺B̃V) dense
// attention of the queries over the m landmark keys with values G: both run on the shared
// online-softmax kernel, so no Nq×m or m×Nk matrix is stored. The paper's optional depthwise
// convolution skip connection on V is a learned layer and left out.
//
// Determinism: every landmark, every Ã⁺ and G is computed by one thread (single-threaded sgemm
// inside the parallel region) and every query block by one OnlineSoftmax run, whatever the
// thread count.
#include "attention/nystrom.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <vector>

#include "attention/kernels/gemm.h"
#include "attention/kernels/online_softmax.h"
#include "attention/registry.h"

namespace attn {
namespace nystrom {

void iterative_pinv(const float* a, int64_t m, int iterations, float* z, float* scratch) {
  using kernels::sgemm;
  double col_max = 0, row_max = 0;  // ‖A‖₁ and ‖A‖∞
  for (int64_t i = 0; i < m; ++i) {
    double row = 0, col = 0;
    for (int64_t j = 0; j < m; ++j) row += std::abs(a[i * m + j]), col += std::abs(a[j * m + i]);
    row_max = std::max(row_max, row), col_max = std::max(col_max, col);
  }
  const double inv = col_max * row_max > 0 ? 1.0 / (col_max * row_max) : 0.0;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < m; ++j) z[i * m + j] = float(a[j * m + i] * inv);
  float* az = scratch;                           // A·Z_j
  float* t = az + m * m;                         // c·I − (…)
  float* u = t + m * m;                          // products
  auto shifted = [&](float c, const float* x) {  // t = c·I − x
    for (int64_t i = 0; i < m * m; ++i) t[i] = -x[i];
    for (int64_t i = 0; i < m; ++i) t[i * m + i] += c;
  };
  for (int it = 0; it < iterations; ++it) {
    sgemm(false, false, m, m, m, 1.0f, a, m, z, m, 0.0f, az, m);
    shifted(7.0f, az);
    sgemm(false, false, m, m, m, 1.0f, az, m, t, m, 0.0f, u, m);
    shifted(15.0f, u);
    sgemm(false, false, m, m, m, 1.0f, az, m, t, m, 0.0f, u, m);
    shifted(13.0f, u);
    sgemm(false, false, m, m, m, 0.25f, z, m, t, m, 0.0f, u, m);
    std::copy(u, u + m * m, z);
  }
}

}  // namespace nystrom

namespace {

using kernels::OnlineSoftmax;
using kernels::sgemm;

constexpr int64_t kMaxLandmarks = 4096;

struct Config {
  int64_t landmarks = 64;
  int iterations = 6;
};

// Softmax of each of `rows` rows of n logits in place (max-subtracted).
void softmax_rows(float* x, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = x + r * n;
    const float mx = *std::max_element(row, row + n);
    float sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) sum += (row[j] = std::exp(row[j] - mx));
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; ++j) row[j] *= inv;
  }
}

// out [m, d] = means of the m consecutive segments of the n rows of x (summed in fp64).
void segment_means(const float* x, int64_t n, int64_t d, int64_t m, float* out, double* acc) {
  for (int64_t i = 0; i < m; ++i) {
    const int64_t r0 = nystrom::segment_start(i, n, m), r1 = nystrom::segment_start(i + 1, n, m);
    std::fill(acc, acc + d, 0.0);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < d; ++c) acc[c] += x[r * d + c];
    for (int64_t c = 0; c < d; ++c) out[i * d + c] = float(acc[c] / double(r1 - r0));
  }
}

// Runs body(i) for i in [0, n) over the team of the enclosing parallel region; the first
// exception is kept for the caller to rethrow after the region.
template <class Body>
void team_for(int64_t n, std::exception_ptr& error, Body&& body) {
#pragma omp for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    try {
      body(i);
    } catch (...) {
#pragma omp critical(nystrom_error)
      if (!error) error = std::current_exception();
    }
  }
}

class Nystrom final : public Attention {
 public:
  explicit Nystrom(const Config& c) : cfg_(c) {}

  std::string name() const override { return "nystrom"; }

  ParamValues params() const override {
    return {{"landmarks", std::to_string(cfg_.landmarks)},
            {"iterations", std::to_string(cfg_.iterations)}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (s.causal)
      throw UsageError(
          "nystrom is not defined for causal attention (each landmark averages a segment of "
          "keys, later ones included); run it without causal");
    const int64_t n = std::min(s.nq, s.nk);
    if (cfg_.landmarks > n)
      throw UsageError("nystrom: landmarks=" + std::to_string(cfg_.landmarks) +
                       " exceeds the sequence length " + std::to_string(n) +
                       " (min of Nq, Nk); use landmarks <= " + std::to_string(n));
    check_fits_in_memory(extra_bytes(s), "nystrom at " + s.str());
  }

  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override;

  // Matmul FLOPs (docs/ALGORITHMS.md §FLOPs), per head: B̃·V 4·m·Nk·D (dense attention of m
  // landmark queries), Ã's logits 2·m²·D, the pseudo-inverse 4 m×m×m products = 8·m³ per
  // iteration, G = Ã⁺(B̃V) 2·m²·D, F̃·G 4·Nq·m·D. Landmark means and softmaxes not counted.
  double flops(const Shape& s) const override {
    const double m = cfg_.landmarks, D = s.dim;
    return s.heads_total() * (4 * m * s.nk * D + 4 * m * m * D + 8.0 * cfg_.iterations * m * m * m +
                              4 * s.nq * m * D);
  }

  // Per (batch, head): landmarks Q̃, K̃, B̃V and G (4·m·D); per thread: an OnlineSoftmax and
  // the m×m matrices Ã, Ã⁺ and the iteration's three products, plus the fp64 row sums.
  double extra_bytes(const Shape& s) const override {
    using namespace kernels;
    const double m = cfg_.landmarks, D = s.dim;
    const double per_head = 4 * m * D;
    const double per_thread = kQueryRows * (2 * D + kKeyTile + 3) + 5 * m * m + 2 * D;
    return (s.heads_total() * per_head + omp_get_max_threads() * per_thread) * sizeof(float);
  }

 private:
  Config cfg_;
};

void Nystrom::forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                      Tensor& out) {
  const int64_t m = cfg_.landmarks, D = s.dim, heads = s.heads_total();
  const float scale = s.softmax_scale();
  // Per head: [Q̃ | K̃ | W = B̃V | G = Ã⁺W], each m×D.
  FloatBuffer per_head(size_t(heads) * 4 * m * D);
  auto slot = [&](int64_t bh, int64_t i) { return per_head.data() + (bh * 4 + i) * m * D; };
  const int64_t lblocks = (m + kernels::kQueryRows - 1) / kernels::kQueryRows;
  std::exception_ptr error;
#pragma omp parallel
  {
    OnlineSoftmax sm(D);
    FloatBuffer scratch(size_t(5 * m * m));  // Ã, Ã⁺, three products
    std::vector<double> acc(static_cast<size_t>(D));
    team_for(heads, error, [&](int64_t bh) {
      const int64_t b = bh / s.heads, h = bh % s.heads;
      segment_means(q.head(b, h), s.nq, D, m, slot(bh, 0), acc.data());
      segment_means(k.head(b, h), s.nk, D, m, slot(bh, 1), acc.data());
    });
    // W = B̃·V: the landmark queries attend to every key, a block of rows at a time.
    team_for(heads * lblocks, error, [&](int64_t t) {
      const int64_t bh = t / lblocks, r0 = (t % lblocks) * kernels::kQueryRows;
      const int64_t b = bh / s.heads, h = bh % s.heads;
      sm.begin(slot(bh, 0) + r0 * D, D, std::min(kernels::kQueryRows, m - r0), scale);
      sm.attend(k.head(b, h), v.head(b, h), D, s.nk);
      sm.finish(slot(bh, 2) + r0 * D, D);
    });
    team_for(heads, error, [&](int64_t bh) {
      float* a = scratch.data();
      float* z = a + m * m;
      sgemm(false, true, m, m, D, scale, slot(bh, 0), D, slot(bh, 1), D, 0.0f, a, m);
      softmax_rows(a, m, m);
      nystrom::iterative_pinv(a, m, cfg_.iterations, z, z + m * m);
      sgemm(false, false, m, D, m, 1.0f, z, m, slot(bh, 2), D, 0.0f, slot(bh, 3), D);
    });
  }
  if (error) std::rethrow_exception(error);
  // out = F̃·G: the queries attend to the landmark keys K̃ with values G.
  kernels::for_each_query_block(
      s, [&](int64_t b, int64_t h, int64_t row0, int64_t rows, OnlineSoftmax& sm) {
        const int64_t bh = b * s.heads + h;
        sm.begin(q.head(b, h) + row0 * D, D, rows, scale);
        sm.attend(slot(bh, 1), slot(bh, 3), D, m);
        sm.finish(out.head(b, h) + row0 * D, D);
      });
}

}  // namespace

VariantInfo nystrom_variant() {
  using K = ParamSpec::Kind;
  return {"nystrom",
          "Nyströmformer (arXiv:2102.03902): softmax(s·QK̃ᵀ)·pinv(softmax(s·Q̃K̃ᵀ))·softmax(s·Q̃Kᵀ)·V "
          "with m landmarks Q̃, K̃ = means of m consecutive segments of the rows of Q, K (n not "
          "divisible by m: segments of floor(n/m) or ceil(n/m) rows, segment i starting at row "
          "floor(i·n/m)), pinv by the paper's iteration from Z0 = Aᵀ/(‖A‖₁‖A‖∞); approximates "
          "plain dense softmax attention. The paper's optional depthwise-convolution skip on V "
          "is left out. Non-causal only (causal is a usage error); needs m <= min(Nq, Nk). "
          "FLOPs count the matmuls: 4·m·(Nq + Nk)·D + 4·m²·D + 8·iterations·m³ per head. Extra "
          "memory 4·B·H·m·D + threads·5·m².",
          {{"landmarks", K::Int, "64", "landmarks m (the paper's 64 on Long Range Arena)", 1,
            double(kMaxLandmarks)},
           {"iterations", K::Int, "6",
            "iterations of the pseudo-inverse (the paper's and its code's 6)", 1, 100}},
          [](const Params& p) {
            Config c;
            c.landmarks = p.get_int("landmarks");
            c.iterations = int(p.get_int("iterations"));
            return std::make_unique<Nystrom>(c);
          }};
}

}  // namespace attn
