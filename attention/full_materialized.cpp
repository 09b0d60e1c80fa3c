// `full_materialized`: the naive way a user writes first. S = scale·Q·Kᵀ into an n x n
// buffer with oneDNN's sgemm, row softmax, O = P·V with sgemm. Exists to show the O(n²)
// memory cost that the blocked kernel avoids.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "attention/kernels/gemm.h"
#include "attention/registry.h"

namespace attn {
namespace {

// Rows per sgemm call: fixed, so each row is computed by the same call whatever the thread
// count (deterministic), and large enough for sgemm to run near its peak.
constexpr int64_t kRowBlock = 256;

void softmax_row(float* s, int64_t n) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) mx = std::max(mx, s[j]);
  float sum = 0.0f;
  for (int64_t j = 0; j < n; ++j) sum += (s[j] = std::exp(s[j] - mx));
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
}

// A fixed partition of n into blocks of kRowBlock, run in parallel: every block by one
// sgemm call on one thread, whatever the thread count (deterministic).
template <class F>
void for_each_row_block(int64_t n, F&& f) {
  const int64_t blocks = (n + kRowBlock - 1) / kRowBlock;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t blk = 0; blk < blocks; ++blk)
    f(blk * kRowBlock, std::min(kRowBlock, n - blk * kRowBlock));
}

class FullMaterialized final : public Attention {
 public:
  std::string name() const override { return "full_materialized"; }

  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override {
    FloatBuffer scores(size_t(s.nq) * s.nk);  // the n x n matrix, one head at a time
    run(s, q, k, v, out, scores.data(), false);
  }

  double flops(const Shape& s) const override { return s.dense_flops(); }
  double extra_bytes(const Shape& s) const override { return 4.0 * s.nq * s.nk; }

  bool has_backward() const override { return true; }
  // The naive backward keeps P of every head: O(n²) saved.
  double saved_bytes(const Shape& s) const override { return 4.0 * s.heads_total() * s.nq * s.nk; }
  // dS of one head (n x n) and δ of its rows.
  double backward_extra_bytes(const Shape& s) const override {
    return 4.0 * s.nq * s.nk + 4.0 * s.nq;
  }
  void forward_train(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                     Saved& saved) override {
    start_saved(saved, s, size_t(s.heads_total() * s.nq * s.nk));
    run(s, q, k, v, out, saved.floats.data(), true);
  }

 protected:
  // With P saved: dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P∘(dP − δ), dQ = s·dS·K, dK = s·dSᵀ·Q
  // (docs/ALGORITHMS.md §Backward), every product an sgemm over a fixed block partition.
  void compute_backward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor&, const Saved& saved, const Tensor& dout, Grads g) override {
    const int64_t D = s.dim, nq = s.nq, nk = s.nk;
    const float scale = s.softmax_scale();
    FloatBuffer dscores(size_t(nq) * nk), delta{size_t(nq)};
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const float *qh = q.head(b, h), *kh = k.head(b, h), *vh = v.head(b, h);
        const float* doh = dout.head(b, h);
        const float* P = saved.floats.data() + (b * s.heads + h) * nq * nk;
        float* dS = dscores.data();
        for_each_row_block(nq, [&](int64_t r0, int64_t rows) {
          kernels::sgemm(false, true, rows, nk, D, 1.0f, doh + r0 * D, D, vh, D, 0.0f, dS + r0 * nk,
                         nk);
          for (int64_t i = r0; i < r0 + rows; ++i) {
            // δ_i = Σ_j P_ij dP_ij (= dO_i·O_i), from the saved P itself.
            double d = 0;
            for (int64_t j = 0; j < nk; ++j) d += double(P[i * nk + j]) * dS[i * nk + j];
            delta[i] = float(d);
            for (int64_t j = 0; j < nk; ++j)
              dS[i * nk + j] = P[i * nk + j] * (dS[i * nk + j] - delta[i]);
          }
          kernels::sgemm(false, false, rows, D, nk, scale, dS + r0 * nk, nk, kh, D, 0.0f,
                         g.dq.head(b, h) + r0 * D, D);
        });
        for_each_row_block(nk, [&](int64_t c0, int64_t cols) {
          kernels::sgemm(true, false, cols, D, nq, 1.0f, P + c0, nk, doh, D, 0.0f,
                         g.dv.head(b, h) + c0 * D, D);
          kernels::sgemm(true, false, cols, D, nq, scale, dS + c0, nk, qh, D, 0.0f,
                         g.dk.head(b, h) + c0 * D, D);
        });
      }
  }

 private:
  // S = scale·Q·Kᵀ, row softmax, O = P·V; the probabilities of head bh go to
  // probs + bh·Nq·Nk when keep_all, else every head reuses probs[0, Nq·Nk).
  void run(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
           float* probs, bool keep_all) const {
    const int64_t D = s.dim, nq = s.nq, nk = s.nk;
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const float *qh = q.head(b, h), *kh = k.head(b, h), *vh = v.head(b, h);
        float* oh = out.head(b, h);
        float* scores = probs + (keep_all ? (b * s.heads + h) * nq * nk : 0);
        for_each_row_block(nq, [&](int64_t r0, int64_t rows) {
          float* S = scores + r0 * nk;
          kernels::sgemm(false, true, rows, nk, D, s.softmax_scale(), qh + r0 * D, D, kh, D, 0.0f,
                         S, nk);
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t i = r0 + r;
            // Causal: only keys j <= i take part; the rest get probability 0.
            const int64_t visible = s.causal ? i + 1 : nk;
            softmax_row(S + r * nk, visible);
            std::fill(S + r * nk + visible, S + (r + 1) * nk, 0.0f);
          }
          kernels::sgemm(false, false, rows, D, nk, 1.0f, S, nk, vh, D, 0.0f, oh + r0 * D, D);
        });
      }
  }
};

}  // namespace

VariantInfo full_materialized_variant() {
  return {"full_materialized",
          "the naive fp32 baseline: S = QK^T in an n x n buffer (oneDNN sgemm), row softmax, "
          "P·V (sgemm); O(n^2·D) time, O(n^2) extra memory. Backward: the naive one that "
          "keeps P (O(n^2) saved).",
          {},
          [](const Params&) { return std::make_unique<FullMaterialized>(); }};
}

}  // namespace attn
