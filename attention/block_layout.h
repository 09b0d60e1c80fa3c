// Block layouts (BigBird, block_sparse): a pattern given per (query block, key block) of b
// positions, turned into tile-plan spans. Shared by `bigbird` and `block_sparse`.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attention/kernels/online_softmax.h"
#include "attention/plan.h"
#include "attention/random.h"

namespace attn::blocks {

// What one query block sees of one key block: every key, or the keys at or before the row
// (the diagonal block of a causal pattern).
enum class Tile : uint8_t { None = 0, Full = 1, Causal = 2 };

// One query block's visible key blocks, ascending, with their tiles.
using Row = std::vector<std::pair<int64_t, Tile>>;

inline int64_t count(int64_t n, int64_t b) {
  return (n + b - 1) / b;
}

// Adds query block qb of a layout with block size b to `p`: in pieces of up to kQueryRows
// rows, with runs of adjacent full key blocks merged into one span (fewer, longer key tiles)
// and causal tiles cut at the piece's last row.
inline void add_row(HeadPattern& p, int64_t qb, const Row& row, int64_t b, int64_t nq, int64_t nk) {
  const int64_t end = std::min(nq, (qb + 1) * b);
  for (int64_t r0 = qb * b; r0 < end; r0 += kernels::kQueryRows) {
    const int64_t rows = std::min(kernels::kQueryRows, end - r0), last = r0 + rows - 1;
    p.add_block({r0, rows, 1, false});
    int64_t run_lo = 0, run_hi = -1;  // pending full keys [run_lo, run_hi]
    auto flush = [&] {
      if (run_hi >= run_lo) p.add_span({{run_lo, run_hi - run_lo + 1}});
      run_hi = -1;
    };
    for (auto [kb, tile] : row) {
      const int64_t lo = kb * b, hi = std::min(nk, lo + b) - 1;
      if (tile == Tile::Full) {
        if (run_hi != lo - 1) flush(), run_lo = lo;
        run_hi = hi;
      } else if (tile == Tile::Causal) {
        flush();
        p.add_span({{lo, std::min(hi, last) - lo + 1}, true, -kUnbounded, 0});
      }
    }
    flush();
  }
}

// k distinct values drawn uniformly from `pool`, ascending; the draw depends only on
// (seed, stream).
inline std::vector<int64_t> sample(std::vector<int64_t> pool, int64_t k, uint64_t seed,
                                   uint64_t stream) {
  return sample_distinct(std::move(pool), k,
                         RandomStream(seed, RandomDomain::kBlockLayout, stream));
}

}  // namespace attn::blocks
