#include "attention/band.h"

namespace attn::band {
namespace {

// Visible pairs of one undilated band over a subsequence of length m (docs/ALGORITHMS.md §Band).
// Non-causal: 2r+1 keys per row minus the r(r+1)/2 clipped at each end; causal: W = r+1 keys
// per row minus the W(W−1)/2 clipped at the start. A radius reaching across the subsequence
// is dense.
double class_pairs(double m, const Window& w) {
  const double r = double(w.radius);
  if (m <= 0) return 0;
  if (w.causal) return r >= m - 1 ? m * (m + 1) / 2 : (r + 1) * (2 * m - r) / 2;
  return r >= m - 1 ? m * m : m * (2 * r + 1) - r * (r + 1);
}

}  // namespace

int64_t row_pairs(int64_t n, const Window& w, int64_t i) {
  const int64_t t = i / w.dilation, m = class_length(n, w.dilation, i % w.dilation);
  return row_hi(w, m, t) - row_lo(w, t) + 1;
}

int64_t column_pairs(int64_t n, const Window& w, int64_t j) {
  if (!w.causal) return row_pairs(n, w, j);
  const int64_t t = j / w.dilation, m = class_length(n, w.dilation, j % w.dilation);
  return std::min(m - 1, t + w.radius) - t + 1;
}

double pairs(int64_t n, const Window& w) {
  // Residue classes have length n/k (k − n%k of them) or n/k + 1 (n%k of them).
  const int64_t k = w.dilation, q = n / k, rem = n % k;
  return double(rem) * class_pairs(double(q + 1), w) + double(k - rem) * class_pairs(double(q), w);
}

void row_keys(int64_t n, const Window& w, int64_t i, std::vector<int64_t>& out) {
  const int64_t k = w.dilation, rho = i % k, t = i / k, m = class_length(n, k, rho);
  out.clear();
  for (int64_t u = row_lo(w, t); u <= row_hi(w, m, t); ++u) out.push_back(rho + u * k);
}

}  // namespace attn::band
