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

class FullMaterialized final : public Attention {
 public:
  std::string name() const override { return "full_materialized"; }

  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override {
    const int64_t D = s.dim, nq = s.nq, nk = s.nk;
    FloatBuffer scores(size_t(nq) * nk);  // the n x n matrix, one head at a time
    const int64_t blocks = (nq + kRowBlock - 1) / kRowBlock;
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const float *qh = q.head(b, h), *kh = k.head(b, h), *vh = v.head(b, h);
        float* oh = out.head(b, h);
#pragma omp parallel for schedule(dynamic, 1)
        for (int64_t blk = 0; blk < blocks; ++blk) {
          const int64_t r0 = blk * kRowBlock, rows = std::min(kRowBlock, nq - r0);
          float* S = scores.data() + r0 * nk;
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
        }
      }
  }

  double flops(const Shape& s) const override {
    return s.dense_flops();
  }
  double extra_bytes(const Shape& s) const override {
    return 4.0 * s.nq * s.nk;
  }
};

}  // namespace

VariantInfo full_materialized_variant() {
  return {"full_materialized",
          "the naive fp32 baseline: S = QK^T in an n x n buffer (oneDNN sgemm), row softmax, "
          "P·V (sgemm); O(n^2·D) time, O(n^2) extra memory.",
          {},
          [](const Params&) { return std::make_unique<FullMaterialized>(); }};
}

}  // namespace attn
