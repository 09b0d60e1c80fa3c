// One tile of the flash-style backward (arXiv:2307.08691, Algorithm 2; docs/ALGORITHMS.md
// §Backward), shared by `full` and the tile-plan executor: for up to kBackRows query rows and
// kBackKeys keys it recomputes P from the saved row log-sum-exps and forms dS, then adds the
// tile's share to dQ, dK or dV. No buffer larger than one tile exists, so the backward's
// scratch is O(kBackRows·kBackKeys) per thread whatever the sequence length.
#pragma once

#include <cstdint>
#include <limits>

#include "attention/tensor.h"

namespace attn::kernels {

constexpr int64_t kBackRows = 128;  // query rows per tile at most
constexpr int64_t kBackKeys = 128;  // keys per tile at most

// The query side of a tile: rows q[r·ldq + d] and dO[r·ldo + d], their log-sum-exps (−inf:
// the row takes no part, its probabilities are 0) and δ_r = rowsum(dO∘O).
struct TileRows {
  const float* q;
  int64_t ldq;
  const float* dout;
  int64_t ldo;
  const float* lse;
  const float* delta;
  int64_t count;
};

// The key side: k[c·ld + d], v[c·ld + d] for c < count.
struct TileKeys {
  const float* k;
  const float* v;
  int64_t ld;
  int64_t count;
};

class BackwardTile {
 public:
  explicit BackwardTile(int64_t dim);

  // P = exp(scale·Q·Kᵀ − lse) and dS = P∘(dO·Vᵀ − δ) of one tile, every key visible.
  void compute(const TileRows& rows, const TileKeys& keys, float scale);
  // The same where visible(r, c) holds; hidden entries get P = dS = 0.
  template <class Visible>
  void compute(const TileRows& rows, const TileKeys& keys, float scale, Visible&& visible) {
    scores(rows, keys, scale);
    for (int64_t r = 0; r < rows.count; ++r)
      for (int64_t c = 0; c < keys.count; ++c)
        if (!visible(r, c)) p_[r * kBackKeys + c] = kHidden;
    finish();
  }

  // dq[r·ld + d] += scale·Σ_c dS[r][c]·k[c]  (the tile's rows).
  void add_dq(float* dq, int64_t ld, float scale) const;
  // dk[c·ld + d] += scale·Σ_r dS[r][c]·q[r] and dv[c·ld + d] += Σ_r P[r][c]·dO[r] (its keys).
  void add_dk_dv(float* dk, float* dv, int64_t ld, float scale) const;

  static constexpr float kHidden = -std::numeric_limits<float>::infinity();

 private:
  void scores(const TileRows& rows, const TileKeys& keys, float scale);  // p_ = scale·Q·Kᵀ
  void finish();                                                         // p_ = P, ds_ = dS

  int64_t dim_;
  TileRows rows_{};
  TileKeys keys_{};
  FloatBuffer p_, ds_;  // [kBackRows][kBackKeys]
};

// δ_i = Σ_d dO_id·O_id for every row of [B,H,Nq,D] out and dout, into delta[bh·Nq + i]; each
// row summed in order by one thread.
void row_deltas(const Tensor& out, const Tensor& dout, float* delta);

}  // namespace attn::kernels
