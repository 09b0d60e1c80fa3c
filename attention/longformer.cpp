// `longformer`: Longformer's local + global attention pattern (arXiv:2004.05150; docs/ALGORITHMS.md
// §Longformer) with the same q, k, v for both parts. A non-global row attends to its band ∪ G (each
// global key once: global keys are hidden inside the band and attended from a gathered copy);
// a global row attends to every key. The causal mask applies on top. A plan builder
// (band.h), like `sliding_window`.
#include <algorithm>
#include <sstream>

#include "attention/band.h"
#include "attention/registry.h"

namespace attn {
namespace {

using kernels::kQueryRows;

// "i1;i2;…" to positions: non-negative integers without duplicates ("none" = no list).
std::vector<int64_t> parse_indices(const std::string& text) {
  std::vector<int64_t> idx;
  if (text == "none") return idx;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ';')) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
    }
    if (v < 0 || used != item.size())
      throw UsageError("longformer: global_idx entry '" + item +
                       "' is not a non-negative integer; expected global_idx=i1;i2;...");
    idx.push_back(v);
  }
  std::sort(idx.begin(), idx.end());
  for (size_t a = 1; a < idx.size(); ++a)
    if (idx[a] == idx[a - 1])
      throw UsageError("longformer: global_idx lists position " + std::to_string(idx[a]) +
                       " twice; each global position must appear once");
  return idx;
}

class Longformer final : public PlanAttention {
 public:
  Longformer(int64_t radius, int64_t dilation, int64_t global, const std::string& global_idx)
      : radius_(radius), dilation_(dilation), global_(global), idx_(parse_indices(global_idx)) {
    if (global_ > 0 && !idx_.empty())
      throw UsageError(
          "longformer: give either global=g (the first g positions) or global_idx, "
          "not both");
  }

  std::string name() const override { return "longformer"; }
  ParamValues params() const override {
    std::string idx;
    for (int64_t i : idx_) {
      if (!idx.empty()) idx += ';';
      idx += std::to_string(i);
    }
    return {{"radius", std::to_string(radius_)},
            {"dilation", std::to_string(dilation_)},
            {"global", std::to_string(global_)},
            {"global_idx", idx.empty() ? "none" : idx}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (s.nq != s.nk)
      throw UsageError("longformer is self-attention: Nq must equal Nk (got Nq=" +
                       std::to_string(s.nq) + ", Nk=" + std::to_string(s.nk) + ")");
    if (global_ > s.nq)
      throw UsageError("longformer: global=" + std::to_string(global_) +
                       " exceeds the sequence length " + std::to_string(s.nq));
    if (!idx_.empty() && idx_.back() >= s.nq)
      throw UsageError("longformer: global_idx position " + std::to_string(idx_.back()) +
                       " is out of range for sequence length " + std::to_string(s.nq) +
                       " (valid: 0.." + std::to_string(s.nq - 1) + ")");
  }

 private:
  // The global rows first (chunks of up to 64, dense rows: the heaviest blocks, scheduled
  // first), then the band with the global keys hidden in it and every global key gathered
  // once after it. A band block computes its global rows too (the global chunks overwrite
  // them): it keeps the band's blocks, and so every other row's result, as without globals.
  TilePlan build_plan(const Shape& s) const override {
    const int64_t n = s.nq;
    TilePlan plan(s.heads, n, n);
    HeadPattern& p = plan.patterns.emplace_back();
    p.gather = globals(n);
    const int64_t g = int64_t(p.gather.size());
    for (int64_t a0 = 0; a0 < g; a0 += kQueryRows) {
      const int64_t rows = std::min(kQueryRows, g - a0), p0 = p.gather[a0];
      p.add_block({a0, rows, 1, true});
      if (!s.causal) {
        p.add_span({{0, n}});
      } else {  // keys up to the first row are visible to all rows (positions ascend)
        p.add_span({{0, p0 + 1}});
        p.add_span({{p0 + 1, p.gather[a0 + rows - 1] - p0}, true, -kUnbounded, 0});
      }
    }
    p.leading = int64_t(p.blocks.size());
    if (g) {
      p.hidden.assign(n, 0);
      for (int64_t j : p.gather) p.hidden[j] = 1;
    }
    band::add_band(p, n, window(s), g > 0, [&](HeadPattern& p) {
      // Causal: globals after the block's last row are hidden from all of it.
      const Positions rows = p.blocks.back().rows;
      const int64_t first = rows.base, last = rows.base + (rows.count - 1) * rows.step;
      const auto& G = p.gather;
      const int64_t span = s.causal ? std::upper_bound(G.begin(), G.end(), last) - G.begin() : g;
      const bool partial = s.causal && span > 0 && G[span - 1] > first;
      p.add_span({{0, span, 1, true}, partial, -kUnbounded, 0});
    });
    return plan;
  }

  band::Window window(const Shape& s) const {
    return band::clipped_window(radius_, dilation_, s.causal, s.nq);
  }

  std::vector<int64_t> globals(int64_t n) const {
    if (!idx_.empty()) return idx_;
    std::vector<int64_t> G(std::min(global_, n));
    for (size_t a = 0; a < G.size(); ++a) G[a] = int64_t(a);
    return G;
  }

  int64_t radius_, dilation_, global_;
  std::vector<int64_t> idx_;  // explicit global positions, ascending
};

}  // namespace

VariantInfo longformer_variant() {
  return {
      "longformer",
      "Longformer local + global attention (exact): a non-global row sees its band (as "
      "sliding_window: |i - j| <= radius*dilation, j ≡ i (mod dilation)) plus every global key, "
      "each key once; a global row sees every key; causal mask on top. HF attention_window = "
      "2*radius. The same q, k, v serve the local and the global part: Longformer's separate "
      "global projections are a model detail outside the attention computation. "
      "O(n*(radius+g)*D) time, O(n + threads*D) extra memory (the tile plan, gathered global "
      "keys).",
      {{"radius", ParamSpec::Kind::Int, "256", "one-sided window r (of the dilated grid)", 0},
       {"dilation", ParamSpec::Kind::Int, "1", "gap k between visible band keys", 1},
       {"global", ParamSpec::Kind::Int, "0", "the first g positions are global ([CLS]-like)", 0},
       {"global_idx", ParamSpec::Kind::Text, "none",
        "explicit global positions i1;i2;... (exclusive with global > 0)"}},
      [](const Params& p) {
        return std::make_unique<Longformer>(p.get_int("radius"), p.get_int("dilation"),
                                            p.get_int("global"), p.get("global_idx"));
      }};
}

}  // namespace attn
