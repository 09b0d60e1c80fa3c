// The band |i − j| ≤ r·k (dilation k, j ≡ i mod k; causal: j ≤ i) walked over the shared
// online-softmax kernel. Shared by `sliding_window` and `longformer` (docs/ALGORITHMS.md §Band).
//
// A dilated band is k independent undilated bands, one per residue class ρ = i mod k, over
// the strided subsequence ρ, ρ + k, ρ + 2k, … (row stride k·D, no copy). Inside one
// subsequence of length m, row t sees keys t' with |t − t'| ≤ r (causal: t − r ≤ t' ≤ t).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attention/kernels/online_softmax.h"
#include "attention/tensor.h"

namespace attn::band {

struct Window {
  int64_t radius = 0;    // r ≥ 0, in steps of the dilation
  int64_t dilation = 1;  // k ≥ 1
  bool causal = false;
};

// The window for sequences of length n: a radius or dilation of n or more gives the same
// pattern as n (dense band; singleton residue classes), so clipping keeps index arithmetic
// far from overflow for any parameter value.
inline Window clipped_window(int64_t radius, int64_t dilation, bool causal, int64_t n) {
  return {std::min(radius, n), std::min(dilation, std::max<int64_t>(n, 1)), causal};
}

// Length of residue class ρ's subsequence of [0, n).
inline int64_t class_length(int64_t n, int64_t k, int64_t rho) {
  return rho < n ? (n - rho + k - 1) / k : 0;
}

// Residue classes that are non-empty: a dilation beyond n only leaves singletons.
inline int64_t classes(int64_t n, int64_t k) {
  return std::min(n, k);
}

// Keys [lo, hi] of subsequence row t (length m), in subsequence coordinates.
inline int64_t row_lo(const Window& w, int64_t t) {
  return std::max<int64_t>(0, t - w.radius);
}
inline int64_t row_hi(const Window& w, int64_t m, int64_t t) {
  return w.causal ? t : std::min(m - 1, t + w.radius);
}

// Number of keys row i of [0, n) sees in its band.
int64_t row_pairs(int64_t n, const Window& w, int64_t i);
// Number of rows whose band contains key j (the band transposed: equal to row_pairs when not
// causal; causal: the rows j, j + k, …, j + r·k inside [0, n)).
int64_t column_pairs(int64_t n, const Window& w, int64_t j);
// Visible (query, key) pairs of the whole band over [0, n), closed form (docs/ALGORITHMS.md §Band):
// per subsequence of length m, m(2r+1) − r(r+1) (non-causal, r < m), (r+1)(2m − r)/2
// (causal, r < m), else dense (m² or m(m+1)/2); the k classes have only two lengths.
double pairs(int64_t n, const Window& w);
// The keys of row i, ascending.
void row_keys(int64_t n, const Window& w, int64_t i, std::vector<int64_t>& out);

// One residue class of one head: rows of q, k, v, out with stride ld = k·D, length len.
struct View {
  const float *q, *k, *v;
  float* out;
  int64_t ld, len, rho;
};

// Runs f(task, softmax) for task in [0, total), in parallel with one OnlineSoftmax of width
// dim per thread; each task runs on one thread in a fixed order, so results do not depend on
// the thread count (the pattern of kernels::for_each_query_block).
template <class F>
void parallel_tasks(int64_t total, int64_t dim, F&& f) {
#pragma omp parallel
  {
    kernels::OnlineSoftmax sm(dim);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < total; ++t) f(t, sm);
  }
}

// The query blocks of one forward: kQueryRows rows of one residue class of one head each,
// numbered so that callers can mix them with other tasks in one parallel loop.
class BlockGrid {
 public:
  BlockGrid(const Shape& s, int64_t dilation)
      : s_(s),
        k_(dilation),
        blocks_((class_length(s.nq, dilation, 0) + kernels::kQueryRows - 1) / kernels::kQueryRows),
        per_head_(classes(s.nq, dilation) * blocks_) {}

  int64_t count() const { return s_.heads_total() * per_head_; }

  // per_block(b, h, view, row0, rows, softmax) for block `task` (nothing if it is empty: the
  // shorter residue classes have one block fewer).
  template <class PerBlock>
  void run(int64_t task, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
           kernels::OnlineSoftmax& sm, PerBlock&& per_block) const {
    const int64_t bh = task / per_head_, rho = task % per_head_ / blocks_, blk = task % blocks_;
    const int64_t b = bh / s_.heads, h = bh % s_.heads, off = rho * s_.dim;
    const View view{q.head(b, h) + off,
                    k.head(b, h) + off,
                    v.head(b, h) + off,
                    out.head(b, h) + off,
                    k_ * s_.dim,
                    class_length(s_.nq, k_, rho),
                    rho};
    const int64_t row0 = blk * kernels::kQueryRows;
    if (row0 < view.len)
      per_block(b, h, view, row0, std::min(kernels::kQueryRows, view.len - row0), sm);
  }

 private:
  Shape s_;
  int64_t k_, blocks_, per_head_;
};

// Calls per_block(b, h, view, row0, rows, softmax) for every block of the grid, in parallel.
template <class PerBlock>
void for_each_block(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                    int64_t dilation, PerBlock&& per_block) {
  const BlockGrid grid(s, dilation);
  parallel_tasks(grid.count(), s.dim, [&](int64_t t, kernels::OnlineSoftmax& sm) {
    grid.run(t, q, k, v, out, sm, per_block);
  });
}

// A band without further hidden keys.
struct NoHidden {
  bool any(int64_t, int64_t) const { return false; }
  bool operator()(int64_t) const { return false; }
};

// Feeds the band of block rows [row0, row0 + rows) of `view` to `sm` (begun by the caller).
// Keys every row sees go through attend(); only the two edges, and spans holding keys that
// `hidden` removes from the band (hidden(t'), hidden.any(lo, hi) over subsequence keys), take
// the masked path.
template <class Hidden>
void attend_band(kernels::OnlineSoftmax& sm, const View& view, const Window& w, int64_t row0,
                 int64_t rows, const Hidden& hidden) {
  const int64_t last = row0 + rows - 1;
  const int64_t lo = row_lo(w, row0), hi = row_hi(w, view.len, last);
  // Keys visible to every row of the block.
  const int64_t full_lo = std::max(lo, last - w.radius);
  const int64_t full_hi = std::min(hi, w.causal ? row0 : row0 + w.radius);
  auto masked = [&](int64_t a, int64_t b) {
    if (a > b) return;
    sm.attend_masked(view.k + a * view.ld, view.v + a * view.ld, view.ld, b - a + 1,
                     [&](int64_t r, int64_t c) {
                       const int64_t t = row0 + r, j = a + c;
                       const bool in = j >= t - w.radius && j <= (w.causal ? t : t + w.radius);
                       return in && !hidden(j) ? 0.0f : kernels::OnlineSoftmax::kHidden;
                     });
  };
  if (full_lo > full_hi) return masked(lo, hi);
  masked(lo, full_lo - 1);
  if (hidden.any(full_lo, full_hi))
    masked(full_lo, full_hi);
  else
    sm.attend(view.k + full_lo * view.ld, view.v + full_lo * view.ld, view.ld,
              full_hi - full_lo + 1);
  masked(full_hi + 1, hi);
}

}  // namespace attn::band
