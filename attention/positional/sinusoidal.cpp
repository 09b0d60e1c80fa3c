// The fixed encoding of "Attention Is All You Need" (Vaswani et al. 2017, §3.5):
// E(j)_{2i} = sin(j / base^{2i/D}), E(j)_{2i+1} = cos(j / base^{2i/D}), base = 10000.
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
    inv_freq_.resize((dim + 1) / 2);
    for (size_t i = 0; i < inv_freq_.size(); ++i)
      inv_freq_[i] = std::pow(base_, -2.0 * double(i) / double(dim));
  }

  int64_t param_count() const override { return 0; }

  void encode(int64_t n, float* out) const override {
    check_rows(n);
    const int64_t d = dim_;
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < n; ++j) {
      float* row = out + j * d;
      for (int64_t c = 0; c < d; c += 2) {
        double s, co;
        ::sincos(double(j) * inv_freq_[c / 2], &s, &co);
        row[c] = float(s);
        if (c + 1 < d) row[c + 1] = float(co);
      }
    }
  }

 private:
  double base_;
  std::vector<double> inv_freq_;
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
