// How median time grows with n: log-log least squares with an intercept, and crossovers.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace attnbench {

// ln t = intercept + alpha · ln n, by ordinary least squares over every (n, t) point.
struct PowerFit {
  bool valid = false;  // needs >= 2 distinct n (a confidence interval needs >= 3 points)
  double alpha = 0, intercept = 0;
  double ci_lo = 0, ci_hi = 0;  // 95% CI of alpha from Student's t with m − 2 degrees of freedom
  double n_min = 0, n_max = 0;  // measured range
  double predict(double n) const;
};
PowerFit fit_power_law(const std::vector<double>& n, const std::vector<double>& t);

// Where `variant` becomes faster than `dense` (both fitted), within the range both measured.
struct Crossover {
  std::optional<double> n;  // null unless the variant is faster from some n in range onwards
  std::string note;         // "faster than BASELINE from n≈X" / "none in range"
};
// Where the variant's fit drops below the baseline's (named `baseline` in the note).
Crossover find_crossover(const PowerFit& variant, const PowerFit& dense,
                         const std::string& baseline = "full");

// Two-sided 97.5% quantile of Student's t with `dof` degrees of freedom.
double student_t_975(int dof);

}  // namespace attnbench
