// `full`: exact dense attention by the shared blocked online-softmax kernel. No n x n buffer:
// extra memory is the per-thread scratch of OnlineSoftmax, independent of n.
#include <omp.h>

#include "attention/kernels/online_softmax.h"
#include "attention/registry.h"

namespace attn {
namespace {

using kernels::OnlineSoftmax;

class Full final : public Attention {
 public:
  std::string name() const override { return "full"; }

  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override {
    const int64_t D = s.dim;
    const float scale = s.softmax_scale();
    kernels::for_each_query_block(
        s, [&](int64_t b, int64_t h, int64_t row0, int64_t rows, OnlineSoftmax& sm) {
          const float* kh = k.head(b, h);
          const float* vh = v.head(b, h);
          sm.begin(q.head(b, h) + row0 * D, D, rows, scale);
          if (!s.causal) {
            sm.attend(kh, vh, D, s.nk);
          } else {
            // Keys left of the block are all visible; the diagonal block hides j > i.
            sm.attend(kh, vh, D, row0);
            sm.attend_masked(kh + row0 * D, vh + row0 * D, D, rows, [](int64_t r, int64_t c) {
              return c > r ? OnlineSoftmax::kHidden : 0.0f;
            });
          }
          sm.finish(out.head(b, h) + row0 * D, D);
        });
  }

  double flops(const Shape& s) const override { return s.dense_flops(); }

  // Per thread: transposed query block, score tile, accumulator and three row vectors.
  double extra_bytes(const Shape& s) const override {
    using namespace kernels;
    double per_thread = kQueryRows * (2.0 * s.dim + kKeyTile + 3) * sizeof(float);
    return per_thread * omp_get_max_threads();
  }
};

}  // namespace

VariantInfo full_variant() {
  return {"full",
          "exact dense attention, blocked online softmax (flash-style) on AVX-512 micro-kernels; "
          "O(n^2·D) time, O(threads·D) extra memory (no n x n buffer).",
          {},
          [](const Params&) { return std::make_unique<Full>(); }};
}

}  // namespace attn
