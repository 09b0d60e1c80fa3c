// Small statistics for the harness, the one place they are computed: medians, the summary of
// a case's repetitions, and the Mann-Whitney U test used by `compare`.
#pragma once

#include <vector>

namespace attnbench {

double median(std::vector<double> v);  // NaN for an empty sample

// Median, extremes and coefficient of variation (sample standard deviation / mean) of a
// sample, as reported per case.
struct Summary {
  double median = 0, min = 0, max = 0, cv = 0;
};
Summary summarize(const std::vector<double>& v);  // zeros for an empty sample

struct MannWhitney {
  double u = 0;        // U of x: pairs (x_i, y_j) with x_i > y_j, ties counting 1/2
  double p = 1;        // one-sided p-value for "x tends to be larger than y"
  bool exact = false;  // exact permutation distribution (else normal approximation)
};

// One-sided Mann-Whitney U test of H1 "x is stochastically larger than y". Exact (the
// permutation distribution of the midrank sum, ties included) when both samples have at most
// 10 values; beyond, the normal approximation with tie correction and continuity correction
// (as scipy.stats.mannwhitneyu with method="asymptotic"). An empty sample gives p = 1.
MannWhitney mann_whitney_greater(const std::vector<double>& x, const std::vector<double>& y);

// The smallest one-sided p-value the test can produce for sample sizes n1, n2 (no ties):
// 1 / C(n1 + n2, n1). At or above alpha, no slowdown can ever be significant.
double mann_whitney_min_p(int n1, int n2);

}  // namespace attnbench
