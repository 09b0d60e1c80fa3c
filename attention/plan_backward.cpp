// The backward of the tile-plan executor (attention/plan.h; docs/ALGORITHMS.md §Backward):
// every plan builder gets it for free. dQ walks the plan's query blocks, dK and dV walk its
// transposed index (per key block, the tiles that read it), so that every gradient row has one
// writer and no atomics are needed; each tile recomputes P from the saved row log-sum-exps
// (one per row over all its passes: the softmax is over the union of a row's keys).
#include <omp.h>

#include <algorithm>

#include "attention/kernels/flash_backward.h"
#include "attention/kernels/online_softmax.h"
#include "attention/plan.h"

namespace attn {
namespace {

using kernels::BackwardTile;
using kernels::kBackKeys;
using kernels::kQueryRows;
using kernels::TileKeys;
using kernels::TileRows;

constexpr int64_t kKeyBlock = TilePlan::kKeyBlock;
static_assert(kQueryRows <= kernels::kBackRows && kKeyBlock <= kBackKeys,
              "a plan block and a key block must fit one backward tile");

// Per-thread buffers: one block's gathered rows, one tile's gathered keys, the gradient
// accumulators of one query block or key block.
struct Work {
  explicit Work(int64_t D)
      : tile(D),
        q(kQueryRows * D),
        dout(kQueryRows * D),
        k(kBackKeys * D),
        v(kBackKeys * D),
        dq(kQueryRows * D),
        dk(kKeyBlock * D),
        dv(kKeyBlock * D),
        tk(kKeyBlock * D),
        tv(kKeyBlock * D) {}
  static double floats(int64_t D) {
    return 2.0 * kernels::kBackRows * kBackKeys + D * (3.0 * kQueryRows + 2.0 * kBackKeys) +
           D * 4.0 * kKeyBlock;
  }
  BackwardTile tile;
  FloatBuffer q, dout, k, v, dq, dk, dv, tk, tv;
  float lse[kQueryRows], delta[kQueryRows];
};

// Where dQ of the blocks that do not write it in place goes, per (batch·head): layer 0 holds the
// gathered rows (patterns that gather rows), then one layer per pass after the first; each
// layer is [Nq][D], indexed by position.
struct Layers {
  Layers(const TilePlan& plan, const Shape& s) {
    at.push_back(0);
    for (int64_t bh = 0; bh < s.heads_total(); ++bh)
      at.push_back(at.back() + count(plan.of_head(bh % s.heads)) * s.nq * s.dim);
  }
  static int64_t gathers(const HeadPattern& p) {
    return std::any_of(p.blocks.begin(), p.blocks.end(),
                       [](const QueryBlock& b) { return b.rows.gathered; });
  }
  static int64_t count(const HeadPattern& p) { return gathers(p) + p.passes - 1; }
  std::vector<int64_t> at;  // [bh] offset in floats
};

// Tasks (bh, item) for every (batch·head) and each of its items, head-major.
struct HeadTasks {
  template <class Items>
  HeadTasks(const Shape& s, Items&& items) {
    start.push_back(0);
    for (int64_t bh = 0; bh < s.heads_total(); ++bh) start.push_back(start.back() + items(bh));
  }
  int64_t count() const { return start.back(); }
  std::pair<int64_t, int64_t> at(int64_t t) const {
    const int64_t bh = std::upper_bound(start.begin(), start.end(), t) - start.begin() - 1;
    return {bh, t - start[bh]};
  }
  std::vector<int64_t> start;
};

struct Problem {
  const TilePlan& plan;
  const Shape& s;
  const Tensor &q, &k, &v, &dout;
  const float *lse, *delta;                     // [bh·Nq + i]
  std::vector<std::vector<uint8_t>> elsewhere;  // [pattern] rows a gathered block owns
};

// The rows of block `blk` as a tile's query side: strided rows in place, gathered ones copied.
// A row whose output another block supplies gets lse −inf: it takes no part.
TileRows block_rows(const Problem& pr, int64_t bh, const QueryBlock& blk, Work& w) {
  const Shape& s = pr.s;
  const int64_t b = bh / s.heads, h = bh % s.heads, D = s.dim, pi = pr.plan.head_pattern[h];
  const HeadPattern& p = pr.plan.patterns[pi];
  const std::vector<uint8_t>& elsewhere = pr.elsewhere[pi];
  const Positions& rows = blk.rows;
  for (int64_t r = 0; r < rows.count; ++r) {
    const int64_t i = position(p, rows, r);
    const bool owner = rows.gathered || blk.pass > 0 || elsewhere.empty() || !elsewhere[i];
    w.lse[r] = owner ? pr.lse[bh * s.nq + i] : BackwardTile::kHidden;
    w.delta[r] = pr.delta[bh * s.nq + i];
  }
  if (!rows.gathered)
    return {pr.q.head(b, h) + rows.base * D,
            rows.step * D,
            pr.dout.head(b, h) + rows.base * D,
            rows.step * D,
            w.lse,
            w.delta,
            rows.count};
  for (int64_t r = 0; r < rows.count; ++r) {
    const int64_t i = position(p, rows, r);
    std::copy_n(pr.q.head(b, h) + i * D, D, w.q.data() + r * D);
    std::copy_n(pr.dout.head(b, h) + i * D, D, w.dout.data() + r * D);
  }
  return {w.q.data(), D, w.dout.data(), D, w.lse, w.delta, rows.count};
}

// Elements [t0, t1) of span `sp` as a tile's key side (t1 − t0 ≤ kBackKeys).
TileKeys span_keys(const Problem& pr, int64_t bh, const HeadPattern& p, const KeySpan& sp,
                   int64_t t0, int64_t t1, Work& w) {
  const int64_t b = bh / pr.s.heads, h = bh % pr.s.heads, D = pr.s.dim;
  const Positions& keys = sp.keys;
  if (!keys.gathered) {
    const int64_t j = position(p, keys, t0);
    return {pr.k.head(b, h) + j * D, pr.v.head(b, h) + j * D, keys.step * D, t1 - t0};
  }
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t j = position(p, keys, t);
    std::copy_n(pr.k.head(b, h) + j * D, D, w.k.data() + (t - t0) * D);
    std::copy_n(pr.v.head(b, h) + j * D, D, w.v.data() + (t - t0) * D);
  }
  return {w.k.data(), w.v.data(), D, t1 - t0};
}

// P and dS of block `blk` against elements [t0, t1) of span `sp`, the span's predicate applied.
void compute_tile(const Problem& pr, const HeadPattern& p, const QueryBlock& blk, const KeySpan& sp,
                  int64_t t0, const TileRows& rows, const TileKeys& keys, Work& w) {
  const float scale = pr.s.softmax_scale();
  if (!sp.partial) return w.tile.compute(rows, keys, scale);
  w.tile.compute(rows, keys, scale, [&](int64_t r, int64_t c) {
    const int64_t i = position(p, blk.rows, r), j = position(p, sp.keys, t0 + c);
    return j - i >= sp.lo && j - i <= sp.hi && !(sp.skip_hidden && p.hidden[j]);
  });
}

// dQ of block bi of head bh into `dst` rows (ld floats apart).
void block_dq(const Problem& pr, int64_t bh, int64_t bi, Work& w) {
  const HeadPattern& p = pr.plan.of_head(bh % pr.s.heads);
  const QueryBlock& blk = p.blocks[bi];
  const int64_t D = pr.s.dim;
  const TileRows rows = block_rows(pr, bh, blk, w);
  std::fill_n(w.dq.data(), rows.count * D, 0.0f);
  for (int64_t a = blk.first; a < blk.first + blk.count; ++a) {
    const KeySpan& sp = p.spans[a];
    for (int64_t t0 = 0; t0 < sp.keys.count; t0 += kBackKeys) {
      const int64_t t1 = std::min(sp.keys.count, t0 + kBackKeys);
      compute_tile(pr, p, blk, sp, t0, rows, span_keys(pr, bh, p, sp, t0, t1, w), w);
      w.tile.add_dq(w.dq.data(), D, pr.s.softmax_scale());
    }
  }
}

// The elements of `keys` whose positions lie in [lo, lo + n), as [t0, t1).
std::pair<int64_t, int64_t> elements_in(const HeadPattern& p, const Positions& keys, int64_t lo,
                                        int64_t n) {
  if (keys.gathered) {
    const int64_t* g = p.gather.data() + keys.base;
    return {std::lower_bound(g, g + keys.count, lo) - g,
            std::lower_bound(g, g + keys.count, lo + n) - g};
  }
  const int64_t last = lo + n - 1;
  if (last < keys.base) return {0, 0};
  const int64_t t0 = lo <= keys.base ? 0 : (lo - keys.base + keys.step - 1) / keys.step;
  const int64_t t1 = std::min(keys.count, (last - keys.base) / keys.step + 1);
  return {std::min(t0, t1), t1};
}

// dK, dV of key block kb of head bh: every tile of the transposed index, in index order.
void key_block_grads(const Problem& pr, int64_t bh, int64_t kb, Work& w, Grads g) {
  const Shape& s = pr.s;
  const HeadPattern& p = pr.plan.of_head(bh % s.heads);
  const int64_t D = s.dim, j0 = kb * kKeyBlock, n = std::min(kKeyBlock, s.nk - j0);
  const float scale = s.softmax_scale();
  std::fill_n(w.dk.data(), n * D, 0.0f), std::fill_n(w.dv.data(), n * D, 0.0f);
  for (int64_t r = p.key_block_start[kb]; r < p.key_block_start[kb + 1]; ++r) {
    const QueryBlock& blk = p.blocks[p.refs[r].block];
    const KeySpan& sp = p.spans[blk.first + p.refs[r].span];
    const auto [t0, t1] = elements_in(p, sp.keys, j0, n);
    if (t0 == t1) continue;
    const TileRows rows = block_rows(pr, bh, blk, w);
    compute_tile(pr, p, blk, sp, t0, rows, span_keys(pr, bh, p, sp, t0, t1, w), w);
    if (!sp.keys.gathered) {  // strided keys: accumulate in place, step rows apart
      const int64_t off = (position(p, sp.keys, t0) - j0) * D;
      w.tile.add_dk_dv(w.dk.data() + off, w.dv.data() + off, sp.keys.step * D, scale);
      continue;
    }
    std::fill_n(w.tk.data(), (t1 - t0) * D, 0.0f), std::fill_n(w.tv.data(), (t1 - t0) * D, 0.0f);
    w.tile.add_dk_dv(w.tk.data(), w.tv.data(), D, scale);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t off = (position(p, sp.keys, t) - j0) * D;
      for (int64_t d = 0; d < D; ++d) {
        w.dk[off + d] += w.tk[(t - t0) * D + d];
        w.dv[off + d] += w.tv[(t - t0) * D + d];
      }
    }
  }
  const int64_t b = bh / s.heads, h = bh % s.heads;
  std::copy_n(w.dk.data(), n * D, g.dk.head(b, h) + j0 * D);
  std::copy_n(w.dv.data(), n * D, g.dv.head(b, h) + j0 * D);
}

// Writes block bi's dQ: pass-0 strided blocks in place (their rows owned elsewhere get 0 and
// are overwritten by fix_dq), the others into their layer.
void store_dq(const Problem& pr, const Layers& layers, float* layer_data, int64_t bh, int64_t bi,
              const Work& w, Grads g) {
  const Shape& s = pr.s;
  const HeadPattern& p = pr.plan.of_head(bh % s.heads);
  const QueryBlock& blk = p.blocks[bi];
  const int64_t D = s.dim, b = bh / s.heads, h = bh % s.heads;
  float* base = g.dq.head(b, h);
  if (blk.rows.gathered || blk.pass > 0) {
    const int64_t layer = blk.rows.gathered ? 0 : Layers::gathers(p) + blk.pass - 1;
    base = layer_data + layers.at[bh] + layer * s.nq * D;
  }
  for (int64_t r = 0; r < blk.rows.count; ++r)
    std::copy_n(w.dq.data() + r * D, D, base + position(p, blk.rows, r) * D);
}

// dQ rows owned by gathered blocks come from layer 0; later passes add theirs in pass order.
void fix_dq(const Problem& pr, const Layers& layers, const float* layer_data, Grads g) {
  const Shape& s = pr.s;
  const int64_t D = s.dim;
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < s.heads_total() * s.nq; ++row) {
    const int64_t bh = row / s.nq, i = row % s.nq, pi = pr.plan.head_pattern[bh % s.heads];
    const HeadPattern& p = pr.plan.patterns[pi];
    if (Layers::count(p) == 0) continue;
    float* dq = g.dq.head(bh / s.heads, bh % s.heads) + i * D;
    const float* layer = layer_data + layers.at[bh] + i * D;
    const int64_t gathers = Layers::gathers(p);
    if (gathers && pr.elsewhere[pi][i]) std::copy_n(layer, D, dq);
    for (int64_t l = gathers; l < Layers::count(p); ++l)
      for (int64_t d = 0; d < D; ++d) dq[d] += layer[l * s.nq * D + d];
  }
}

}  // namespace

void execute_plan_backward(const TilePlan& plan, const Shape& s, const Tensor& q, const Tensor& k,
                           const Tensor& v, const Tensor& out, const float* row_lse,
                           const Tensor& dout, Grads g) {
  FloatBuffer delta(size_t(s.heads_total() * s.nq));
  kernels::row_deltas(out, dout, delta.data());
  Problem pr{plan, s, q, k, v, dout, row_lse, delta.data(), {}};
  for (const HeadPattern& p : plan.patterns)
    pr.elsewhere.push_back(Layers::gathers(p) ? gathered_rows(p, s.nq) : std::vector<uint8_t>{});
  const Layers layers(plan, s);
  FloatBuffer layer_data(size_t(layers.at.back()));
  std::fill_n(layer_data.data(), layer_data.size(), 0.0f);  // rows a later pass leaves out
  const HeadTasks qtasks(
      s, [&](int64_t bh) { return int64_t(plan.of_head(bh % s.heads).blocks.size()); });
  const HeadTasks ktasks(s, [&](int64_t) { return (s.nk + kKeyBlock - 1) / kKeyBlock; });
#pragma omp parallel
  {
    Work w(s.dim);
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t t = 0; t < qtasks.count(); ++t) {
      const auto [bh, bi] = qtasks.at(t);
      block_dq(pr, bh, bi, w);
      store_dq(pr, layers, layer_data.data(), bh, bi, w, g);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ktasks.count(); ++t) {
      const auto [bh, kb] = ktasks.at(t);
      key_block_grads(pr, bh, kb, w, g);
    }
  }
  fix_dq(pr, layers, layer_data.data(), g);
}

double execute_plan_backward_bytes(const TilePlan& plan, const Shape& s) {
  const Layers layers(plan, s);
  double gathered = 0;
  for (const HeadPattern& p : plan.patterns) gathered += Layers::gathers(p) ? s.nq : 0;
  return 4.0 * (s.heads_total() * s.nq + double(layers.at.back()) +
                Work::floats(s.dim) * omp_get_max_threads()) +
         gathered;
}

// ---- PlanAttention's backward ------------------------------------------------------------

double PlanAttention::saved_bytes(const Shape& s) const {
  return 4.0 * s.heads_total() * s.nq;
}

double PlanAttention::backward_extra_bytes(const Shape& s) const {
  return execute_plan_backward_bytes(*plan(s), s);
}

void PlanAttention::forward_train(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                                  Tensor& out, Saved& saved) {
  start_saved(saved, s, size_t(s.heads_total() * s.nq));
  execute_plan(*plan(s), s, q, k, v, out, saved.floats.data());
}

void PlanAttention::compute_backward(const Shape& s, const Tensor& q, const Tensor& k,
                                     const Tensor& v, const Tensor& out, const Saved& saved,
                                     const Tensor& dout, Grads g) {
  execute_plan_backward(*plan(s), s, q, k, v, out, saved.floats.data(), dout, g);
}

}  // namespace attn
