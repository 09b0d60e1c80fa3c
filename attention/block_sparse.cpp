// `block_sparse`: any block layout as a pattern, so a researcher can benchmark one without
// writing C++: layout=FILE.npy holds [heads (or 1), query blocks, key blocks] of 0 (skip),
// 1 (every key) or 2 (keys j <= i only: a causal diagonal); layout=random draws a layout of
// the given density per head (seeded). The causal flag applies on top. A plan builder over
// block_layout.h.
#include <cmath>

#include "attention/block_layout.h"
#include "attention/npy.h"
#include "attention/registry.h"

namespace attn {
namespace {

using blocks::Tile;

class BlockSparse final : public PlanAttention {
 public:
  BlockSparse(std::string layout, int64_t block, double density, int64_t seed)
      : layout_(std::move(layout)), b_(block), density_(density), seed_(seed) {
    if (layout_ == "random") return;
    NpyArray a = read_npy(layout_);
    if (a.shape.size() != 3)
      throw UsageError("block_sparse: layout " + layout_ + " has rank " +
                       std::to_string(a.shape.size()) +
                       "; expected [heads, query blocks, key blocks] of 0/1/2");
    for (size_t e = 0; e < a.data.size(); ++e)
      if (a.data[e] != 0.0f && a.data[e] != 1.0f && a.data[e] != 2.0f)
        throw UsageError("block_sparse: layout " + layout_ + " entry " + std::to_string(e) +
                         " (flat index) is " + std::to_string(a.data[e]) +
                         "; entries must be 0 (skip), 1 (full block) or 2 (causal block)");
    file_ = std::move(a);
  }

  std::string name() const override { return "block_sparse"; }
  ParamValues params() const override {
    return {{"layout", layout_},
            {"block", std::to_string(b_)},
            {"density", std::to_string(density_)},
            {"seed", std::to_string(seed_)}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (layout_ == "random") return;
    const int64_t qb = blocks::count(s.nq, b_), kb = blocks::count(s.nk, b_);
    const std::vector<int64_t>& sh = file_.shape;
    if ((sh[0] != s.heads && sh[0] != 1) || sh[1] != qb || sh[2] != kb)
      throw UsageError("block_sparse: layout " + layout_ + " has shape [" + std::to_string(sh[0]) +
                       "," + std::to_string(sh[1]) + "," + std::to_string(sh[2]) +
                       "]; with block=" + std::to_string(b_) +
                       " this problem (H=" + std::to_string(s.heads) +
                       ", Nq=" + std::to_string(s.nq) + ", Nk=" + std::to_string(s.nk) +
                       ") needs [" + std::to_string(s.heads) + " or 1," + std::to_string(qb) + "," +
                       std::to_string(kb) + "] (blocks = ceil(n/block))");
  }

 private:
  // What query block q sees of key block k in head h (the causal mask on top).
  Tile tile(const Shape& s, int64_t h, int64_t q, int64_t k) const {
    const int64_t nqb = blocks::count(s.nq, b_), nkb = blocks::count(s.nk, b_);
    const float x = file_.data[((file_.shape[0] == 1 ? 0 : h) * nqb + q) * nkb + k];
    if (x == 0.0f || (s.causal && k > q)) return Tile::None;
    return x == 2.0f || (s.causal && k == q) ? Tile::Causal : Tile::Full;
  }

  // layout=random: round(density · available) blocks (at least one) per query block.
  blocks::Row random_row(const Shape& s, int64_t h, int64_t q) const {
    const int64_t nqb = blocks::count(s.nq, b_), nkb = blocks::count(s.nk, b_);
    std::vector<int64_t> pool;
    for (int64_t k = 0; k < (s.causal ? q + 1 : nkb); ++k) pool.push_back(k);
    const int64_t want = std::max<int64_t>(1, std::llround(density_ * double(pool.size())));
    blocks::Row row;
    for (int64_t k : blocks::sample(pool, want, uint64_t(seed_), uint64_t(h * nqb + q)))
      row.push_back({k, s.causal && k == q ? Tile::Causal : Tile::Full});
    return row;
  }

  TilePlan build_plan(const Shape& s) const override {
    const int64_t nqb = blocks::count(s.nq, b_), nkb = blocks::count(s.nk, b_);
    TilePlan plan(s.heads, s.nq, s.nk);
    for (int64_t h = 0; h < s.heads; ++h) {
      HeadPattern& p = plan.patterns.emplace_back();
      plan.head_pattern[h] = h;
      for (int64_t q = 0; q < nqb; ++q) {
        blocks::Row row;
        if (layout_ == "random") {
          row = random_row(s, h, q);
        } else {
          for (int64_t k = 0; k < nkb; ++k)
            if (Tile t = tile(s, h, q, k); t != Tile::None) row.push_back({k, t});
        }
        blocks::add_row(p, q, row, b_, s.nq, s.nk);
      }
    }
    return plan;
  }

  std::string layout_;
  int64_t b_;
  double density_;
  int64_t seed_;
  NpyArray file_;
};

}  // namespace

VariantInfo block_sparse_variant() {
  using K = ParamSpec::Kind;
  return {"block_sparse",
          "a user block layout as the pattern: layout=FILE.npy, float [heads (or 1 for all), "
          "ceil(Nq/block), ceil(Nk/block)] of 0 (skip the block), 1 (every key of it) or 2 (keys "
          "j <= i only, a causal diagonal); layout=random draws round(density * blocks) key "
          "blocks (at least 1) per query block and head (seeded). Causal mask on top (the "
          "diagonal blocks masked). Exact attention over the chosen blocks; adjacent full blocks "
          "run as one tile span. O(visited blocks * block^2 * D) time.",
          {{"layout", K::Text, "random", "FILE.npy with the block layout, or random"},
           {"block", K::Int, "64", "block size in positions", 1},
           {"density", K::Float, "0.1", "layout=random: fraction of key blocks per query block",
            1e-9, 1},
           {"seed", K::Int, "0", "layout=random: seed", 0}},
          [](const Params& p) {
            return std::make_unique<BlockSparse>(p.get("layout"), p.get_int("block"),
                                                 p.get_float("density"), p.get_int("seed"));
          }};
}

}  // namespace attn
