// The one blocked online-softmax ("flash") kernel that dense, sliding-window, Longformer and
// LSH attention share (docs/DESIGN.md §Shared kernel).
//
// For a block of up to kQueryRows query rows it keeps the running max m, running sum l and an
// unnormalized accumulator per row (arXiv:1805.02867, arXiv:2307.08691) while the caller feeds
// it spans of keys. No score matrix larger than kQueryRows x kKeyTile ever exists, so extra
// memory is O(kQueryRows·(kKeyTile + D)) per thread whatever the sequence length.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "attention/tensor.h"

namespace attn::kernels {

constexpr int64_t kQueryRows = 64;  // rows per query block (4 AVX-512 vectors)
constexpr int64_t kKeyTile = 128;   // keys per score tile: 32 KiB of scores, fits L1/L2

class OnlineSoftmax {
 public:
  explicit OnlineSoftmax(int64_t dim);

  // Starts a block of `rows` (<= kQueryRows) query rows q[r * ldq + d]; logits are
  // scale · q·k.
  void begin(const float* q, int64_t ldq, int64_t rows, float scale);

  // Attends to n keys k[c * ld + d] with values v[c * ld + d], all visible.
  void attend(const float* k, const float* v, int64_t ld, int64_t n);

  // As attend(), with logit(r, c) += bias(r, c) where r is the row in the block and c the
  // key in this span; -infinity hides the key (exactly zero weight).
  template <class Bias>
  void attend_masked(const float* k, const float* v, int64_t ld, int64_t n, Bias&& bias) {
    for (int64_t c0 = 0; c0 < n; c0 += kKeyTile) {
      const int64_t nc = std::min(kKeyTile, n - c0);
      compute_scores(k + c0 * ld, ld, nc);
      for (int64_t c = 0; c < nc; ++c) {
        float* sc = scores_.data() + c * kQueryRows;
        for (int64_t r = 0; r < rows_; ++r) sc[r] += bias(r, c0 + c);
      }
      accumulate(v + c0 * ld, ld, nc);
    }
  }

  // Writes the normalized rows to out[r * ldo + d]. If lse is given, lse[r] = log-sum-exp of
  // the row's logits. A row that saw no visible key gets output 0 and lse = -infinity.
  void finish(float* out, int64_t ldo, float* lse = nullptr);

  int64_t rows() const { return rows_; }
  int64_t dim() const { return dim_; }

  static constexpr float kHidden = -std::numeric_limits<float>::infinity();

 private:
  void compute_scores(const float* k, int64_t ld, int64_t n);  // scores_[c][r]
  void accumulate(const float* v, int64_t ld, int64_t n);      // softmax update + P·V

  int64_t dim_, rows_ = 0;
  FloatBuffer qt_;                 // [D][kQueryRows] scaled, transposed query block (zero padded)
  FloatBuffer scores_;             // [kKeyTile][kQueryRows] logits, then probabilities
  FloatBuffer acc_;                // [kQueryRows][D] unnormalized output
  FloatBuffer max_, sum_, alpha_;  // [kQueryRows]
};

// Calls per_block(b, h, row0, rows, softmax) for every block of kQueryRows query rows of every
// (batch, head), in parallel over all blocks with one OnlineSoftmax per thread. Every row is
// computed by one thread in a fixed order, so results do not depend on the thread count.
template <class PerBlock>
void for_each_query_block(const Shape& s, PerBlock&& per_block) {
  const int64_t blocks = (s.nq + kQueryRows - 1) / kQueryRows;
  const int64_t total = s.heads_total() * blocks;
#pragma omp parallel
  {
    OnlineSoftmax sm(s.dim);
    // Later blocks of causal problems are heavier; dynamic scheduling balances them.
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < total; ++t) {
      const int64_t bh = t / blocks, blk = t % blocks;
      const int64_t row0 = blk * kQueryRows;
      per_block(bh / s.heads, bh % s.heads, row0, std::min(kQueryRows, s.nq - row0), sm);
    }
  }
}

}  // namespace attn::kernels
