// The one random number generator of attnbench: Philox4x32-10 (Salmon, Moraes, Dror, Shaw,
// "Parallel random numbers: as easy as 1, 2, 3", SC 2011), from Random123 (Debian
// librandom123-dev). It is counter-based: element e of a stream is a pure function of
// (seed, domain, index, e), so generated data never depends on the thread count or on the
// order it is filled in, and a large array can be filled in parallel or read at one position.
// docs/ALGORITHMS.md §Random numbers gives the exact mapping (reproducible outside attnbench).
#pragma once

#include <Random123/philox.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace attn {

// What a stream is for, so that equal seeds of different consumers never share numbers (an
// LSH rotation must not equal the first entries of the input q drawn with the same seed).
enum class RandomDomain : uint16_t {
  kInputs = 1,        // index: the input generator's stream (q, k, v, centroids, ...)
  kLshRotations = 2,  // index: (head << 8) | round
  kPerformerProjection = 3,
  kReferenceRows = 4,  // the fp64 reference's row sample
  kBlockLayout = 5,    // index: the layout's stream (per head, per query block)
  kPositional = 6,     // index: the encoding's parameter tensor
  // index: group·kinds + kind (kind 0 = E, 1 = F)
  kLinformerProjection = 7,
};

// Stream (seed, domain, index), index < 2^48. Philox key = the seed (low word first);
// counter = (block low, block high, index low, domain·2^16 + index high). Block b yields 128
// bits; element e uses half of block e / 2.
class RandomStream {
 public:
  RandomStream(uint64_t seed, RandomDomain domain, uint64_t index)
      : key_{{uint32_t(seed), uint32_t(seed >> 32)}},
        word2_(uint32_t(index)),
        word3_(uint32_t(domain) << 16 | uint32_t(index >> 32 & 0xffff)) {}

  // The 128 random bits of block b.
  std::array<uint32_t, 4> block(uint64_t b) const {
    const r123::Philox4x32::ctr_type c = {{uint32_t(b), uint32_t(b >> 32), word2_, word3_}};
    const auto r = r123::Philox4x32()(c, key_);
    return {r[0], r[1], r[2], r[3]};
  }

  // 64 random bits: element e (words 2·(e mod 2) and 2·(e mod 2) + 1 of block e / 2).
  uint64_t bits(uint64_t e) const {
    const auto r = block(e / 2);
    const int w = int(e % 2) * 2;
    return uint64_t(r[w]) | uint64_t(r[w + 1]) << 32;
  }

  // Uniform in (0, 1) from the top 53 bits of element e (never 0, so log() is safe).
  double uniform(uint64_t e) const { return (double(bits(e) >> 11) + 0.5) * 0x1.0p-53; }

  // Uniform integer in [0, n), n ≥ 1, from element e: the high word of bits·n (Lemire's
  // multiply-shift; bias below n / 2^64, far under anything measurable here).
  uint64_t below(uint64_t e, uint64_t n) const {
    return uint64_t((unsigned __int128)bits(e) * n >> 64);
  }

  // N(0, 1) element e: Box-Muller on the two uniforms of block e / 2, cos for even e and sin
  // for odd e (so a pair costs one Philox call).
  double normal(uint64_t e) const {
    const auto [c, s] = normal_pair(e / 2);
    return e % 2 ? s : c;
  }

  // p[e] = normal(e) for e in [0, count), in parallel.
  void fill_normal(float* p, int64_t count) const {
#pragma omp parallel for schedule(static)
    for (int64_t pair = 0; pair < (count + 1) / 2; ++pair) {
      const auto [c, s] = normal_pair(uint64_t(pair));
      p[2 * pair] = float(c);
      if (2 * pair + 1 < count) p[2 * pair + 1] = float(s);
    }
  }

 private:
  // Elements 2b and 2b + 1: r·cos(a) and r·sin(a), r = sqrt(−2 ln u1), a = 2π·u2, with u1 and
  // u2 the (0, 1) uniforms of the low and high 64 bits of block b.
  std::array<double, 2> normal_pair(uint64_t b) const {
    const auto r = block(b);
    const double u1 = (double((uint64_t(r[0]) | uint64_t(r[1]) << 32) >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = (double((uint64_t(r[2]) | uint64_t(r[3]) << 32) >> 11) + 0.5) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * std::log(u1)), angle = 2.0 * M_PI * u2;
    return {radius * std::cos(angle), radius * std::sin(angle)};
  }

  r123::Philox4x32::key_type key_;
  uint32_t word2_, word3_;
};

// Successive N(0, 1) numbers of one stream, for code that draws in a fixed sequential order.
class NormalSequence {
 public:
  explicit NormalSequence(const RandomStream& stream) : stream_(stream) {}
  double operator()() { return stream_.normal(next_++); }

 private:
  RandomStream stream_;
  uint64_t next_ = 0;
};

// k distinct values drawn uniformly from `pool`, ascending: a partial Fisher-Yates shuffle whose
// a-th swap partner is draw.below(a, |pool| − a).
inline std::vector<int64_t> sample_distinct(std::vector<int64_t> pool, int64_t k,
                                            const RandomStream& draw) {
  k = std::clamp<int64_t>(k, 0, int64_t(pool.size()));
  for (int64_t a = 0; a < k; ++a)
    std::swap(pool[a], pool[a + int64_t(draw.below(uint64_t(a), pool.size() - a))]);
  pool.resize(size_t(k));
  std::sort(pool.begin(), pool.end());
  return pool;
}

}  // namespace attn
