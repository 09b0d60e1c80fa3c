// `linear`: the linear transformer's attention (Katharopoulos et al., arXiv:2006.16236;
// docs/ALGORITHMS.md §Linear).
//
// out_i = φ(q_i)·Σ_j φ(k_j)ᵀv_j / φ(q_i)·Σ_j φ(k_j), φ(x) = elu(x) + 1 elementwise (M = D
// feature columns), sums over all keys or, causal, over j ≤ i. The sums, the block-wise causal
// prefix sums and the scheduling are the feature-map driver Performer uses
// (attention/feature_attention.h); this file supplies φ only.
// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 intrinsics.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <algorithm>
#include <cmath>

#include "attention/feature_attention.h"
#include "attention/kernels/vec_exp.h"
#include "attention/registry.h"

namespace attn {
namespace {

using feature::HeadWork;
using feature::kBlockRows;

// f = φ(x) = elu(x) + 1 = x + 1 for x > 0, exp(x) otherwise (the paper's choice): positive, so
// every denominator φ(q)·Σφ(k) is > 0 and no stabilizer is needed. exp by docs/ALGORITHMS.md
// §exp16 (libm's scalar expf would cost more than the matmuls).
void elu_plus_one(const float* x, int64_t n, float* f) {
#if defined(__AVX512F__)
  const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
    const __mmask16 pos = _mm512_cmp_ps_mask(v, zero, _CMP_GT_OQ);
    const __m512 e = kernels::exp16(_mm512_min_ps(v, zero));
    _mm512_mask_storeu_ps(f + i, k, _mm512_mask_add_ps(e, pos, v, one));
  }
#else
  for (int64_t i = 0; i < n; ++i) f[i] = x[i] > 0.0f ? x[i] + 1.0f : std::exp(x[i]);
#endif
}

class Linear final : public feature::FeatureAttention {
 public:
  std::string name() const override { return "linear"; }

  void validate(const Shape& s) const override {
    s.check();
    check_fits_in_memory(extra_bytes(s), "linear at " + s.str());
  }

  // Matmul FLOPs of the model (docs/ALGORITHMS.md §FLOPs): φ(K)ᵀV 2·Nk·D², φ(Q)·S 2·Nq·D²,
  // denominators φ(Q)·z 2·Nq·D, column sums z Nk·D (M = D). φ itself (an exp or an add per
  // element) is not counted. Causal executes more, not counted: the masked diagonal tiles
  // 2·n·kChunkRows·2D and, when a head is shared by the team, the block sums again.
  double flops(const Shape& s) const override {
    const double D = s.dim, nq = s.nq, nk = s.nk;
    return s.heads_total() * (2 * (nk + nq) * D * D + 2 * nq * D + nk * D);
  }

  double extra_bytes(const Shape& s) const override { return work_bytes(s); }

 private:
  int64_t width(int64_t d) const override { return d; }

  void key_block_pass1(const Shape& s, HeadWork& h, int64_t b) const override {
    const int64_t d = s.dim, r0 = b * kBlockRows, rows = std::min(kBlockRows, s.nk - r0);
    elu_plus_one(h.k + r0 * d, rows * d, h.kf.data() + r0 * d);
  }

  void query_features(const float* x, int64_t rows, int64_t d, float* f) const override {
    elu_plus_one(x, rows * d, f);
  }
};

}  // namespace

VariantInfo linear_variant() {
  return {"linear",
          "linear transformer (arXiv:2006.16236): φ(Q)(φ(K)ᵀV) / φ(Q)(φ(K)ᵀ1) with φ(x) = "
          "elu(x) + 1 on the raw q and k (the logit scale does not enter); causal by block-wise "
          "prefix sums (Performer's driver). Approximates plain dense softmax attention only "
          "loosely (a different kernel). O(n·D²) time; FLOPs count the matmuls, 2·(Nq + Nk)·D² "
          "+ 2·Nq·D + Nk·D per head. Extra memory O(n·D) per concurrent head.",
          {},
          [](const Params&) { return std::make_unique<Linear>(); }};
}

}  // namespace attn
