#include "attention/reference.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "attention/registry.h"

namespace attn {

double reference_logits(const Shape& s, const Tensor& q, const Tensor& k, int64_t b, int64_t h,
                        int64_t i, const ElementMask* mask, std::vector<double>& z) {
  const int64_t D = s.dim, nk = s.nk;
  const float* qi = q.head(b, h) + i * D;
  const float* kh = k.head(b, h);
  const double scale = s.softmax_scale();
  const double neg_inf = -std::numeric_limits<double>::infinity();
  z.assign(nk, neg_inf);
  double mx = neg_inf;
  for (int64_t j = 0; j < nk; ++j) {
    if (s.causal && j > i) continue;
    if (mask && !(*mask)(b, h, i, j)) continue;
    double dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += double(qi[d]) * double(kh[j * D + d]);
    z[j] = scale * dot;
    mx = std::max(mx, z[j]);
  }
  if (mx == neg_inf) return neg_inf;  // fully masked row
  double sum = 0;
  for (double x : z) sum += std::exp(x - mx);
  return mx + std::log(sum);
}

void reference_probs(const Shape& s, const Tensor& q, const Tensor& k, int64_t b, int64_t h,
                     int64_t i, const ElementMask* mask, std::vector<double>& p) {
  const double lse = reference_logits(s, q, k, b, h, i, mask, p);
  if (std::isinf(lse)) {  // fully masked row
    p.assign(s.nk, 0.0);
    return;
  }
  for (auto& x : p) x = std::exp(x - lse);
}

void reference_rows(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, int64_t b,
                    int64_t h, const std::vector<int64_t>& rows, const ElementMask* mask,
                    double* out) {
  const int64_t D = s.dim;
  const float* vh = v.head(b, h);
#pragma omp parallel for schedule(dynamic, 4)
  for (size_t r = 0; r < rows.size(); ++r) {
    std::vector<double> p;
    reference_probs(s, q, k, b, h, rows[r], mask, p);
    double* o = out + r * D;
    std::fill(o, o + D, 0.0);
    for (int64_t j = 0; j < s.nk; ++j) {
      if (p[j] == 0.0) continue;
      for (int64_t d = 0; d < D; ++d) o[d] += p[j] * double(vh[j * D + d]);
    }
  }
}

std::vector<double> reference_attention(const Shape& s, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const ElementMask* mask) {
  std::vector<double> out(size_t(s.batch * s.heads * s.nq * s.dim));
  std::vector<int64_t> rows(s.nq);
  std::iota(rows.begin(), rows.end(), 0);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      reference_rows(s, q, k, v, b, h, rows, mask, out.data() + (b * s.heads + h) * s.nq * s.dim);
  return out;
}

namespace {

double dot(const float* a, const float* b, int64_t n) {
  double r = 0;
  for (int64_t d = 0; d < n; ++d) r += double(a[d]) * double(b[d]);
  return r;
}

// One head. Per row i (dQ): p_ij, dp_ij = dO_i·v_j, δ_i = Σ_j p_ij dp_ij (= dO_i·o_i),
// dq_i = s Σ_j p_ij (dp_ij − δ_i) k_j. Per key j (dK, dV) from the rows' log-sum-exps and δ:
// dk_j = s Σ_i ds_ij q_i, dv_j = Σ_i p_ij dO_i (docs/ALGORITHMS.md §Backward).
void reference_head_gradients(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& dout, int64_t b, int64_t h, const ElementMask* mask,
                              double* dq, double* dk, double* dv) {
  const int64_t D = s.dim;
  const double scale = s.softmax_scale();
  const float *qh = q.head(b, h), *kh = k.head(b, h), *vh = v.head(b, h);
  const float* oh = dout.head(b, h);
  std::vector<double> lse(s.nq), delta(s.nq);
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t i = 0; i < s.nq; ++i) {
    std::vector<double> z;
    lse[i] = reference_logits(s, q, k, b, h, i, mask, z);
    double* g = dq + i * D;
    std::fill(g, g + D, 0.0);
    if (std::isinf(lse[i])) continue;
    std::vector<double> p(s.nk), dp(s.nk);
    double dl = 0;
    for (int64_t j = 0; j < s.nk; ++j) {
      p[j] = std::exp(z[j] - lse[i]);
      dp[j] = p[j] > 0 ? dot(oh + i * D, vh + j * D, D) : 0.0;
      dl += p[j] * dp[j];
    }
    delta[i] = dl;
    for (int64_t j = 0; j < s.nk; ++j) {
      if (p[j] == 0.0) continue;
      const double ds = p[j] * (dp[j] - dl);
      for (int64_t d = 0; d < D; ++d) g[d] += scale * ds * double(kh[j * D + d]);
    }
  }
#pragma omp parallel for schedule(dynamic, 4)
  for (int64_t j = 0; j < s.nk; ++j) {
    double *gk = dk + j * D, *gv = dv + j * D;
    std::fill(gk, gk + D, 0.0), std::fill(gv, gv + D, 0.0);
    for (int64_t i = s.causal ? j : 0; i < s.nq; ++i) {
      if (std::isinf(lse[i]) || (mask && !(*mask)(b, h, i, j))) continue;
      const double p = std::exp(scale * dot(qh + i * D, kh + j * D, D) - lse[i]);
      const double ds = p * (dot(oh + i * D, vh + j * D, D) - delta[i]);
      for (int64_t d = 0; d < D; ++d) {
        gk[d] += scale * ds * double(qh[i * D + d]);
        gv[d] += p * double(oh[i * D + d]);
      }
    }
  }
}

class Reference final : public Attention {
 public:
  std::string name() const override { return "reference"; }
  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override {
    std::vector<double> r = reference_attention(s, q, k, v);
    for (size_t i = 0; i < r.size(); ++i) out.data()[i] = static_cast<float>(r[i]);
  }
  double flops(const Shape& s) const override { return s.dense_flops(); }
  // The fp64 output plus one row of probabilities per thread.
  double extra_bytes(const Shape& s) const override {
    return 8.0 * s.heads_total() * s.nq * s.dim + 8.0 * s.nk * 2;
  }

  bool has_backward() const override { return true; }
  // Saves nothing: the fp64 backward recomputes every probability.
  void forward_train(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                     Saved& saved) override {
    forward(s, q, k, v, out);
    start_saved(saved, s, 0);
  }
  // The fp64 gradients, one head's log-sum-exps and δ, three rows of logits per thread.
  double backward_extra_bytes(const Shape& s) const override {
    return 8.0 * s.heads_total() * (2 * s.nk + s.nq) * s.dim + 16.0 * s.nq +
           24.0 * s.nk * omp_get_max_threads();
  }

 protected:
  void compute_backward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor&, const Saved&, const Tensor& dout, Grads g) override {
    const ReferenceGrads r = reference_gradients(s, q, k, v, dout);
    for (size_t e = 0; e < r.dq.size(); ++e) g.dq.data()[e] = float(r.dq[e]);
    for (size_t e = 0; e < r.dk.size(); ++e) g.dk.data()[e] = float(r.dk[e]);
    for (size_t e = 0; e < r.dv.size(); ++e) g.dv.data()[e] = float(r.dv[e]);
  }
};

}  // namespace

ReferenceGrads reference_gradients(const Shape& s, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const Tensor& dout, const ElementMask* mask) {
  const int64_t D = s.dim;
  ReferenceGrads r;
  r.dq.resize(size_t(s.heads_total() * s.nq * D));
  r.dk.resize(size_t(s.heads_total() * s.nk * D));
  r.dv.resize(size_t(s.heads_total() * s.nk * D));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      const int64_t bh = b * s.heads + h;
      reference_head_gradients(s, q, k, v, dout, b, h, mask, r.dq.data() + bh * s.nq * D,
                               r.dk.data() + bh * s.nk * D, r.dv.data() + bh * s.nk * D);
    }
  return r;
}

VariantInfo reference_variant() {
  return {"reference",
          "exact dense attention accumulated in fp64 (slow); the ground truth for every accuracy "
          "figure. O(n^2) time, O(n·D) extra memory.",
          {},
          [](const Params&) { return std::make_unique<Reference>(); }};
}

}  // namespace attn
