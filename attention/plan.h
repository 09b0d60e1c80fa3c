// A sparsity pattern as data (the model is PyTorch FlexAttention's block mask): for every query
// block, the key spans it visits, each either full (every row sees every key, no mask work) or
// partial (an element predicate decides), over the one OnlineSoftmax kernel. A plan is built
// once per shape; FLOPs (4·D per visited pair), visited keys (coverage), the plan's bytes and
// the transposed index (per key block, the tiles that read it: what a backward pass walks) are
// all derived from it, so a new pattern is only a builder.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "attention/attention.h"

namespace attn {

// Sequence positions base + t·step for t in [0, count), or, when gathered, the positions
// gather[base + t] of the pattern's gather list (ascending within one Positions).
struct Positions {
  int64_t base = 0, count = 0, step = 1;
  bool gathered = false;
};

// A bound that never clips: |j − i| < n for every pair of positions.
constexpr int64_t kUnbounded = std::numeric_limits<int64_t>::max() / 4;

// Keys one query block visits. Full: all of them, for every row. Partial: key position j is
// visible to query position i iff lo ≤ j − i ≤ hi and, with skip_hidden, j is not hidden.
struct KeySpan {
  Positions keys;
  bool partial = false;
  int64_t lo = -kUnbounded, hi = kUnbounded;
  bool skip_hidden = false;
};

// Up to kernels::kQueryRows query rows and their spans spans[first, first + count), in
// pass `pass`: a row's passes see disjoint keys and are combined by their log-sum-exp
// (softmax over the union), so that one row can take keys through differently shaped blocks.
struct QueryBlock {
  Positions rows;
  int64_t first = 0, count = 0;
  int64_t pass = 0;
};

// One tile of the transposed index: block `block` reads key span `span`.
struct TileRef {
  int64_t block, span;
};

// The tiles of the heads that share one pattern.
//
// Invariants (checked by TilePlan::finish): in pass 0 every query row belongs to exactly one
// block with strided rows, or to exactly one block with gathered rows, which then supplies
// its output (a strided block that also holds it computes a row that is overwritten: it keeps
// the blocks of the other rows aligned, as Longformer's global rows do); in a later pass a
// row belongs to at most one block, with strided rows. And a row sees each key at most once
// (checked by tests/test_plan.cpp, not by finish: it costs a pass over every visited pair).
struct HeadPattern {
  std::vector<QueryBlock> blocks;
  std::vector<KeySpan> spans;
  std::vector<int64_t> gather;  // positions named by gathered Positions
  std::vector<uint8_t> hidden;  // per key position: 1 = hidden from skip_hidden spans
  int64_t leading = 0;          // the first `leading` blocks (the heaviest) run first
  int64_t passes = 1;           // 1 + the largest block pass

  // Derived by TilePlan::finish.
  double pairs = 0;                      // visited (query, key) pairs
  std::vector<int64_t> key_block_start;  // transpose: refs of key block kb are
  std::vector<TileRef> refs;             //   refs[key_block_start[kb], key_block_start[kb+1])

  // Appends a block of `rows` whose spans are the ones added next (add_span).
  void add_block(Positions rows, int64_t pass = 0);
  void add_span(const KeySpan& span);
};

class TilePlan {
 public:
  // Positions per key block of the transposed index.
  static constexpr int64_t kKeyBlock = 64;

  TilePlan(int64_t heads, int64_t nq, int64_t nk) : nq(nq), nk(nk), head_pattern(heads, 0) {}

  int64_t nq, nk;
  std::vector<HeadPattern> patterns;
  std::vector<int64_t> head_pattern;  // head h uses patterns[head_pattern[h]]

  // Checks the invariants (std::logic_error names the broken one: a builder bug) and derives
  // pairs and the transposed index of every pattern.
  void finish();

  const HeadPattern& of_head(int64_t h) const { return patterns[head_pattern[h]]; }
  // Visited pairs of all heads of one batch element.
  double pairs() const;
  // The keys query row i of head h visits, ascending.
  void row_keys(int64_t h, int64_t i, std::vector<int64_t>& out) const;
  // Bytes held by the plan (patterns, gather lists, hidden flags, transposed index).
  double bytes() const;
};

// Position of element t of `pos`.
inline int64_t position(const HeadPattern& p, const Positions& pos, int64_t t) {
  return pos.gathered ? p.gather[pos.base + t] : pos.base + t * pos.step;
}

// The elements [c0, c1) of span `sp` that lie inside its bounds lo ≤ j − i ≤ hi for query
// position i (all of them when the span is full); hidden keys are not yet removed.
std::pair<int64_t, int64_t> bounded_range(const HeadPattern& p, const KeySpan& sp, int64_t i);

// Calls f(j) for every key position j of span `sp` visible to query position i, in span order.
template <class F>
void for_each_visible(const HeadPattern& p, const KeySpan& sp, int64_t i, F&& f) {
  const auto [c0, c1] = bounded_range(p, sp, i);
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t j = position(p, sp.keys, c);
    if (!(sp.skip_hidden && p.hidden[j])) f(j);
  }
}

// Per query position: 1 if a block with gathered rows holds it (and so supplies its output).
std::vector<uint8_t> gathered_rows(const HeadPattern& p, int64_t nq);

// Runs the plan over the OnlineSoftmax kernel, in parallel over (batch·head, query block) with
// every row computed by one thread in a fixed order: bit-identical for any thread count. With
// row_lse, also writes each row's log-sum-exp over all its keys to row_lse[bh·Nq + i] (−inf
// for a row without keys): what the backward needs.
void execute_plan(const TilePlan& plan, const Shape& s, const Tensor& q, const Tensor& k,
                  const Tensor& v, Tensor& out, float* row_lse = nullptr);
// The gradients of execute_plan's output given dout (docs/ALGORITHMS.md §Backward): dQ walking
// the plan's blocks, dK and dV walking its transposed index, each gradient row written by one
// task in a fixed order (bit-identical for any thread count). row_lse: from execute_plan.
void execute_plan_backward(const TilePlan& plan, const Shape& s, const Tensor& q, const Tensor& k,
                           const Tensor& v, const Tensor& out, const float* row_lse,
                           const Tensor& dout, Grads g);
// Peak bytes execute_plan_backward allocates.
double execute_plan_backward_bytes(const TilePlan& plan, const Shape& s);
// Peak bytes execute_plan allocates: per-thread kernel scratch, gathered keys and values,
// gathered rows' outputs, and the outputs and log-sum-exps of the passes after the first.
double execute_plan_bytes(const TilePlan& plan, const Shape& s);

// Base of the variants that are plan builders: forward, flops, extra_bytes and visited_keys
// all come from the plan, which is built once per shape and kept.
class PlanAttention : public Attention {
 public:
  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override;
  double flops(const Shape& s) const override;
  double extra_bytes(const Shape& s) const override;
  bool visited_keys(const Shape& s, int64_t b, int64_t h, int64_t i,
                    VisitedKeys& out) const override;
  std::shared_ptr<const TilePlan> plan(const Shape& s) const override;

  // The backward of every plan builder: one executor over the plan and its transpose.
  bool has_backward() const override { return true; }
  double saved_bytes(const Shape& s) const override;  // the row log-sum-exps
  double backward_extra_bytes(const Shape& s) const override;
  void forward_train(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                     Saved& saved) override;

 protected:
  void compute_backward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Saved& saved, const Tensor& dout,
                        Grads g) override;
  // The plan of a validated shape (finish() is called by plan()).
  virtual TilePlan build_plan(const Shape& s) const = 0;
  // Drops the kept plan (after the pattern's random state changed).
  void forget_plan();

 private:
  mutable std::mutex mutex_;
  mutable std::shared_ptr<const TilePlan> plan_;
  mutable Shape plan_shape_;
};

}  // namespace attn
