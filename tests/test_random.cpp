// The one random number generator (attention/random.h): Random123's Philox4x32-10 answers
// its published known-answer vectors, RandomStream maps (seed, domain, index, element) onto
// it exactly as documented, and the derived draws have the distributions they claim.
#include <Random123/philox.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "attention/random.h"

namespace attn::test {
namespace {

using Ctr = r123::Philox4x32::ctr_type;
using Key = r123::Philox4x32::key_type;

std::vector<uint32_t> philox(Ctr c, Key k) {
  const auto r = r123::Philox4x32()(c, k);
  return {r[0], r[1], r[2], r[3]};
}

// Known-answer vectors of Philox4x32-10 from Random123's kat_vectors (Salmon et al. 2011).
TEST(Random, PhiloxKnownAnswers) {
  EXPECT_EQ(philox({{0, 0, 0, 0}}, {{0, 0}}),
            (std::vector<uint32_t>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox({{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}}, {{0xa4093822, 0x299f31d0}}),
            (std::vector<uint32_t>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

// Counter (block low, block high, index low, domain·2^16 + index high), key (seed low, high).
TEST(Random, StreamIsPhiloxAtTheDocumentedCounter) {
  const uint64_t seed = 0x0123456789abcdefull, index = 0x0000beef00c0ffeeull,
                 b = 0x1234500000042ull;
  const RandomStream s(seed, RandomDomain::kLshRotations, index);
  const auto got = s.block(b);
  EXPECT_EQ(std::vector<uint32_t>(got.begin(), got.end()),
            philox({{uint32_t(b), uint32_t(b >> 32), 0x00c0ffee, (2u << 16) | 0xbeef}},
                   {{0x89abcdef, 0x01234567}}));
  EXPECT_EQ(s.bits(2 * b + 1), uint64_t(got[3]) << 32 | got[2]);
  // Different domains, indices and seeds are different streams.
  const RandomStream other_domain(seed, RandomDomain::kInputs, index);
  const RandomStream other_index(seed, RandomDomain::kLshRotations, index + 1);
  const RandomStream other_seed(seed + 1, RandomDomain::kLshRotations, index);
  EXPECT_NE(s.bits(0), other_domain.bits(0));
  EXPECT_NE(s.bits(0), other_index.bits(0));
  EXPECT_NE(s.bits(0), other_seed.bits(0));
}

TEST(Random, NormalsHaveMeanZeroVarianceOneAndFillMatchesElementwise) {
  const RandomStream s(7, RandomDomain::kInputs, 1);
  const int64_t n = 200001;  // odd: the last pair is cut in half
  std::vector<float> filled(n);
  s.fill_normal(filled.data(), n);
  double sum = 0, sq = 0, fourth = 0;
  for (int64_t e = 0; e < n; ++e) {
    ASSERT_EQ(filled[e], float(s.normal(uint64_t(e)))) << e;
    sum += filled[e], sq += double(filled[e]) * filled[e];
    fourth += std::pow(double(filled[e]), 4);
  }
  // Standard errors: mean 1/sqrt(n) ≈ 0.0022, variance sqrt(2/n) ≈ 0.0032, 4th moment ≈ 0.022.
  EXPECT_NEAR(sum / n, 0.0, 0.012);
  EXPECT_NEAR(sq / n, 1.0, 0.016);
  EXPECT_NEAR(fourth / n, 3.0, 0.12);
}

TEST(Random, UniformAndBelowCoverTheirRangeEvenly) {
  const RandomStream s(11, RandomDomain::kBlockLayout, 3);
  const int kBins = 10;
  const int64_t n = 100000;
  std::vector<int64_t> ubin(kBins), bbin(kBins);
  for (int64_t e = 0; e < n; ++e) {
    const double u = s.uniform(uint64_t(e));
    ASSERT_GT(u, 0.0);
    ASSERT_LT(u, 1.0);
    ++ubin[size_t(u * kBins)];
    const uint64_t x = s.below(uint64_t(e), kBins);
    ASSERT_LT(x, uint64_t(kBins));
    ++bbin[size_t(x)];
  }
  // Chi-square with 9 degrees of freedom: P(> 27.9) = 0.001.
  auto chi2 = [&](const std::vector<int64_t>& bins) {
    double c = 0;
    for (int64_t b : bins) c += std::pow(double(b) - n / kBins, 2) / (n / kBins);
    return c;
  };
  EXPECT_LT(chi2(ubin), 27.9);
  EXPECT_LT(chi2(bbin), 27.9);
  EXPECT_EQ(s.below(5, 1), 0u);
}

TEST(Random, SampleDistinctIsASortedSubsetAndUniform) {
  std::vector<int64_t> pool(20);
  for (int64_t i = 0; i < 20; ++i) pool[i] = 100 + i;
  std::vector<int64_t> hits(20);
  for (uint64_t stream = 0; stream < 4000; ++stream) {
    const auto got = sample_distinct(pool, 5, RandomStream(1, RandomDomain::kBlockLayout, stream));
    ASSERT_EQ(got.size(), 5u);
    ASSERT_TRUE(std::is_sorted(got.begin(), got.end()));
    ASSERT_EQ(std::set<int64_t>(got.begin(), got.end()).size(), 5u);
    for (int64_t x : got) ++hits[x - 100];
  }
  // Each element is drawn with probability 5/20: 1000 of 4000, sd ≈ 27.
  for (int64_t h : hits) EXPECT_NEAR(double(h), 1000.0, 120.0);
  EXPECT_EQ(sample_distinct(pool, 50, RandomStream(1, RandomDomain::kBlockLayout, 0)).size(), 20u);
  EXPECT_TRUE(sample_distinct(pool, -1, RandomStream(1, RandomDomain::kBlockLayout, 0)).empty());
}

}  // namespace
}  // namespace attn::test
