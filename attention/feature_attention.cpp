#include "attention/feature_attention.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#include <omp.h>

// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 reductions.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <algorithm>
#include <vector>

#include "attention/kernels/gemm.h"

namespace attn::feature {
namespace {

using kernels::sgemm;

constexpr int64_t kMaxRun = 256;  // columns combined at once (stack buffer)

#if defined(__AVX512F__)
inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
}
#endif

// Runs body(i) for i in [0, n) over the team, dynamically scheduled; the first exception is
// kept for the caller to rethrow after the parallel region.
template <class Body>
void parallel_tasks(int64_t n, std::exception_ptr& error, Body&& body) {
#pragma omp for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    try {
      body(i);
    } catch (...) {
#pragma omp critical(feature_attention_error)
      if (!error) error = std::current_exception();
    }
  }
}

}  // namespace

// z[f] += Σ_r f_r[f] over `rows` rows of stride ld, in row order.
void add_column_sums(const float* f, int64_t rows, int64_t ld, int64_t n, float* z) {
  for (int64_t r = 0; r < rows; ++r)
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) z[i] += f[r * ld + i];
}

float dot(const float* a, const float* b, int64_t n) {
  float s = 0;
#if defined(__AVX512F__)
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = tail_mask(n - i);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), acc);
  }
  s = _mm512_reduce_add_ps(acc);
#else
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
#endif
  return s;
}

size_t FeatureAttention::scratch_floats(const Shape& s) const {
  const int64_t M = width(s.dim);
  return s.causal ? size_t(2 * (M * s.dim + M) + kChunkRows * (M + kChunkRows))
                  : size_t(kQueryRows * M);
}

double FeatureAttention::work_bytes(const Shape& s) const {
  const double M = width(s.dim), D = s.dim;
  const double blocks =
      double(checked_add(s.nk, kBlockRows - 1, "feature-map key blocks") / kBlockRows);
  const double per_head = s.nk * M + blocks * (M * D + M + 1);
  const double per_thread = double(scratch_floats(s));
  const double T = omp_get_max_threads();
  const double G = s.heads_total() >= T ? T : 1;
  return (G * per_head + T * per_thread) * sizeof(float);
}

// Finishes φ(K) of block b (the map's second pass, the shift known now) and, if wanted, its
// partial sums φ(K_b)ᵀV_b and φ(K_b)ᵀ1.
void FeatureAttention::key_block_pass2(const Shape& s, HeadWork& h, int64_t b,
                                       bool want_sums) const {
  finish_key_block(s, h, b);
  if (!want_sums) return;
  const int64_t d = s.dim, M = width(d), r0 = b * kBlockRows;
  const int64_t rows = std::min(kBlockRows, s.nk - r0);
  const float* f = h.kf.data() + r0 * M;
  float* sum = h.sums.data() + b * (M * d + M);
  if (!s.causal) {
    sgemm(true, false, M, d, rows, 1.0f, f, M, h.v + r0 * d, d, 0.0f, sum, d);
    std::fill(sum + M * d, sum + M * d + M, 0.0f);
    add_column_sums(f, rows, M, M, sum + M * d);
  } else {
    std::fill(sum, sum + M * d + M, 0.0f);
    accumulate_block(
        s, h, r0, r0 + rows, [](int64_t, int64_t) {}, sum);
  }
}

// Non-causal output rows: φ(Q)·S / φ(Q)·z with S, z the head's totals (in sums[0]).
void FeatureAttention::query_rows(const Shape& s, HeadWork& h, int64_t row0, int64_t rows,
                                  float* qf) const {
  const int64_t d = s.dim, M = width(d);
  query_features(h.q + row0 * d, rows, d, qf);
  const float* S = h.sums.data();
  const float* z = S + M * d;
  float* o = h.out + row0 * d;
  sgemm(false, false, rows, d, M, 1.0f, qf, M, S, d, 0.0f, o, d);
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / dot(qf + r * M, z, M);
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) o[r * d + j] *= inv;
  }
}

// Runs over the chunks of rows [r0, end) in order, calling before(c0, rows) for each chunk
// and then adding φ(K_c)ᵀV_c and φ(K_c)ᵀ1 to sum [M·D + M]. Both the causal outputs and the
// block sums of the team-shared path accumulate through this one loop, so a block's sum has
// the same bits whichever path computed it.
template <class Before>
void FeatureAttention::accumulate_block(const Shape& s, const HeadWork& h, int64_t r0, int64_t end,
                                        Before&& before, float* sum) const {
  const int64_t d = s.dim, M = width(d);
  for (int64_t c0 = r0; c0 < end; c0 += kChunkRows) {
    const int64_t rows = std::min(kChunkRows, end - c0);
    before(c0, rows);
    const float* kf = h.kf.data() + c0 * M;
    sgemm(true, false, M, d, rows, 1.0f, kf, M, h.v + c0 * d, d, 1.0f, sum, d);
    add_column_sums(kf, rows, M, M, sum + M * d);
  }
}

// Causal output rows of key block b, given start = (S, z) summed over all blocks before b.
// Chunk c adds its masked diagonal tile φ(Q_c)φ(K_c)ᵀ·V_c to φ(Q_c)·(start + R), R the sum
// over the block's earlier chunks. Returns R (the block's own sum) in scratch.
void FeatureAttention::causal_block(const Shape& s, HeadWork& h, int64_t b, const float* start,
                                    float* scratch) const {
  const int64_t d = s.dim, M = width(d), r0 = b * kBlockRows, state = M * d + M;
  const int64_t end = std::min(s.nk, r0 + kBlockRows);
  float* run = scratch;               // R [M·D + M]
  float* total = run + state;         // start + R
  float* qf = total + state;          // φ(Q_c) [kChunkRows, M]
  float* tile = qf + kChunkRows * M;  // [kChunkRows, kChunkRows]
  std::fill(run, run + state, 0.0f);
  accumulate_block(
      s, h, r0, end,
      [&](int64_t c0, int64_t rows) {
        const float* kf = h.kf.data() + c0 * M;
        float* o = h.out + c0 * d;
#pragma omp simd
        for (int64_t i = 0; i < state; ++i) total[i] = start[i] + run[i];
        query_features(h.q + c0 * d, rows, d, qf);
        sgemm(false, true, rows, rows, M, 1.0f, qf, M, kf, M, 0.0f, tile, kChunkRows);
        for (int64_t r = 0; r < rows; ++r)
          std::fill(tile + r * kChunkRows + r + 1, tile + r * kChunkRows + rows, 0.0f);
        sgemm(false, false, rows, d, rows, 1.0f, tile, kChunkRows, h.v + c0 * d, d, 0.0f, o, d);
        sgemm(false, false, rows, d, M, 1.0f, qf, M, total, d, 1.0f, o, d);
        for (int64_t r = 0; r < rows; ++r) {
          float den = dot(qf + r * M, total + M * d, M);
          for (int64_t j = 0; j <= r; ++j) den += tile[r * kChunkRows + j];
          const float inv = 1.0f / den;
#pragma omp simd
          for (int64_t j = 0; j < d; ++j) o[r * d + j] *= inv;
        }
      },
      run);
}

// Folds the block sums of feature row f (f = M: the φ(K)ᵀ1 row) in block order: non-causal
// totals into block slot 0, causal exclusive prefixes in place of each slot.
void FeatureAttention::combine_blocks(const Shape& s, HeadWork& h, int64_t f) const {
  const int64_t d = s.dim, M = width(d), state = M * d + M;
  const int64_t blocks = (s.nk + kBlockRows - 1) / kBlockRows;
  const int64_t off = f < M ? f * d : M * d, len = f < M ? d : M;
  float* base = h.sums.data();
  float run[kMaxRun];
  for (int64_t j0 = 0; j0 < len; j0 += kMaxRun) {
    const int64_t n = std::min(kMaxRun, len - j0);
    std::fill(run, run + n, 0.0f);
    for (int64_t b = 0; b < blocks; ++b) {
      float* slot = base + b * state + off + j0;
      const bool has_sum = !s.causal || b + 1 < blocks;  // the causal last block has none
      for (int64_t j = 0; j < n; ++j) {
        const float x = has_sum ? slot[j] : 0.0f;
        if (s.causal) slot[j] = run[j];
        run[j] += x;
      }
    }
    if (!s.causal) std::copy(run, run + n, base + off + j0);
  }
}

// The steps of one head, each a list of independent tasks. Either one thread runs them all
// in order (head_alone) or the team shares each step (head_shared); the arithmetic of every
// task is the same, so both give the same bits.
void FeatureAttention::head_alone(const Shape& s, HeadWork& h, float* scratch) const {
  const int64_t blocks = (s.nk + kBlockRows - 1) / kBlockRows;
  for (int64_t b = 0; b < blocks; ++b) key_block_pass1(s, h, b);
  h.shift = key_shift(h, blocks);
  // Causal: block b's start is block b-1's start plus its own sum, which causal_block
  // returns, so the block sums need no separate pass (the shared path's combine_blocks adds
  // them in the same order).
  for (int64_t b = 0; b < blocks; ++b) key_block_pass2(s, h, b, !s.causal);
  if (s.causal) {
    const int64_t state = width(s.dim) * s.dim + width(s.dim);
    float* start = h.sums.data();
    std::fill(start, start + state, 0.0f);
    for (int64_t b = 0; b < blocks; ++b) {
      causal_block(s, h, b, start, scratch);
      if (b + 1 == blocks) break;
      float* next = start + state;
      for (int64_t i = 0; i < state; ++i) next[i] = start[i] + scratch[i];
      start = next;
    }
  } else {
    for (int64_t f = 0; f <= width(s.dim); ++f) combine_blocks(s, h, f);
    for (int64_t r0 = 0; r0 < s.nq; r0 += kQueryRows)
      query_rows(s, h, r0, std::min(kQueryRows, s.nq - r0), scratch);
  }
}

// Called by every thread of the team.
void FeatureAttention::head_shared(const Shape& s, HeadWork& h, float* scratch,
                                   std::exception_ptr& error) const {
  const int64_t blocks = (s.nk + kBlockRows - 1) / kBlockRows;
  const int64_t qtasks = (s.nq + kQueryRows - 1) / kQueryRows;
  parallel_tasks(blocks, error, [&](int64_t b) { key_block_pass1(s, h, b); });
#pragma omp single
  h.shift = key_shift(h, blocks);
  parallel_tasks(blocks, error,
                 [&](int64_t b) { key_block_pass2(s, h, b, !s.causal || b + 1 < blocks); });
  parallel_tasks(width(s.dim) + 1, error, [&](int64_t f) { combine_blocks(s, h, f); });
  if (s.causal) {
    parallel_tasks(blocks, error, [&](int64_t b) {
      causal_block(s, h, b, h.sums.data() + b * (width(s.dim) * s.dim + width(s.dim)), scratch);
    });
  } else {
    parallel_tasks(qtasks, error, [&](int64_t t) {
      const int64_t r0 = t * kQueryRows;
      query_rows(s, h, r0, std::min(kQueryRows, s.nq - r0), scratch);
    });
  }
}

void FeatureAttention::forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                               Tensor& out) {
  const int64_t d = s.dim, M = width(d);
  prepare(s);
  const int64_t heads = s.heads_total(), threads = omp_get_max_threads();
  const int64_t blocks = (s.nk + kBlockRows - 1) / kBlockRows;
  // Enough heads at once to occupy every thread and no more: memory is per head. With at
  // least as many heads as threads each thread takes whole heads (no barriers, which cost a
  // scheduler slice each on a busy machine); otherwise the team shares one head at a time.
  const bool alone = heads >= threads;
  std::vector<HeadWork> work(alone ? threads : 1);
  for (auto& w : work) {
    w.kf = FloatBuffer(size_t(s.nk) * M);
    w.sums = FloatBuffer(size_t(blocks) * (M * d + M));
    w.bmax = FloatBuffer(size_t(blocks));
  }
  auto bind = [&](HeadWork& w, int64_t bh) {
    const int64_t b = bh / s.heads, hh = bh % s.heads;
    w.q = q.head(b, hh), w.k = k.head(b, hh), w.v = v.head(b, hh), w.out = out.head(b, hh);
  };
  std::exception_ptr error;
#pragma omp parallel
  {
    FloatBuffer scratch(scratch_floats(s));
    if (alone) {
      HeadWork& w = work[omp_get_thread_num()];
      parallel_tasks(heads, error, [&](int64_t bh) {
        bind(w, bh);
        head_alone(s, w, scratch.data());
      });
    } else {
      for (int64_t bh = 0; bh < heads; ++bh) {
#pragma omp single
        bind(work[0], bh);
        head_shared(s, work[0], scratch.data(), error);
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace attn::feature
