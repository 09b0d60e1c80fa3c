// The fixed encoding of "Attention Is All You Need" (Vaswani et al. 2017, §3.5):
// E(j)_{2i} = sin(j / base^{2i/D}), E(j)_{2i+1} = cos(j / base^{2i/D}), base = 10000.
#include <algorithm>
#include <cmath>
#include <vector>

#include "attention/positional/positional.h"

namespace attn::positional {
namespace {

class Sinusoidal final : public Encoding {
 public:
  explicit Sinusoidal(double base) : base_(base) {}
  std::string kind() const override { return "sinusoidal"; }

  void init(int64_t n, int64_t dim, uint64_t) override {
    if (n <= 0 || dim <= 0)
      throw UsageError("sinusoidal: positions and width must be positive, got n=" +
                       std::to_string(n) + " D=" + std::to_string(dim));
    positions_ = n, dim_ = dim;
    // 1 / base^{2i/D} for feature pair i, in fp64 so that large positions keep their phase.
    inv_freq_.resize((dim + 1) / 2), sin_w_.resize(inv_freq_.size()),
        cos_w_.resize(inv_freq_.size());
    for (size_t i = 0; i < inv_freq_.size(); ++i) {
      inv_freq_[i] = std::pow(base_, -2.0 * double(i) / double(dim));
      ::sincos(inv_freq_[i], &sin_w_[i], &cos_w_[i]);
    }
  }

  int64_t param_count() const override { return 0; }

  void encode(int64_t n, float* out) const override {
    check_rows(n);
    const int64_t blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel
    {
      std::vector<double> s(inv_freq_.size()), c(inv_freq_.size());
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < blocks; ++blk)
        encode_block(blk * kBlock, std::min(n, (blk + 1) * kBlock), out + blk * kBlock * dim_,
                     s.data(), c.data());
    }
  }

  // Adds block by block from a cache-resident buffer instead of materializing all n rows.
  void add_to(float* x, int64_t rows, int64_t n) const override {
    check_rows(n);
    const int64_t d = dim_, blocks = (n + kBlock - 1) / kBlock;
#pragma omp parallel
    {
      std::vector<double> s(inv_freq_.size()), c(inv_freq_.size());
      std::vector<float> e(kBlock * d);
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < blocks; ++blk) {
        const int64_t j0 = blk * kBlock, j1 = std::min(n, j0 + kBlock);
        encode_block(j0, j1, e.data(), s.data(), c.data());
        for (int64_t r = 0; r < rows; ++r) {
          float* xb = x + (r * n + j0) * d;
#pragma omp simd
          for (int64_t i = 0; i < (j1 - j0) * d; ++i) xb[i] += e[i];
        }
      }
    }
  }

 private:
  static constexpr int64_t kBlock = 64;

  // Rows [j0, j1) into out. The block starts from exact sincos values and steps one position
  // by the angle-addition rotation (sin, cos)(x + w) = (s·cos w + c·sin w, c·cos w − s·sin w)
  // in fp64: a 64-step chain adds ~1e-14 error instead of costing one sincos per value. Blocks
  // are fixed, so the result does not depend on the thread count. s, c: scratch of D/2.
  void encode_block(int64_t j0, int64_t j1, float* out, double* s, double* c) const {
    const int64_t d = dim_, pairs = int64_t(inv_freq_.size());
    for (int64_t i = 0; i < pairs; ++i) ::sincos(double(j0) * inv_freq_[i], &s[i], &c[i]);
    for (int64_t j = j0; j < j1; ++j, out += d) {
      for (int64_t i = 0; i < d / 2; ++i) out[2 * i] = float(s[i]), out[2 * i + 1] = float(c[i]);
      if (d % 2) out[d - 1] = float(s[pairs - 1]);
#pragma omp simd
      for (int64_t i = 0; i < pairs; ++i) {
        const double si = s[i] * cos_w_[i] + c[i] * sin_w_[i];
        c[i] = c[i] * cos_w_[i] - s[i] * sin_w_[i];
        s[i] = si;
      }
    }
  }

  double base_;
  std::vector<double> inv_freq_, sin_w_, cos_w_;
};

}  // namespace

KindInfo sinusoidal_kind() {
  return {"sinusoidal",
          "fixed sin/cos encoding (Vaswani et al. 2017): feature 2i = sin(j/base^(2i/D)), "
          "2i+1 = cos(j/base^(2i/D)); 0 parameters, any n and D",
          {{"base", ParamSpec::Kind::Float, "10000", "wavelength base", 1.000001, 1e300}},
          [](const Params& p) { return std::make_unique<Sinusoidal>(p.get_float("base")); }};
}

}  // namespace attn::positional
