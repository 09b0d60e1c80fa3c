// `sliding_window`: exact attention over the band |i − j| ≤ r·k, j ≡ i (mod k) (causal:
// i − r·k ≤ j ≤ i), docs/ALGORITHMS.md §Sliding window. The band is walked over the shared kernel
// (band.h): only the key tiles that intersect a query block's band are visited and only their
// edges are masked, so time and memory grow linearly in n.
#include <omp.h>

#include "attention/band.h"
#include "attention/registry.h"

namespace attn {
namespace {

class SlidingWindow final : public Attention {
 public:
  SlidingWindow(int64_t radius, int64_t dilation) : radius_(radius), dilation_(dilation) {}

  std::string name() const override { return "sliding_window"; }
  ParamValues params() const override {
    return {{"radius", std::to_string(radius_)}, {"dilation", std::to_string(dilation_)}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (s.nq != s.nk)
      throw UsageError("sliding_window is self-attention: Nq must equal Nk (got Nq=" +
                       std::to_string(s.nq) + ", Nk=" + std::to_string(s.nk) + ")");
  }

  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override {
    const band::Window w = window(s);
    const float scale = s.softmax_scale();
    band::for_each_block(s, q, k, v, out, w.dilation,
                         [&](int64_t, int64_t, const band::View& view, int64_t row0, int64_t rows,
                             kernels::OnlineSoftmax& sm) {
                           sm.begin(view.q + row0 * view.ld, view.ld, rows, scale);
                           band::attend_band(sm, view, w, row0, rows, band::NoHidden{});
                           sm.finish(view.out + row0 * view.ld, view.ld);
                         });
  }

  // 4·D per visible pair, pairs by the closed form of band::pairs (docs/ALGORITHMS.md §Band).
  double flops(const Shape& s) const override {
    return 4.0 * s.dim * band::pairs(s.nq, window(s)) * s.heads_total();
  }

  // Per thread: the kernel's transposed query block, score tile, accumulator and row vectors.
  double extra_bytes(const Shape& s) const override {
    using namespace kernels;
    return kQueryRows * (2.0 * s.dim + kKeyTile + 3) * sizeof(float) * omp_get_max_threads();
  }

  bool visited_keys(const Shape& s, int64_t, int64_t, int64_t i, VisitedKeys& out) const override {
    out.assign(1, {});
    band::row_keys(s.nq, window(s), i, out[0]);
    return true;
  }

 private:
  band::Window window(const Shape& s) const {
    return band::clipped_window(radius_, dilation_, s.causal, s.nq);
  }

  int64_t radius_, dilation_;
};

}  // namespace

VariantInfo sliding_window_variant() {
  return {
      "sliding_window",
      "exact attention over a band: query i sees keys j with |i - j| <= radius*dilation and "
      "j ≡ i (mod dilation) (causal: i - radius*dilation <= j <= i). Hugging Face Longformer's "
      "attention_window = 2*radius; a causal 'sliding window of W tokens' (Mistral, HF "
      "sliding_window) is radius = W - 1. Self-attention only (Nq = Nk). Shared tiled kernel, "
      "only tiles touching the band: O(n*radius*D) time, O(threads*D) extra memory.",
      {{"radius", ParamSpec::Kind::Int, "256", "one-sided window r, in keys (of the dilated grid)",
        0},
       {"dilation", ParamSpec::Kind::Int, "1", "gap k between visible keys (1 = contiguous)", 1}},
      [](const Params& p) {
        return std::make_unique<SlidingWindow>(p.get_int("radius"), p.get_int("dilation"));
      }};
}

}  // namespace attn
