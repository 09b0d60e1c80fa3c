// The band |i − j| ≤ r·k (dilation k, j ≡ i mod k; causal: j ≤ i) as tile-plan spans, shared
// by `sliding_window`, `longformer` and `sink_window` (Longformer, arXiv:2004.05150, §3).
//
// A dilated band is k independent undilated bands, one per residue class ρ = i mod k, over
// the strided subsequence ρ, ρ + k, ρ + 2k, … (row stride k·D, no copy). Inside one
// subsequence of length m, row t sees keys t' with t − left ≤ t' ≤ t + right.
#pragma once

#include <algorithm>
#include <cstdint>

#include "attention/kernels/online_softmax.h"
#include "attention/plan.h"

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

// One query block of the band: subsequence rows [row0, row0 + rows) of residue class rho
// (dilation k, length m); row t sees subsequence keys [t − left, t + right] ∩ [kmin, m).
struct BandBlock {
  int64_t rho, k, m, row0, rows;
  int64_t left, right, kmin = 0;
};

// Adds the block and its band spans to `p`. Keys every row sees form one full span; only the
// two edges, and a middle holding keys the pattern hides (p.hidden, when skip_hidden), are
// partial. Positions are rho + t·k.
inline void add_band_block(HeadPattern& p, const BandBlock& b, bool skip_hidden) {
  const int64_t last = b.row0 + b.rows - 1;
  const int64_t lo = std::max(b.kmin, b.row0 - b.left), hi = std::min(b.m - 1, last + b.right);
  const int64_t full_lo = std::max(lo, last - b.left), full_hi = std::min(hi, b.row0 + b.right);
  p.add_block({b.rho + b.row0 * b.k, b.rows, b.k, false});
  auto span = [&](int64_t a, int64_t z, bool partial) {
    p.add_span({{b.rho + a * b.k, z - a + 1, b.k, false},
                partial,
                -b.left * b.k,
                b.right * b.k,
                partial && skip_hidden});
  };
  if (full_lo > full_hi) return span(lo, hi, true);
  span(lo, full_lo - 1, true);
  bool hides = false;
  for (int64_t t = full_lo; skip_hidden && !hides && t <= full_hi; ++t)
    hides = p.hidden[b.rho + t * b.k];
  span(full_lo, full_hi, hides);
  span(full_hi + 1, hi, true);
}

// The band of window w over [0, n) as blocks of up to kQueryRows rows per residue class,
// class-major (consecutive blocks share most of their keys). after(p) may add further spans
// to each block.
template <class After>
void add_band(HeadPattern& p, int64_t n, const Window& w, bool skip_hidden, After&& after) {
  for (int64_t rho = 0; rho < classes(n, w.dilation); ++rho) {
    const int64_t m = class_length(n, w.dilation, rho);
    for (int64_t row0 = 0; row0 < m; row0 += kernels::kQueryRows) {
      add_band_block(p,
                     {rho, w.dilation, m, row0, std::min(kernels::kQueryRows, m - row0), w.radius,
                      w.causal ? 0 : w.radius},
                     skip_hidden);
      after(p);
    }
  }
}

}  // namespace attn::band
