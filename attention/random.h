// Counter-based random numbers: value e of a stream depends only on (seed, stream, e), so
// generated data never depends on the thread count or on the order it is filled in.
#pragma once

#include <cmath>
#include <cstdint>

namespace attn {

// SplitMix64 finalizer (Steele, Lea, Flood 2014): a bijective 64-bit mix.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1) from the top 53 bits (never 0, so log() is safe).
inline double unit_interval(uint64_t bits) {
  return (double(bits >> 11) + 0.5) * 0x1.0p-53;
}

// p[e] = N(0,1) element e of the stream starting at `base` (Box-Muller on pairs of uniforms),
// filled in parallel; the values depend only on (base, e).
inline void fill_normal_stream(float* p, int64_t count, uint64_t base) {
#pragma omp parallel for schedule(static)
  for (int64_t pair = 0; pair < (count + 1) / 2; ++pair) {
    const double u1 = unit_interval(splitmix64(base + 2 * uint64_t(pair)));
    const double u2 = unit_interval(splitmix64(base + 2 * uint64_t(pair) + 1));
    const double r = std::sqrt(-2.0 * std::log(u1)), a = 2.0 * M_PI * u2;
    p[2 * pair] = float(r * std::cos(a));
    if (2 * pair + 1 < count) p[2 * pair + 1] = float(r * std::sin(a));
  }
}

}  // namespace attn
