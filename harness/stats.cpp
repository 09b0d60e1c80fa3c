#include "harness/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace attnbench {
namespace {

constexpr size_t kExactMax = 10;

// Midranks (1-based; tied values share the mean of their ranks), doubled to stay integral,
// of the pooled sample x ++ y; also Σ(t³ − t) over tie groups for the variance correction.
std::vector<int> doubled_midranks(const std::vector<double>& pooled, double& tie_term) {
  const size_t n = pooled.size();
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return pooled[a] < pooled[b]; });
  std::vector<int> rank2(n);
  tie_term = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && pooled[order[j + 1]] == pooled[order[i]]) ++j;
    const int doubled = int(i + 1 + j + 1);  // 2 · mean of ranks i+1 … j+1
    for (size_t k = i; k <= j; ++k) rank2[order[k]] = doubled;
    const double t = double(j - i + 1);
    tie_term += t * t * t - t;
    i = j + 1;
  }
  return rank2;
}

// P(rank sum of a random n1-subset >= observed), by counting subsets with each doubled sum.
double exact_upper_tail(const std::vector<int>& rank2, size_t n1, int observed2) {
  const int max_sum = std::accumulate(rank2.begin(), rank2.end(), 0);
  // ways[k][s]: number of k-subsets of the ranks seen so far with doubled sum s.
  std::vector<std::vector<double>> ways(n1 + 1, std::vector<double>(max_sum + 1, 0));
  ways[0][0] = 1;
  for (int r : rank2)
    for (size_t k = n1; k >= 1; --k)
      for (int s = max_sum; s >= r; --s) ways[k][s] += ways[k - 1][s - r];
  double tail = 0, total = 0;
  for (int s = 0; s <= max_sum; ++s) {
    total += ways[n1][s];
    if (s >= observed2) tail += ways[n1][s];
  }
  return tail / total;
}

}  // namespace

Summary summarize(const std::vector<double>& v) {
  Summary s;
  if (v.empty()) return s;
  const double m = double(v.size());
  double mean = 0, var = 0;
  for (double x : v) mean += x / m;
  for (double x : v) var += (x - mean) * (x - mean);
  s.median = median(v);
  s.min = *std::min_element(v.begin(), v.end()), s.max = *std::max_element(v.begin(), v.end());
  s.cv = v.size() > 1 && mean > 0 ? std::sqrt(var / (m - 1)) / mean : 0.0;
  return s;
}

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  const size_t h = v.size() / 2;
  std::nth_element(v.begin(), v.begin() + h, v.end());
  if (v.size() % 2) return v[h];
  return 0.5 * (v[h] + *std::max_element(v.begin(), v.begin() + h));
}

MannWhitney mann_whitney_greater(const std::vector<double>& x, const std::vector<double>& y) {
  MannWhitney r;
  const size_t n1 = x.size(), n2 = y.size();
  if (n1 == 0 || n2 == 0) return r;
  std::vector<double> pooled = x;
  pooled.insert(pooled.end(), y.begin(), y.end());
  double tie_term = 0;
  const std::vector<int> rank2 = doubled_midranks(pooled, tie_term);
  const int sum2 = std::accumulate(rank2.begin(), rank2.begin() + n1, 0);
  r.u = sum2 / 2.0 - double(n1) * (n1 + 1) / 2;
  if (n1 <= kExactMax && n2 <= kExactMax) {
    r.exact = true;
    r.p = exact_upper_tail(rank2, n1, sum2);
    return r;
  }
  const double n = double(n1 + n2);
  const double mean = double(n1) * n2 / 2;
  const double var = double(n1) * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)));
  if (var <= 0) return r.p = 1, r;  // every value tied
  const double z = (r.u - mean - 0.5) / std::sqrt(var);
  r.p = 0.5 * std::erfc(z / std::sqrt(2.0));
  return r;
}

double mann_whitney_min_p(int n1, int n2) {
  if (n1 <= 0 || n2 <= 0) return 1;
  double c = 1;  // C(n1 + n2, n1), built incrementally
  for (int i = 1; i <= n1; ++i) c = c * (n2 + i) / i;
  return 1 / c;
}

}  // namespace attnbench
