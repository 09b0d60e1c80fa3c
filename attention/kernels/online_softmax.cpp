#include "attention/kernels/online_softmax.h"

#include <algorithm>
#include <cstring>

#include "attention/kernels/vec_exp.h"

namespace attn::kernels {

OnlineSoftmax::OnlineSoftmax(int64_t dim)
    : dim_(dim),
      qt_(size_t(dim) * kQueryRows),
      scores_(size_t(kKeyTile) * kQueryRows),
      acc_(size_t(kQueryRows) * dim),
      max_(kQueryRows),
      sum_(kQueryRows),
      alpha_(kQueryRows) {}

void OnlineSoftmax::begin(const float* q, int64_t ldq, int64_t rows, float scale) {
  rows_ = rows;
  // Transposed so that the score kernel loads 16 consecutive query rows per vector; padded
  // rows are zero and never read back.
  for (int64_t d = 0; d < dim_; ++d) {
    float* col = qt_.data() + d * kQueryRows;
    for (int64_t r = 0; r < rows; ++r) col[r] = scale * q[r * ldq + d];
    for (int64_t r = rows; r < kQueryRows; ++r) col[r] = 0.0f;
  }
  std::fill(acc_.data(), acc_.data() + kQueryRows * dim_, 0.0f);
  std::fill(max_.data(), max_.data() + kQueryRows, kHidden);
  std::fill(sum_.data(), sum_.data() + kQueryRows, 0.0f);
}

void OnlineSoftmax::attend(const float* k, const float* v, int64_t ld, int64_t n) {
  for (int64_t c0 = 0; c0 < n; c0 += kKeyTile) {
    const int64_t nc = std::min(kKeyTile, n - c0);
    compute_scores(k + c0 * ld, ld, nc);
    accumulate(v + c0 * ld, ld, nc);
  }
}

void OnlineSoftmax::finish(float* out, int64_t ldo, float* lse) {
  for (int64_t r = 0; r < rows_; ++r) {
    const float l = sum_[r];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // fully hidden row -> 0
    const float* a = acc_.data() + r * dim_;
    float* o = out + r * ldo;
    for (int64_t d = 0; d < dim_; ++d) o[d] = a[d] * inv;
    if (lse) lse[r] = l > 0.0f ? max_[r] + std::log(l) : kHidden;
  }
}

#if defined(__AVX512F__)

namespace {

constexpr int kV = kQueryRows / 16;  // vectors per score row

// scores[c][0..64) = qt^T · k[c] for R consecutive keys: R x 4 accumulators, the D loop
// broadcasts one key element per key and reuses 4 query vectors.
template <int R>
inline void score_keys(const float* qt, const float* k, int64_t ld, int64_t D, float* s) {
  __m512 acc[R][kV];
  for (int j = 0; j < R; ++j)
    for (int v = 0; v < kV; ++v) acc[j][v] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    __m512 qv[kV];
    for (int v = 0; v < kV; ++v) qv[v] = _mm512_load_ps(qt + d * kQueryRows + 16 * v);
    for (int j = 0; j < R; ++j) {
      const __m512 kb = _mm512_set1_ps(k[j * ld + d]);
      for (int v = 0; v < kV; ++v) acc[j][v] = _mm512_fmadd_ps(qv[v], kb, acc[j][v]);
    }
  }
  for (int j = 0; j < R; ++j)
    for (int v = 0; v < kV; ++v) _mm512_store_ps(s + j * kQueryRows + 16 * v, acc[j][v]);
}

// acc[r][dv..dv+16·NV) = alpha[r]·acc + Σ_c p[c][r]·v[c][...] for R rows: R x NV accumulators
// stay in registers over the whole key tile.
template <int R, int NV>
inline void pv_rows(const float* p, const float* alpha, const float* v, int64_t ld, int64_t n,
                    float* acc, int64_t D, __mmask16 tail) {
  __m512 a[R][NV];
  for (int r = 0; r < R; ++r) {
    const __m512 al = _mm512_set1_ps(alpha[r]);
    for (int x = 0; x < NV; ++x) {
      const __mmask16 m = x == NV - 1 ? tail : __mmask16(0xffff);
      a[r][x] = _mm512_mul_ps(al, _mm512_maskz_loadu_ps(m, acc + r * D + 16 * x));
    }
  }
  for (int64_t c = 0; c < n; ++c) {
    __m512 vv[NV];
    for (int x = 0; x < NV; ++x) {
      const __mmask16 m = x == NV - 1 ? tail : __mmask16(0xffff);
      vv[x] = _mm512_maskz_loadu_ps(m, v + c * ld + 16 * x);
    }
    for (int r = 0; r < R; ++r) {
      const __m512 pb = _mm512_set1_ps(p[c * kQueryRows + r]);
      for (int x = 0; x < NV; ++x) a[r][x] = _mm512_fmadd_ps(pb, vv[x], a[r][x]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int x = 0; x < NV; ++x) {
      const __mmask16 m = x == NV - 1 ? tail : __mmask16(0xffff);
      _mm512_mask_storeu_ps(acc + r * D + 16 * x, m, a[r][x]);
    }
}

// The rows left after the full R-row groups: K rows, dispatched at compile time.
template <int NV, int K, int R>
void pv_tail(int64_t left, const float* p, const float* alpha, const float* v, int64_t ld,
             int64_t n, float* acc, int64_t D, __mmask16 tail) {
  if constexpr (K < R) {
    if (left == K) return pv_rows<K, NV>(p, alpha, v, ld, n, acc, D, tail);
    pv_tail<NV, K + 1, R>(left, p, alpha, v, ld, n, acc, D, tail);
  }
}

template <int NV>
void pv_block(const float* p, const float* alpha, const float* v, int64_t ld, int64_t n, float* acc,
              int64_t D, int64_t rows, __mmask16 tail) {
  constexpr int R = NV <= 2 ? 8 : (NV == 3 ? 7 : 6);
  int64_t r = 0;
  for (; r + R <= rows; r += R) pv_rows<R, NV>(p + r, alpha + r, v, ld, n, acc + r * D, D, tail);
  pv_tail<NV, 1, R>(rows - r, p + r, alpha + r, v, ld, n, acc + r * D, D, tail);
}

}  // namespace

void OnlineSoftmax::compute_scores(const float* k, int64_t ld, int64_t n) {
  constexpr int R = 6;
  float* s = scores_.data();
  int64_t c = 0;
  for (; c + R <= n; c += R) score_keys<R>(qt_.data(), k + c * ld, ld, dim_, s + c * kQueryRows);
  switch (n - c) {
    case 5:
      score_keys<5>(qt_.data(), k + c * ld, ld, dim_, s + c * kQueryRows);
      break;
    case 4:
      score_keys<4>(qt_.data(), k + c * ld, ld, dim_, s + c * kQueryRows);
      break;
    case 3:
      score_keys<3>(qt_.data(), k + c * ld, ld, dim_, s + c * kQueryRows);
      break;
    case 2:
      score_keys<2>(qt_.data(), k + c * ld, ld, dim_, s + c * kQueryRows);
      break;
    case 1:
      score_keys<1>(qt_.data(), k + c * ld, ld, dim_, s + c * kQueryRows);
      break;
    default:
      break;
  }
}

void OnlineSoftmax::accumulate(const float* v, int64_t ld, int64_t n) {
  float* s = scores_.data();
  // Online softmax update, vectorized over the 64 rows of the block (scores are [key][row]).
  __m512 mx[kV], m_use[kV], sum[kV];
  for (int x = 0; x < kV; ++x) mx[x] = _mm512_load_ps(max_.data() + 16 * x);
  for (int64_t c = 0; c < n; ++c)
    for (int x = 0; x < kV; ++x)
      mx[x] = _mm512_max_ps(mx[x], _mm512_load_ps(s + c * kQueryRows + 16 * x));
  for (int x = 0; x < kV; ++x) {
    const __m512 old = _mm512_load_ps(max_.data() + 16 * x);
    // A row whose keys are all hidden so far keeps max -inf; subtracting 0 instead keeps
    // exp(-inf - max) = 0 rather than NaN (PyTorch's guard, docs/ALGORITHMS.md §Online softmax).
    const __mmask16 none = _mm512_cmp_ps_mask(mx[x], _mm512_set1_ps(kHidden), _CMP_EQ_OQ);
    m_use[x] = _mm512_mask_mov_ps(mx[x], none, _mm512_setzero_ps());
    _mm512_store_ps(alpha_.data() + 16 * x, exp16(_mm512_sub_ps(old, m_use[x])));
    _mm512_store_ps(max_.data() + 16 * x, mx[x]);
    sum[x] = _mm512_setzero_ps();
  }
  for (int64_t c = 0; c < n; ++c)
    for (int x = 0; x < kV; ++x) {
      float* sc = s + c * kQueryRows + 16 * x;
      const __m512 p = exp16(_mm512_sub_ps(_mm512_load_ps(sc), m_use[x]));
      _mm512_store_ps(sc, p);
      sum[x] = _mm512_add_ps(sum[x], p);
    }
  for (int x = 0; x < kV; ++x) {
    const __m512 l = _mm512_load_ps(sum_.data() + 16 * x);
    _mm512_store_ps(sum_.data() + 16 * x,
                    _mm512_fmadd_ps(_mm512_load_ps(alpha_.data() + 16 * x), l, sum[x]));
  }
  const int64_t nv_total = (dim_ + 15) / 16;
  const int tail_bits = int(dim_ - (nv_total - 1) * 16);
  for (int64_t x0 = 0; x0 < nv_total; x0 += 4) {
    const int64_t nv = std::min<int64_t>(4, nv_total - x0);
    const __mmask16 tail = x0 + nv == nv_total ? __mmask16((1u << tail_bits) - 1) : 0xffff;
    float* acc = acc_.data() + 16 * x0;
    const float* vv = v + 16 * x0;
    switch (nv) {
      case 4:
        pv_block<4>(s, alpha_.data(), vv, ld, n, acc, dim_, rows_, tail);
        break;
      case 3:
        pv_block<3>(s, alpha_.data(), vv, ld, n, acc, dim_, rows_, tail);
        break;
      case 2:
        pv_block<2>(s, alpha_.data(), vv, ld, n, acc, dim_, rows_, tail);
        break;
      default:
        pv_block<1>(s, alpha_.data(), vv, ld, n, acc, dim_, rows_, tail);
        break;
    }
  }
}

#else  // portable fallback: same arithmetic order per row, scalar loops

void OnlineSoftmax::compute_scores(const float* k, int64_t ld, int64_t n) {
  float* s = scores_.data();
  for (int64_t c = 0; c < n; ++c) {
    float* sc = s + c * kQueryRows;
    for (int64_t r = 0; r < kQueryRows; ++r) sc[r] = 0.0f;
    for (int64_t d = 0; d < dim_; ++d) {
      const float kd = k[c * ld + d];
      const float* q = qt_.data() + d * kQueryRows;
      for (int64_t r = 0; r < kQueryRows; ++r) sc[r] += q[r] * kd;
    }
  }
}

void OnlineSoftmax::accumulate(const float* v, int64_t ld, int64_t n) {
  float* s = scores_.data();
  for (int64_t r = 0; r < rows_; ++r) {
    float mx = max_[r];
    for (int64_t c = 0; c < n; ++c) mx = std::max(mx, s[c * kQueryRows + r]);
    const float m_use = mx == kHidden ? 0.0f : mx;
    const float alpha = std::exp(max_[r] - m_use);
    max_[r] = mx;
    float sum = 0.0f;
    for (int64_t c = 0; c < n; ++c) {
      float& p = s[c * kQueryRows + r];
      p = std::exp(p - m_use);
      sum += p;
    }
    sum_[r] = alpha * sum_[r] + sum;
    float* a = acc_.data() + r * dim_;
    for (int64_t d = 0; d < dim_; ++d) a[d] *= alpha;
    for (int64_t c = 0; c < n; ++c) {
      const float p = s[c * kQueryRows + r];
      for (int64_t d = 0; d < dim_; ++d) a[d] += p * v[c * ld + d];
    }
  }
}

#endif

}  // namespace attn::kernels
