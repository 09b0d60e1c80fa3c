#include "attention/kernels/flash_backward.h"

#include <algorithm>
#include <cmath>

#include "attention/kernels/gemm.h"
#include "attention/kernels/vec_exp.h"

namespace attn::kernels {

BackwardTile::BackwardTile(int64_t dim)
    : dim_(dim), p_(size_t(kBackRows) * kBackKeys), ds_(size_t(kBackRows) * kBackKeys) {}

void BackwardTile::compute(const TileRows& rows, const TileKeys& keys, float scale) {
  scores(rows, keys, scale);
  finish();
}

void BackwardTile::scores(const TileRows& rows, const TileKeys& keys, float scale) {
  rows_ = rows, keys_ = keys;
  if (rows.count == 0 || keys.count == 0) return;
  sgemm(false, true, rows.count, keys.count, dim_, scale, rows.q, rows.ldq, keys.k, keys.ld, 0.0f,
        p_.data(), kBackKeys);
}

namespace {

// x[c] = exp(x[c] − shift); −inf entries give exactly 0.
void exp_shifted(float* x, int64_t n, float shift) {
  int64_t c = 0;
#if defined(__AVX512F__)
  const __m512 sh = _mm512_set1_ps(shift);
  for (; c + 16 <= n; c += 16)
    _mm512_storeu_ps(x + c, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + c), sh)));
  if (c < n) {
    const __mmask16 m = __mmask16((1u << (n - c)) - 1);
    _mm512_mask_storeu_ps(x + c, m, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + c), sh)));
  }
#else
  for (; c < n; ++c) x[c] = std::exp(x[c] - shift);
#endif
}

}  // namespace

void BackwardTile::finish() {
  const int64_t R = rows_.count, C = keys_.count;
  if (R == 0 || C == 0) return;
  sgemm(false, true, R, C, dim_, 1.0f, rows_.dout, rows_.ldo, keys_.v, keys_.ld, 0.0f, ds_.data(),
        kBackKeys);
  for (int64_t r = 0; r < R; ++r) {
    float* p = p_.data() + r * kBackKeys;
    float* ds = ds_.data() + r * kBackKeys;
    const float lse = rows_.lse[r];
    if (lse == kHidden) {  // a row that takes no part in this tile: zero weight, zero gradient
      std::fill(p, p + C, 0.0f), std::fill(ds, ds + C, 0.0f);
      continue;
    }
    exp_shifted(p, C, lse);
    const float delta = rows_.delta[r];
    for (int64_t c = 0; c < C; ++c) ds[c] = p[c] * (ds[c] - delta);
  }
}

void BackwardTile::add_dq(float* dq, int64_t ld, float scale) const {
  if (rows_.count == 0 || keys_.count == 0) return;
  sgemm(false, false, rows_.count, dim_, keys_.count, scale, ds_.data(), kBackKeys, keys_.k,
        keys_.ld, 1.0f, dq, ld);
}

void BackwardTile::add_dk_dv(float* dk, float* dv, int64_t ld, float scale) const {
  if (rows_.count == 0 || keys_.count == 0) return;
  sgemm(true, false, keys_.count, dim_, rows_.count, scale, ds_.data(), kBackKeys, rows_.q,
        rows_.ldq, 1.0f, dk, ld);
  sgemm(true, false, keys_.count, dim_, rows_.count, 1.0f, p_.data(), kBackKeys, rows_.dout,
        rows_.ldo, 1.0f, dv, ld);
}

void row_deltas(const Tensor& out, const Tensor& dout, float* delta) {
  const int64_t rows = out.batch() * out.heads() * out.seq(), D = out.dim();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    const float *o = out.data() + i * D, *g = dout.data() + i * D;
    double sum = 0;  // δ enters dS = P∘(dP − δ) as a difference: keep it accurate
    for (int64_t d = 0; d < D; ++d) sum += double(o[d]) * double(g[d]);
    delta[i] = float(sum);
  }
}

}  // namespace attn::kernels
