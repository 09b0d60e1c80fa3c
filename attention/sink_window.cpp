// `sink_window`: a causal sliding window of W tokens plus the first s "attention sink" tokens,
// always visible (StreamingLLM, Xiao et al., arXiv:2309.17453): query i sees keys j ≤ i with
// j < s or i − j < W. A plan builder: the sinks are one span per query block (full once every
// row is past them), the window is the causal band of band.h starting after the sinks.
#include "attention/band.h"
#include "attention/registry.h"

namespace attn {
namespace {

class SinkWindow final : public PlanAttention {
 public:
  SinkWindow(int64_t window, int64_t sinks) : window_(window), sinks_(sinks) {}

  std::string name() const override { return "sink_window"; }
  ParamValues params() const override {
    return {{"window", std::to_string(window_)}, {"sinks", std::to_string(sinks_)}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (s.nq != s.nk)
      throw UsageError("sink_window is self-attention: Nq must equal Nk (got Nq=" +
                       std::to_string(s.nq) + ", Nk=" + std::to_string(s.nk) + ")");
  }

 private:
  TilePlan build_plan(const Shape& s) const override {
    const int64_t n = s.nq, sinks = std::min(sinks_, n), radius = std::min(window_, n) - 1;
    TilePlan plan(s.heads, n, n);
    HeadPattern& p = plan.patterns.emplace_back();
    for (int64_t row0 = 0; row0 < n; row0 += kernels::kQueryRows) {
      const int64_t rows = std::min(kernels::kQueryRows, n - row0), last = row0 + rows - 1;
      band::add_band_block(p, {0, 1, n, row0, rows, radius, 0, sinks}, false);
      // Sinks up to the first row are visible to every row; later ones only causally.
      const int64_t seen = std::min(sinks, last + 1), all = std::min(sinks, row0 + 1);
      p.add_span({{0, all}});
      p.add_span({{all, seen - all}, true, -kUnbounded, 0});
    }
    return plan;
  }

  int64_t window_, sinks_;
};

}  // namespace

VariantInfo sink_window_variant() {
  return {"sink_window",
          "causal sliding window with attention sinks (StreamingLLM, arXiv:2309.17453): query i "
          "sees keys j <= i with i - j < window (the last `window` tokens, itself included) or "
          "j < sinks (the first tokens, always visible). Causal whatever the --causal flag; "
          "self-attention (Nq = Nk). sinks=0 is sliding_window causal with radius = window - 1. "
          "O(n*(window+sinks)*D) time, O(threads*D + n/64) extra memory.",
          {{"window", ParamSpec::Kind::Int, "256", "W: tokens of the sliding window (>= 1)", 1},
           {"sinks", ParamSpec::Kind::Int, "4", "s: leading sink tokens (StreamingLLM uses 4)", 0}},
          [](const Params& p) {
            return std::make_unique<SinkWindow>(p.get_int("window"), p.get_int("sinks"));
          }};
}

}  // namespace attn
