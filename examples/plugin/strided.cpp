// An attnbench plugin with one variant, `strided`: every query attends to a fixed, evenly spaced
// sample of the keys, j = 0, s, 2s, ... (causal: only those with j <= i). A toy pattern, but it
// shows the whole interface a variant author needs: the pattern is a tile plan (attention/plan.h),
// so forward, FLOPs, extra memory and visited keys (coverage) all come from PlanAttention, and
// the plugin's variant appears in `attnbench list`, run, sweep, apply, compare and plot.
#include <attention/kernels/online_softmax.h>
#include <attention/plan.h>
#include <attention/plugin.h>

#include <algorithm>
#include <memory>
#include <string>

namespace {

class Strided final : public attn::PlanAttention {
 public:
  explicit Strided(int64_t stride) : stride_(stride) {}

  std::string name() const override { return "strided"; }
  attn::ParamValues params() const override { return {{"stride", std::to_string(stride_)}}; }

 private:
  // One pattern shared by every head. Per block of up to 64 query rows [r0, last]: the sampled
  // keys every row may see form one full span; when causal, the sampled keys after r0 and up to
  // the last row form a partial span masked by j - i <= 0.
  attn::TilePlan build_plan(const attn::Shape& s) const override {
    attn::TilePlan plan(s.heads, s.nq, s.nk);
    attn::HeadPattern& p = plan.patterns.emplace_back();
    const int64_t sampled = (s.nk + stride_ - 1) / stride_;  // keys 0, s, 2s, ... < nk
    for (int64_t r0 = 0; r0 < s.nq; r0 += attn::kernels::kQueryRows) {
      const int64_t rows = std::min(attn::kernels::kQueryRows, s.nq - r0), last = r0 + rows - 1;
      p.add_block({r0, rows});
      if (!s.causal) {
        p.add_span({{0, sampled, stride_}});
        continue;
      }
      const int64_t full = r0 / stride_ + 1;                                 // keys j <= r0
      const int64_t partial = std::min(sampled, last / stride_ + 1) - full;  // r0 < j <= last
      p.add_span({{0, full, stride_}});
      p.add_span({{full * stride_, partial, stride_}, true, -attn::kUnbounded, 0});
    }
    return plan;
  }

  int64_t stride_;
};

void register_strided() {
  attn::register_variant(
      {"strided",
       "example plugin (examples/plugin): query i attends to the keys j = 0, stride, 2*stride, "
       "... (causal: j <= i), a fixed strided sample. O(n^2/stride * D) time.",
       {{"stride", attn::ParamSpec::Kind::Int, "8", "distance between sampled keys", 1, 1 << 20}},
       [](const attn::Params& p) { return std::make_unique<Strided>(p.get_int("stride")); }});
}

}  // namespace

ATTNBENCH_PLUGIN(register_strided)
