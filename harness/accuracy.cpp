#include "harness/accuracy.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include "attention/random.h"

namespace attnbench {

namespace {

// out[r, :] = the mean of v_j over the keys j row rows[r] may see (causal j <= i, and `mask`),
// 0 for a row that sees none. Without a mask, from prefix sums in fp64.
void visible_means(const attn::Shape& s, const attn::Tensor& v, int64_t b, int64_t h,
                   const std::vector<int64_t>& rows, const attn::ElementMask* mask, double* out) {
  const int64_t D = s.dim;
  const float* vh = v.head(b, h);
  if (!mask) {
    std::vector<double> prefix((s.nk + 1) * D, 0.0);  // prefix[j] = Σ_{t<j} v_t
    for (int64_t j = 0; j < s.nk; ++j)
      for (int64_t d = 0; d < D; ++d) prefix[(j + 1) * D + d] = prefix[j * D + d] + vh[j * D + d];
    for (size_t r = 0; r < rows.size(); ++r) {
      const int64_t count = s.causal ? std::min(rows[r] + 1, s.nk) : s.nk;
      for (int64_t d = 0; d < D; ++d) out[r * D + d] = prefix[count * D + d] / double(count);
    }
    return;
  }
#pragma omp parallel for schedule(dynamic, 4)
  for (size_t r = 0; r < rows.size(); ++r) {
    double* o = out + r * D;
    std::fill(o, o + D, 0.0);
    int64_t count = 0;
    for (int64_t j = 0; j < s.nk; ++j) {
      if ((s.causal && j > rows[r]) || !(*mask)(b, h, rows[r], j)) continue;
      ++count;
      for (int64_t d = 0; d < D; ++d) o[d] += vh[j * D + d];
    }
    for (int64_t d = 0; d < D; ++d) o[d] = count ? o[d] / double(count) : 0.0;
  }
}

}  // namespace

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
  ref.mean.resize(ref.out.size());
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h) {
      attn::reference_rows(s, q, k, v, b, h, ref.rows, mask,
                           ref.out.data() + (b * s.heads + h) * per_head);
      visible_means(s, v, b, h, ref.rows, mask, ref.mean.data() + (b * s.heads + h) * per_head);
    }
  return ref;
}

Accuracy measure_accuracy(const attn::Shape& s, const ReferenceSample& ref,
                          const attn::Tensor& out) {
  Accuracy a;
  double err2 = 0, ref2 = 0, cos_sum = 0, dev2 = 0;
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
        if (!ref.mean.empty()) {
          const double m = x[d] - ref.mean[(bh * R + r) * D + d];
          dev2 += m * m;
        }
      }
      ref2 += xx;
      // Two zero rows (fully masked) agree perfectly.
      cos_sum += (xx == 0 && yy == 0) ? 1.0 : dot / std::sqrt(std::max(xx * yy, 1e-300));
      ++count;
    }
  }
  a.rel_fro = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  a.err_vs_mean = dev2 > 0 ? std::sqrt(err2 / dev2) : std::sqrt(err2);
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

namespace {

// One query row's recall figures.
struct RecallItem {
  bool hit = false;
  double cosine = 0, mass = 0, mass_variant = 0;
  int64_t gap = 0;
  double depth = 0;
};

std::vector<RecallBin> bin_rows(const std::vector<RecallItem>& items, bool by_gap) {
  std::vector<RecallBin> bins;
  for (const RecallItem& it : items) {
    int64_t k = 0;
    if (by_gap) {
      while ((int64_t(2) << k) <= it.gap) ++k;
    } else {
      k = std::min<int64_t>(9, int64_t(it.depth * 10));
    }
    if (int64_t(bins.size()) <= k) bins.resize(k + 1);
    RecallBin& b = bins[k];
    b.lo = by_gap ? double(int64_t(1) << k) : k / 10.0;
    b.hi = by_gap ? double(int64_t(2) << k) : (k + 1) / 10.0;
    ++b.rows, b.recall += it.hit ? 1 : 0;
  }
  std::vector<RecallBin> out;
  for (RecallBin& b : bins)
    if (b.rows) b.recall /= double(b.rows), out.push_back(b);
  return out;
}

}  // namespace

RecallScore measure_recall(const attn::Attention& a, const attn::Shape& s, const attn::Tensor& q,
                           const attn::Tensor& k, const attn::Tensor& out, const RecallProbe& probe,
                           const attn::ElementMask* mask) {
  struct Ref {
    int64_t bh;
    RecallQuery query;
  };
  std::vector<Ref> refs;
  for (int64_t bh = 0; bh < int64_t(probe.queries.size()); ++bh)
    for (const RecallQuery& rq : probe.queries[bh]) refs.push_back({bh, rq});
  attn::VisitedKeys probe_keys;
  const bool visits = !refs.empty() && a.visited_keys(s, 0, 0, refs[0].query.row, probe_keys);
  const int64_t D = s.dim, P = probe.pairs;
  std::vector<RecallItem> items(refs.size());
#pragma omp parallel
  {
    std::vector<double> p;
    attn::VisitedKeys keys;
    std::vector<char> seen(s.nk);
#pragma omp for schedule(dynamic, 4)
    for (size_t it = 0; it < refs.size(); ++it) {
      const int64_t bh = refs[it].bh, b = bh / s.heads, h = bh % s.heads;
      const RecallQuery& rq = refs[it].query;
      const float* o = out.head(b, h) + rq.row * D;
      const float* cb = probe.codebook.data() + bh * P * D;
      // Nearest codebook value: the codebook is unit vectors, so the largest dot product.
      int64_t best = 0;
      double best_dot = -INFINITY, oo = 0, planted = 0;
      for (int64_t c = 0; c < P; ++c) {
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += double(o[d]) * cb[c * D + d];
        if (dot > best_dot) best_dot = dot, best = c;
        if (c == rq.pair) planted = dot;
      }
      for (int64_t d = 0; d < D; ++d) oo += double(o[d]) * o[d];
      RecallItem& r = items[it];
      r.hit = best == rq.pair;
      r.cosine = oo > 0 ? planted / std::sqrt(oo) : 0.0;
      r.gap = rq.row - rq.key, r.depth = rq.depth;
      attn::reference_probs(s, q, k, b, h, rq.row, mask, p);
      r.mass = p[rq.key];
      if (!visits) continue;
      keys.clear();
      a.visited_keys(s, b, h, rq.row, keys);
      double total = 0;
      bool planted_seen = false;
      for (const auto& round : keys)
        for (int64_t j : round)
          if (j >= 0 && j < s.nk && !seen[j])
            seen[j] = 1, total += p[j], planted_seen |= j == rq.key;
      for (const auto& round : keys)
        for (int64_t j : round)
          if (j >= 0 && j < s.nk) seen[j] = 0;
      r.mass_variant = planted_seen && total > 0 ? p[rq.key] / total : 0.0;
    }
  }
  // Summed in row order, so the figures do not depend on the thread count.
  RecallScore score;
  score.rows = int64_t(items.size());
  double mv = 0;
  for (const RecallItem& r : items)
    score.recall += r.hit, score.cosine += r.cosine, score.mass_exact += r.mass,
        mv += r.mass_variant;
  if (score.rows) {
    const double n = double(score.rows);
    score.recall /= n, score.cosine /= n, score.mass_exact /= n, mv /= n;
  }
  if (visits) score.mass_variant = mv;
  score.by_gap = bin_rows(items, true);
  score.by_depth = bin_rows(items, false);
  return score;
}

}  // namespace attnbench
