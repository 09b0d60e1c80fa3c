#include "harness/inputs.h"

#include <cmath>

namespace attnbench {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1) from 53 random bits.
double unit(uint64_t bits) {
  return (double(bits >> 11) + 0.5) * 0x1.0p-53;
}

}  // namespace

void fill_gaussian(attn::Tensor& t, uint64_t seed, uint64_t stream) {
  const uint64_t base = splitmix64(seed ^ splitmix64(stream + 0x5151));
  float* p = t.data();
  const int64_t n = t.size();
#pragma omp parallel for schedule(static)
  for (int64_t pair = 0; pair < (n + 1) / 2; ++pair) {
    // Box-Muller on two uniforms gives two independent normals.
    const double u1 = unit(splitmix64(base + 2 * uint64_t(pair)));
    const double u2 = unit(splitmix64(base + 2 * uint64_t(pair) + 1));
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 2.0 * M_PI * u2;
    p[2 * pair] = float(r * std::cos(a));
    if (2 * pair + 1 < n) p[2 * pair + 1] = float(r * std::sin(a));
  }
}

Inputs make_inputs(const attn::Shape& s, const std::string& dist, uint64_t seed) {
  if (dist != "gaussian")
    throw attn::UsageError("unknown input distribution '" + dist + "'; valid: gaussian");
  Inputs in{attn::Tensor(s.batch, s.heads, s.nq, s.dim),
            attn::Tensor(s.batch, s.heads, s.nk, s.dim),
            attn::Tensor(s.batch, s.heads, s.nk, s.dim)};
  fill_gaussian(in.q, seed, 1);
  fill_gaussian(in.k, seed, 2);
  fill_gaussian(in.v, seed, 3);
  return in;
}

}  // namespace attnbench
