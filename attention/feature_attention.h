// Attention through a positive feature map φ (docs/ALGORITHMS.md §Feature-map attention):
//
//   o_i = φ(q_i)·S / φ(q_i)·z,   S = Σ_j φ(k_j)ᵀ v_j (M×D),   z = Σ_j φ(k_j) (M),
//
// sums over every key, or over j ≤ i when causal (block-wise prefix sums, so the work is GEMMs).
// `linear` (elu + 1) supplies φ; this driver owns the sums, the causal walk and the
// scheduling. It was extracted from `performer`, which since keeps its own copy of this walk
// with a backward-looking running key shift (strict causality, docs/ALGORITHMS.md §Performer
// causal shift); moving that shift into this driver, so both use one walk, is still to do.
//
// Determinism: every sum over sequence positions is taken over fixed-size blocks (kBlockRows,
// and chunks of kChunkRows inside a causal block) whose partial results are combined in
// order, and every oneDNN call runs inside the parallel region (single-threaded there), so
// outputs do not depend on the thread count or on which thread did what.
#pragma once

#include <cstdint>
#include <exception>

#include "attention/attention.h"

namespace attn::feature {

// Key rows per partial sum of φ(K)ᵀV: fixed, so reductions never depend on the thread count.
constexpr int64_t kBlockRows = 4096;
// Causal: rows per diagonal tile (masked φ(Q_c)φ(K_c)ᵀ). Its cost per row, 2·C·(M + D), is
// small next to the 8·M·D of the rest at C = 64 (M = 256, D = 64: 41k against 131k FLOPs).
constexpr int64_t kChunkRows = 64;
// Non-causal: query rows per task (one feature-map buffer of this many rows per thread).
constexpr int64_t kQueryRows = 256;

// a·b over n floats (AVX-512 where present; the same order of operations on every call).
float dot(const float* a, const float* b, int64_t n);
// z[f] += Σ_r f_r[f] over `rows` rows of stride ld, in row order.
void add_column_sums(const float* f, int64_t rows, int64_t ld, int64_t n, float* z);

// One (batch, head) being processed: its inputs, φ(K) and per-block partial sums.
struct HeadWork {
  const float *q, *k, *v;
  float* out;
  FloatBuffer kf;    // φ(K) [nk, M]
  FloatBuffer sums;  // per key block: [M·D] φ(K_b)ᵀV_b then [M] φ(K_b)ᵀ1
  FloatBuffer bmax;  // per key block: a statistic the map reduces to one key shift (Performer)
  float shift = 0;   // the (batch, head)'s key shift
};

class FeatureAttention : public Attention {
 public:
  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override;

 protected:
  // Feature columns M of φ for head dim d.
  virtual int64_t width(int64_t d) const = 0;
  // Once per forward, before any head (Performer: draws W, sets its data normalizer).
  virtual void prepare(const Shape& s) {}
  // First pass over key block b (rows b·kBlockRows …): φ(K_b) into h.kf, or as much of it as
  // can be computed before the head-wide key shift is known (recorded in h.bmax[b]).
  virtual void key_block_pass1(const Shape& s, HeadWork& h, int64_t b) const = 0;
  // The head-wide key shift from the blocks' statistics (0 for maps that need none).
  virtual float key_shift(const HeadWork& h, int64_t blocks) const { return 0.0f; }
  // Completes φ(K_b) in h.kf once h.shift is known.
  virtual void finish_key_block(const Shape& s, HeadWork& h, int64_t b) const {}
  // φ of `rows` query rows x [rows, d] into f [rows, M].
  virtual void query_features(const float* x, int64_t rows, int64_t d, float* f) const = 0;

  // The driver's peak memory: φ(K) and the block sums per concurrently processed head, and
  // the per-thread scratch (a query task's features; causal: the diagonal tile and states).
  double work_bytes(const Shape& s) const;

 private:
  size_t scratch_floats(const Shape& s) const;
  void key_block_pass2(const Shape& s, HeadWork& h, int64_t b, bool want_sums) const;
  void query_rows(const Shape& s, HeadWork& h, int64_t row0, int64_t rows, float* scratch) const;
  template <class Before>
  void accumulate_block(const Shape& s, const HeadWork& h, int64_t r0, int64_t end, Before&& before,
                        float* sum) const;
  void causal_block(const Shape& s, HeadWork& h, int64_t b, const float* start,
                    float* scratch) const;
  void combine_blocks(const Shape& s, HeadWork& h, int64_t f) const;
  void head_alone(const Shape& s, HeadWork& h, float* scratch) const;
  void head_shared(const Shape& s, HeadWork& h, float* scratch, std::exception_ptr& error) const;
};

}  // namespace attn::feature
