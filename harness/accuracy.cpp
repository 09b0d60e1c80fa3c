#include "harness/accuracy.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "attention/random.h"

namespace attnbench {

ReferenceSample compute_reference(const attn::Shape& s, const attn::Tensor& q,
                                  const attn::Tensor& k, const attn::Tensor& v,
                                  int64_t all_rows_limit, int64_t sample, uint64_t seed,
                                  const attn::ElementMask* mask) {
  ReferenceSample ref;
  ref.all_rows = s.nq <= all_rows_limit || sample >= s.nq;
  if (ref.all_rows) {
    ref.rows.resize(s.nq);
    std::iota(ref.rows.begin(), ref.rows.end(), 0);
  } else {
    // The same rows for the same seed on every platform (attention/random.h).
    std::vector<int64_t> all(s.nq);
    std::iota(all.begin(), all.end(), 0);
    ref.rows = attn::sample_distinct(
        std::move(all), sample, attn::RandomStream(seed, attn::RandomDomain::kReferenceRows, 0));
  }
  const size_t per_head = ref.rows.size() * s.dim;
  ref.out.resize(per_head * s.heads_total());
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      attn::reference_rows(s, q, k, v, b, h, ref.rows, mask,
                           ref.out.data() + (b * s.heads + h) * per_head);
  return ref;
}

Accuracy measure_accuracy(const attn::Shape& s, const ReferenceSample& ref,
                          const attn::Tensor& out) {
  Accuracy a;
  double err2 = 0, ref2 = 0, cos_sum = 0;
  int64_t count = 0;
  const int64_t D = s.dim, R = int64_t(ref.rows.size());
  for (int64_t bh = 0; bh < s.heads_total(); ++bh) {
    const float* oh = out.head(bh / s.heads, bh % s.heads);
    for (int64_t r = 0; r < R; ++r) {
      const double* x = ref.out.data() + (bh * R + r) * D;
      const float* y = oh + ref.rows[r] * D;
      double dot = 0, xx = 0, yy = 0;
      for (int64_t d = 0; d < D; ++d) {
        const double e = double(y[d]) - x[d];
        err2 += e * e;
        a.max_abs = std::max(a.max_abs, std::abs(e));
        dot += x[d] * y[d], xx += x[d] * x[d], yy += double(y[d]) * y[d];
      }
      ref2 += xx;
      // Two zero rows (fully masked) agree perfectly.
      cos_sum += (xx == 0 && yy == 0) ? 1.0 : dot / std::sqrt(std::max(xx * yy, 1e-300));
      ++count;
    }
  }
  a.rel_fro = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  a.mean_cosine = count ? cos_sum / count : 1.0;
  return a;
}

std::optional<double> attention_coverage(const attn::Attention& a, const attn::Shape& s,
                                         const attn::Tensor& q, const attn::Tensor& k,
                                         const std::vector<int64_t>& rows,
                                         const attn::ElementMask* mask) {
  attn::VisitedKeys probe;
  if (rows.empty() || !a.visited_keys(s, 0, 0, rows[0], probe)) return std::nullopt;
  const int64_t R = int64_t(rows.size()), items = s.heads_total() * R;
  std::vector<double> mass(items);
  bool bad_key = false;
#pragma omp parallel
  {
    std::vector<double> p;
    std::vector<char> seen(s.nk);
    attn::VisitedKeys keys;
#pragma omp for schedule(dynamic, 8)
    for (int64_t it = 0; it < items; ++it) {
      const int64_t b = it / R / s.heads, h = it / R % s.heads, i = rows[it % R];
      keys.clear();
      a.visited_keys(s, b, h, i, keys);
      attn::reference_probs(s, q, k, b, h, i, mask, p);
      double m = 0;
      // A key visited in several rounds counts once: coverage is of the union.
      for (const auto& round : keys)
        for (int64_t j : round) {
          if (j < 0 || j >= s.nk) {
#pragma omp atomic write
            bad_key = true;
            continue;
          }
          if (!seen[j]) seen[j] = 1, m += p[j];
        }
      for (const auto& round : keys)
        for (int64_t j : round)
          if (j >= 0 && j < s.nk) seen[j] = 0;
      mass[it] = m;
    }
  }
  if (bad_key) throw attn::RuntimeError(a.name() + ": visited_keys returned a key outside [0, Nk)");
  // Summed in row order, so the figure does not depend on the thread count.
  double total = 0;
  for (double m : mass) total += m;
  return total / double(items);
}

}  // namespace attnbench
