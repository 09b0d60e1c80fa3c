#include "attention/reference.h"

#include <cmath>
#include <limits>
#include <numeric>

#include "attention/registry.h"

namespace attn {

void reference_probs(const Shape& s, const Tensor& q, const Tensor& k, int64_t b, int64_t h,
                     int64_t i, const ElementMask* mask, std::vector<double>& p) {
  const int64_t D = s.dim, nk = s.nk;
  const float* qi = q.head(b, h) + i * D;
  const float* kh = k.head(b, h);
  const double scale = s.softmax_scale();
  const double neg_inf = -std::numeric_limits<double>::infinity();
  p.assign(nk, neg_inf);
  double mx = neg_inf;
  for (int64_t j = 0; j < nk; ++j) {
    if (s.causal && j > i) continue;
    if (mask && !(*mask)(b, h, i, j)) continue;
    double dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += double(qi[d]) * double(kh[j * D + d]);
    p[j] = scale * dot;
    mx = std::max(mx, p[j]);
  }
  if (mx == neg_inf) {  // fully masked row
    p.assign(nk, 0.0);
    return;
  }
  double sum = 0;
  for (auto& x : p) sum += (x = std::exp(x - mx));
  for (auto& x : p) x /= sum;
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
};

}  // namespace

VariantInfo reference_variant() {
  return {"reference",
          "exact dense attention accumulated in fp64 (slow); the ground truth for every accuracy "
          "figure. O(n^2) time, O(n·D) extra memory.",
          {},
          [](const Params&) { return std::make_unique<Reference>(); }};
}

}  // namespace attn
