// `full`: exact dense attention by the shared blocked online-softmax kernel. No n x n buffer:
// extra memory is the per-thread scratch of OnlineSoftmax, independent of n. Its backward is
// flash-style (docs/ALGORITHMS.md §Backward): it keeps only the row log-sum-exps and recomputes
// each tile of P, in two passes so that every gradient row has one writer.
#include <omp.h>

#include <algorithm>

#include "attention/kernels/flash_backward.h"
#include "attention/kernels/online_softmax.h"
#include "attention/registry.h"

namespace attn {
namespace {

using kernels::BackwardTile;
using kernels::kBackKeys;
using kernels::kBackRows;
using kernels::OnlineSoftmax;

// Tiles of the backward: kBackRows query rows by kBackKeys keys, the same grid for both
// passes so that causal diagonal tiles line up.
static_assert(kBackRows == kBackKeys, "causal tiles assume a square grid");
constexpr int64_t kTile = kBackRows;

// Calls f(bh, block) for every (batch·head, block of kTile positions of n), in parallel with one
// BackwardTile per thread; every block is done by one thread, in a fixed order.
template <class F>
void for_each_tile_block(const Shape& s, int64_t n, F&& f) {
  const int64_t blocks = (n + kTile - 1) / kTile, total = s.heads_total() * blocks;
#pragma omp parallel
  {
    BackwardTile tile(s.dim);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < total; ++t) f(t / blocks, t % blocks, tile);
  }
}

class Full final : public Attention {
 public:
  std::string name() const override { return "full"; }

  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override {
    run(s, q, k, v, out, nullptr);
  }

  double flops(const Shape& s) const override { return s.dense_flops(); }

  // Per thread: transposed query block, score tile, accumulator and three row vectors.
  double extra_bytes(const Shape& s) const override {
    using namespace kernels;
    double per_thread = kQueryRows * (2.0 * s.dim + kKeyTile + 3) * sizeof(float);
    return per_thread * omp_get_max_threads();
  }

  bool has_backward() const override { return true; }
  // The row log-sum-exps: O(n).
  double saved_bytes(const Shape& s) const override { return 4.0 * s.heads_total() * s.nq; }
  // δ per row, and per thread the P and dS tiles.
  double backward_extra_bytes(const Shape& s) const override {
    return 4.0 * s.heads_total() * s.nq +
           2.0 * kBackRows * kBackKeys * sizeof(float) * omp_get_max_threads();
  }
  void forward_train(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                     Saved& saved) override {
    start_saved(saved, s, size_t(s.heads_total() * s.nq));
    run(s, q, k, v, out, saved.floats.data());
  }

 protected:
  void compute_backward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Saved& saved, const Tensor& dout,
                        Grads g) override {
    FloatBuffer delta(size_t(s.heads_total() * s.nq));
    kernels::row_deltas(out, dout, delta.data());
    const Heads in{s, q, k, v, dout, saved.floats.data(), delta.data()};
    for_each_tile_block(s, s.nk, [&](int64_t bh, int64_t kb, BackwardTile& tile) {
      key_block_grads(in, bh, kb, tile, g);
    });
    for_each_tile_block(s, s.nq, [&](int64_t bh, int64_t qb, BackwardTile& tile) {
      query_block_grads(in, bh, qb, tile, g);
    });
  }

 private:
  // lse: the row log-sum-exps [bh·Nq + i], written when given.
  void run(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
           float* lse) const {
    const int64_t D = s.dim;
    const float scale = s.softmax_scale();
    kernels::for_each_query_block(
        s, [&](int64_t b, int64_t h, int64_t row0, int64_t rows, OnlineSoftmax& sm) {
          const float* kh = k.head(b, h);
          const float* vh = v.head(b, h);
          sm.begin(q.head(b, h) + row0 * D, D, rows, scale);
          if (!s.causal) {
            sm.attend(kh, vh, D, s.nk);
          } else {
            // Keys left of the block are all visible; the diagonal block hides j > i.
            sm.attend(kh, vh, D, row0);
            sm.attend_masked(kh + row0 * D, vh + row0 * D, D, rows, [](int64_t r, int64_t c) {
              return c > r ? OnlineSoftmax::kHidden : 0.0f;
            });
          }
          float* l = lse ? lse + (b * s.heads + h) * s.nq + row0 : nullptr;
          sm.finish(out.head(b, h) + row0 * D, D, l);
        });
  }

  struct Heads {
    const Shape& s;
    const Tensor &q, &k, &v, &dout;
    const float *lse, *delta;  // [bh·Nq + i]
    kernels::TileRows rows(int64_t bh, int64_t r0) const {
      const int64_t b = bh / s.heads, h = bh % s.heads, D = s.dim;
      return {q.head(b, h) + r0 * D,     D,
              dout.head(b, h) + r0 * D,  D,
              lse + bh * s.nq + r0,      delta + bh * s.nq + r0,
              std::min(kTile, s.nq - r0)};
    }
    kernels::TileKeys keys(int64_t bh, int64_t c0) const {
      const int64_t b = bh / s.heads, h = bh % s.heads, D = s.dim;
      return {k.head(b, h) + c0 * D, v.head(b, h) + c0 * D, D, std::min(kTile, s.nk - c0)};
    }
  };

  // dK, dV of key block kb: Σ over the query tiles that see it (causal: from the diagonal on).
  static void key_block_grads(const Heads& in, int64_t bh, int64_t kb, BackwardTile& tile,
                              Grads g) {
    const Shape& s = in.s;
    const int64_t b = bh / s.heads, h = bh % s.heads, D = s.dim, c0 = kb * kTile;
    const kernels::TileKeys keys = in.keys(bh, c0);
    float* dk = g.dk.head(b, h) + c0 * D;
    float* dv = g.dv.head(b, h) + c0 * D;
    std::fill(dk, dk + keys.count * D, 0.0f), std::fill(dv, dv + keys.count * D, 0.0f);
    const float scale = s.softmax_scale();
    for (int64_t r0 = s.causal ? c0 : 0; r0 < s.nq; r0 += kTile) {
      if (s.causal && r0 == c0)
        tile.compute(in.rows(bh, r0), keys, scale, [](int64_t r, int64_t c) { return c <= r; });
      else
        tile.compute(in.rows(bh, r0), keys, scale);
      tile.add_dk_dv(dk, dv, D, scale);
    }
  }

  // dQ of query block qb: Σ over the key tiles it sees (causal: up to the diagonal).
  static void query_block_grads(const Heads& in, int64_t bh, int64_t qb, BackwardTile& tile,
                                Grads g) {
    const Shape& s = in.s;
    const int64_t b = bh / s.heads, h = bh % s.heads, D = s.dim, r0 = qb * kTile;
    const kernels::TileRows rows = in.rows(bh, r0);
    float* dq = g.dq.head(b, h) + r0 * D;
    std::fill(dq, dq + rows.count * D, 0.0f);
    const float scale = s.softmax_scale();
    for (int64_t c0 = 0; c0 < (s.causal ? r0 + 1 : s.nk); c0 += kTile) {
      if (s.causal && c0 == r0)
        tile.compute(rows, in.keys(bh, c0), scale, [](int64_t r, int64_t c) { return c <= r; });
      else
        tile.compute(rows, in.keys(bh, c0), scale);
      tile.add_dq(dq, D, scale);
    }
  }
};

}  // namespace

VariantInfo full_variant() {
  return {"full",
          "exact dense attention, blocked online softmax (flash-style) on AVX-512 micro-kernels; "
          "O(n^2·D) time, O(threads·D) extra memory (no n x n buffer). Backward: flash-style "
          "recomputation from the saved row log-sum-exps (O(n) saved).",
          {},
          [](const Params&) { return std::make_unique<Full>(); }};
}

}  // namespace attn
