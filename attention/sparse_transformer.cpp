// `sparse_transformer`: the factorized patterns of Child et al., arXiv:1904.10509, §4.2, as one
// head attending to the union of both factors ("merged head", §5.2); causal by default as in
// the paper. strided: A1 = {i − l, …, i}, A2 = {j : (i − j) mod l = 0}; fixed: A1 = the keys
// of i's own block of l, A2 = the last c positions of every block ("summary" columns).
// Non-causal forms: strided |i − j| ≤ l or (i − j) mod l = 0; fixed: own block or any summary.
//
// A plan builder. fixed: query blocks cut at the blocks of l, summary keys gathered once.
// strided: two passes combined by log-sum-exp: the band A1 in natural order, and A2 \ A1 in
// the strided residue classes of l (rows and keys of one class, no copy), so that both
// factors are visited as dense tiles.
#include "attention/band.h"
#include "attention/registry.h"

namespace attn {
namespace {

using kernels::kQueryRows;

class SparseTransformer final : public PlanAttention {
 public:
  SparseTransformer(std::string pattern, int64_t stride, int64_t summary, bool causal)
      : pattern_(std::move(pattern)), l_(stride), c_(summary), causal_(causal) {
    if (pattern_ == "fixed" && c_ > l_)
      throw UsageError("sparse_transformer: summary=" + std::to_string(c_) +
                       " exceeds stride=" + std::to_string(l_) +
                       "; the c summary columns are the last c of each block of l");
  }

  std::string name() const override { return "sparse_transformer"; }
  ParamValues params() const override {
    return {{"pattern", pattern_},
            {"stride", std::to_string(l_)},
            {"summary", std::to_string(c_)},
            {"causal", causal_ ? "true" : "false"}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (s.nq != s.nk)
      throw UsageError("sparse_transformer is self-attention: Nq must equal Nk (got Nq=" +
                       std::to_string(s.nq) + ", Nk=" + std::to_string(s.nk) + ")");
  }

 private:
  TilePlan build_plan(const Shape& s) const override {
    TilePlan plan(s.heads, s.nq, s.nk);
    HeadPattern& p = plan.patterns.emplace_back();
    const bool causal = causal_ || s.causal;
    const int64_t l = std::min(l_, s.nq);
    if (pattern_ == "fixed")
      add_fixed(p, s.nq, l, std::min(c_, l), causal);
    else
      add_strided(p, s.nq, l, causal);
    return plan;
  }

  static void add_fixed(HeadPattern& p, int64_t n, int64_t l, int64_t c, bool causal) {
    for (int64_t j = 0; j < n; ++j)
      if (j % l >= l - c) p.gather.push_back(j);
    const int64_t g = int64_t(p.gather.size());
    for (int64_t start = 0; start < n; start += l) {
      const int64_t end = std::min(n, start + l), before = start / l * c, after = before + c;
      for (int64_t r0 = start; r0 < end; r0 += kQueryRows) {
        const int64_t rows = std::min(kQueryRows, end - r0), last = r0 + rows - 1;
        p.add_block({r0, rows});
        if (causal) {  // own block up to the row: keys up to the first row are seen by all
          p.add_span({{start, r0 - start + 1}});
          p.add_span({{r0 + 1, last - r0}, true, -kUnbounded, 0});
        } else {
          p.add_span({{start, end - start}});
          p.add_span({{after, g - after, 1, true}});  // later blocks' summaries
        }
        p.add_span({{0, before, 1, true}});  // earlier blocks' summaries
      }
    }
  }

  // Pass 0: the band of radius l. Pass 1: per residue class of l, the class keys two or more
  // steps away (one step, ±l, is in the band).
  static void add_strided(HeadPattern& p, int64_t n, int64_t l, bool causal) {
    band::add_band(p, n, band::Window{l, 1, causal}, false, [](HeadPattern&) {});
    for (int64_t rho = 0; rho < band::classes(n, l); ++rho) {
      const int64_t m = band::class_length(n, l, rho);
      for (int64_t row0 = 0; row0 < m; row0 += kQueryRows) {
        const int64_t last = std::min(m, row0 + kQueryRows) - 1;
        auto keys = [&](int64_t a, int64_t z) {  // class steps [a, z] clipped to [0, m)
          a = std::max<int64_t>(a, 0), z = std::min(z, m - 1);
          return Positions{rho + a * l, z - a + 1, l, false};
        };
        const bool left = last >= 2, right = !causal && row0 + 2 <= m - 1;
        if (!left && !right) continue;  // no row has a key two steps away
        p.add_block({rho + row0 * l, last - row0 + 1, l, false}, 1);
        p.add_span({keys(0, row0 - 2)});
        p.add_span({keys(row0 - 1, last - 2), true, -kUnbounded, -2 * l});
        if (causal) continue;
        p.add_span({keys(row0 + 2, last + 1), true, 2 * l, kUnbounded});
        p.add_span({keys(last + 2, m - 1)});
      }
    }
  }

  std::string pattern_;
  int64_t l_, c_;
  bool causal_;
};

}  // namespace

VariantInfo sparse_transformer_variant() {
  using K = ParamSpec::Kind;
  return {"sparse_transformer",
          "Sparse Transformer factorized attention (arXiv:1904.10509), both factors in one head: "
          "strided = the previous `stride` keys and every stride-th key before them ((i - j) mod "
          "stride = 0); fixed = the keys of i's own block of `stride` plus the last `summary` "
          "keys of every block. causal=true (the paper's) hides j > i; causal=false is the "
          "symmetric form. Exact over the pattern; strided runs as two passes (band, and the "
          "strided residue classes) combined by log-sum-exp. O(n*(stride + n/stride)*D) time "
          "(strided; fixed: O(n*(stride + n*summary/stride)*D)), O(n*D) extra memory for "
          "strided's second pass.",
          {{"pattern", K::Choice, "fixed", "strided or fixed", -1e300, 1e300, {"strided", "fixed"}},
           {"stride", K::Int, "128", "l: block length / stride (about sqrt(n) in the paper)", 1},
           {"summary", K::Int, "8", "c: summary keys per block (fixed)", 1},
           {"causal", K::Bool, "true", "hide keys after the query (the paper's setting)"}},
          [](const Params& p) {
            return std::make_unique<SparseTransformer>(p.get("pattern"), p.get_int("stride"),
                                                       p.get_int("summary"), p.get_bool("causal"));
          }};
}

}  // namespace attn
