#include "harness/scaling.h"

#include <algorithm>
#include <boost/math/distributions/students_t.hpp>
#include <cmath>
#include <limits>
#include <set>

namespace attnbench {

double PowerFit::predict(double n) const {
  return std::exp(intercept + alpha * std::log(n));
}

double student_t_975(int dof) {
  if (dof < 1) return std::numeric_limits<double>::infinity();
  return boost::math::quantile(boost::math::students_t(dof), 0.975);
}

PowerFit fit_power_law(const std::vector<double>& n, const std::vector<double>& t) {
  PowerFit f;
  const size_t m = std::min(n.size(), t.size());
  std::set<double> distinct;
  double sx = 0, sy = 0;
  for (size_t i = 0; i < m; ++i) {
    if (!(n[i] > 0 && t[i] > 0)) return f;
    distinct.insert(n[i]);
    sx += std::log(n[i]), sy += std::log(t[i]);
  }
  if (distinct.size() < 2) return f;
  const double mx = sx / m, my = sy / m;
  double sxx = 0, sxy = 0;
  for (size_t i = 0; i < m; ++i) {
    const double dx = std::log(n[i]) - mx;
    sxx += dx * dx, sxy += dx * (std::log(t[i]) - my);
  }
  f.alpha = sxy / sxx;
  f.intercept = my - f.alpha * mx;
  double ssr = 0;
  for (size_t i = 0; i < m; ++i) {
    const double r = std::log(t[i]) - f.intercept - f.alpha * std::log(n[i]);
    ssr += r * r;
  }
  // Standard error of the slope: sqrt(s² / Sxx) with s² = SSR / (m − 2).
  const int dof = int(m) - 2;
  const double half = dof > 0 ? student_t_975(dof) * std::sqrt(ssr / dof / sxx)
                              : std::numeric_limits<double>::infinity();
  f.ci_lo = f.alpha - half, f.ci_hi = f.alpha + half;
  f.n_min = *distinct.begin(), f.n_max = *distinct.rbegin();
  f.valid = true;
  return f;
}

Crossover find_crossover(const PowerFit& v, const PowerFit& d, const std::string& baseline) {
  Crossover c;
  const double lo = std::max(v.n_min, d.n_min), hi = std::min(v.n_max, d.n_max);
  if (!v.valid || !d.valid || !(lo < hi)) return c.note = "none in range", c;
  // gap(x) = ln t_variant − ln t_dense is linear in x = ln n; the variant is faster where < 0.
  auto gap = [&](double x) { return (v.intercept - d.intercept) + (v.alpha - d.alpha) * x; };
  const double xlo = std::log(lo), xhi = std::log(hi);
  if (gap(xhi) >= 0) return c.note = "none in range", c;
  const double x = gap(xlo) < 0 ? xlo : (d.intercept - v.intercept) / (v.alpha - d.alpha);
  c.n = std::exp(x);
  char buf[48];
  std::snprintf(buf, sizeof buf, " from n≈%.0f%s", *c.n,
                gap(xlo) < 0 ? " (at every measured n)" : "");
  c.note = "faster than " + baseline + buf;
  return c;
}

}  // namespace attnbench
