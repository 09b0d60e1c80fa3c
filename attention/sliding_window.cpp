// `sliding_window`: exact attention over the band |i − j| ≤ r·k, j ≡ i (mod k) (causal:
// i − r·k ≤ j ≤ i), arXiv:2004.05150. A plan builder (band.h): only the key tiles that
// intersect a query block's band are visited and only their edges are masked, so time and
// memory grow linearly in n.
#include "attention/band.h"
#include "attention/registry.h"

namespace attn {
namespace {

class SlidingWindow final : public PlanAttention {
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

 private:
  TilePlan build_plan(const Shape& s) const override {
    TilePlan plan(s.heads, s.nq, s.nk);
    band::add_band(plan.patterns.emplace_back(), s.nq,
                   band::clipped_window(radius_, dilation_, s.causal, s.nq), false,
                   [](HeadPattern&) {});
    return plan;
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
      "only tiles touching the band: O(n*radius*D) time, O(threads*D + n/64) extra memory (the "
      "tile plan).",
      {{"radius", ParamSpec::Kind::Int, "256", "one-sided window r, in keys (of the dilated grid)",
        0},
       {"dilation", ParamSpec::Kind::Int, "1", "gap k between visible keys (1 = contiguous)", 1}},
      [](const Params& p) {
        return std::make_unique<SlidingWindow>(p.get_int("radius"), p.get_int("dilation"));
      }};
}

}  // namespace attn
