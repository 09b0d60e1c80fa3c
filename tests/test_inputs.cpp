// Input distributions (--dist): determinism, the attention structure each one promises, and
// the npy loader's shape checks.
#include <Random123/philox.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <numeric>

#include "attention/npy.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;
using attnbench::Inputs;
using attnbench::make_inputs;

bool same_inputs(const Inputs& a, const Inputs& b) {
  return bit_identical(a.q, b.q) && bit_identical(a.k, b.k) && bit_identical(a.v, b.v);
}

const std::vector<std::string> kGenerated = {"gaussian",
                                             "clustered",
                                             "clustered:clusters=3,noise=0.2",
                                             "local",
                                             "local:width=4",
                                             "peaked",
                                             "peaked:temperature=0.2",
                                             "recall:pairs=8",
                                             "recall:gap=depth,pairs=8",
                                             "recall:gap=5,pairs=4,beta=3"};

TEST(Inputs, DeterministicAndThreadCountIndependent) {
  for (const auto& d : attnbench::distributions()) {  // every generated one is covered below
    const bool covered = std::any_of(kGenerated.begin(), kGenerated.end(), [&](const auto& g) {
      return g.substr(0, g.find(':')) == d.name;
    });
    EXPECT_TRUE(covered || std::string(d.name) == "npy") << d.name << " is not in kGenerated";
  }
  Shape s{2, 3, 67, 67, 33};  // odd sizes: Box-Muller pairs straddle rows and tensors
  for (const auto& dist : kGenerated) {
    SCOPED_TRACE(dist);
    Inputs one = with_threads(1, [&] { return make_inputs(s, dist, 7); });
    Inputs two = with_threads(2, [&] { return make_inputs(s, dist, 7); });
    Inputs again = with_threads(2, [&] { return make_inputs(s, dist, 7); });
    EXPECT_TRUE(same_inputs(one, two));
    EXPECT_TRUE(same_inputs(two, again));
    Inputs other = make_inputs(s, dist, 8);
    EXPECT_FALSE(bit_identical(one.q, other.q));
    EXPECT_FALSE(bit_identical(one.k, other.k));
    EXPECT_TRUE(all_finite(one.q) && all_finite(one.k) && all_finite(one.v));
  }
}

// The generator `gaussian` is defined to be, written out here on its own so that a change
// to the shared code cannot change both sides: Philox4x32-10 with key = seed (low word
// first) and counter = (pair low, pair high, stream, domain 1 << 16), uniforms from the top
// 53 bits of the low and of the high 64 bits shifted by half a step, Box-Muller (cos for the
// even element of a pair, sin for the odd one).
std::vector<float> documented_normal_stream(uint64_t seed, uint64_t stream, int64_t count) {
  auto uniform = [](uint32_t lo, uint32_t hi) {
    return (double((uint64_t(hi) << 32 | lo) >> 11) + 0.5) / 9007199254740992.0;
  };
  std::vector<float> out(static_cast<size_t>(count));
  for (int64_t e = 0; e < count; ++e) {
    const uint64_t pair = uint64_t(e) / 2;
    const r123::Philox4x32::ctr_type c = {
        {uint32_t(pair), uint32_t(pair >> 32), uint32_t(stream), 1u << 16}};
    const r123::Philox4x32::key_type k = {{uint32_t(seed), uint32_t(seed >> 32)}};
    const auto x = r123::Philox4x32()(c, k);
    const double r = std::sqrt(-2.0 * std::log(uniform(x[0], x[1])));
    const double angle = 2.0 * M_PI * uniform(x[2], x[3]);
    out[size_t(e)] = float(r * (e % 2 ? std::sin(angle) : std::cos(angle)));
  }
  return out;
}

bool equals_stream(const Tensor& t, uint64_t seed, uint64_t stream) {
  const std::vector<float> want = documented_normal_stream(seed, stream, t.size());
  return std::equal(want.begin(), want.end(), t.data());
}

// `gaussian` is the documented generator: q, k, v are streams 1, 2, 3, and its first values
// are pinned, so that a change of the numbers (which invalidates every committed baseline)
// cannot pass unnoticed.
TEST(Inputs, GaussianIsTheDocumentedStream) {
  const Shape s{1, 1, 41, 39, 15};  // odd sizes: the last pair of each tensor is cut in half
  Inputs a = make_inputs(s, "gaussian", 3);
  EXPECT_TRUE(equals_stream(a.q, 3, 1));
  EXPECT_TRUE(equals_stream(a.k, 3, 2));
  EXPECT_TRUE(equals_stream(a.v, 3, 3));
  Tensor direct(1, 1, 41, 15);  // what the tests' random_inputs() and encodings build on
  attnbench::fill_gaussian(direct, 3, 1);
  EXPECT_TRUE(equals_stream(direct, 3, 1));
  const std::vector<float> first(a.q.data(), a.q.data() + 4);
  EXPECT_EQ(first,
            (std::vector<float>{0x1.6ca0ecp-1f, 0x1.4e5b1p+0f, -0x1.d26138p+0f, 0x1.0532d8p-4f}));
}

// Mean over sampled query rows (both heads) of `stat(probabilities, row)`.
double mean_row_stat(const Shape& s, const Inputs& in,
                     const std::function<double(const std::vector<double>&, int64_t)>& stat) {
  std::vector<double> p;
  double sum = 0;
  int count = 0;
  for (int64_t h = 0; h < s.heads; ++h)
    for (int64_t i = 0; i < s.nq; i += 7) {
      reference_probs(s, in.q, in.k, 0, h, i, nullptr, p);
      sum += stat(p, i), ++count;
    }
  return sum / count;
}

double max_prob(const std::vector<double>& p, int64_t) {
  return *std::max_element(p.begin(), p.end());
}

// exp(entropy): how many keys a row effectively spreads its mass over.
double effective_keys(const std::vector<double>& p, int64_t) {
  double h = 0;
  for (double x : p)
    if (x > 0) h -= x * std::log(x);
  return std::exp(h);
}

// Mass on the `k` most probable keys.
double top_mass(const std::vector<double>& p, size_t k) {
  std::vector<double> s = p;
  std::partial_sort(s.begin(), s.begin() + k, s.end(), std::greater<>());
  return std::accumulate(s.begin(), s.begin() + k, 0.0);
}

double band_mass(const std::vector<double>& p, int64_t i, int64_t band) {
  double m = 0;
  for (int64_t j = std::max<int64_t>(0, i - band); j <= std::min<int64_t>(p.size() - 1, i + band);
       ++j)
    m += p[j];
  return m;
}

const Shape kStructure{1, 2, 512, 512, 64};

TEST(Inputs, PeakedRowsAreNearlyOneHot) {
  const double peaked = mean_row_stat(kStructure, make_inputs(kStructure, "peaked", 1), max_prob);
  const double gaussian =
      mean_row_stat(kStructure, make_inputs(kStructure, "gaussian", 1), max_prob);
  const double warmer =
      mean_row_stat(kStructure, make_inputs(kStructure, "peaked:temperature=0.5", 1), max_prob);
  EXPECT_GT(peaked, 0.9);
  EXPECT_LT(gaussian, 0.1);
  EXPECT_LT(warmer, peaked);  // temperature controls the sharpness
}

TEST(Inputs, LocalMassSitsNearTheDiagonal) {
  auto within = [](int64_t band) {
    return [band](const std::vector<double>& p, int64_t i) { return band_mass(p, i, band); };
  };
  const double local = mean_row_stat(kStructure, make_inputs(kStructure, "local", 1), within(16));
  const double narrow =
      mean_row_stat(kStructure, make_inputs(kStructure, "local:width=4", 1), within(4));
  const double gaussian =
      mean_row_stat(kStructure, make_inputs(kStructure, "gaussian", 1), within(16));
  EXPECT_GT(local, 0.9);
  EXPECT_GT(narrow, 0.9);
  EXPECT_LT(gaussian, 0.15);  // 33 of 512 keys: ≈ 0.06 for near-uniform rows
  Shape causal = kStructure;
  causal.causal = true;
  EXPECT_GT(mean_row_stat(causal, make_inputs(causal, "local", 1), within(16)), 0.9);
}

TEST(Inputs, ClusteredConcentratesMassOnItsCluster) {
  const Inputs clustered = make_inputs(kStructure, "clustered", 1);  // 8 clusters of ≈ 64 keys
  const Inputs gaussian = make_inputs(kStructure, "gaussian", 1);
  const double eff_c = mean_row_stat(kStructure, clustered, effective_keys);
  const double eff_g = mean_row_stat(kStructure, gaussian, effective_keys);
  EXPECT_LT(eff_c, 100);  // ≈ n / C
  EXPECT_LT(eff_c, 0.3 * eff_g);
  auto top128 = [](const std::vector<double>& p, int64_t) { return top_mass(p, 128); };
  EXPECT_GT(mean_row_stat(kStructure, clustered, top128), 0.95);
  // N(0,1) logits: the top quarter of keys (z > 0.674) holds P(Z > 0.674 - 1) ≈ 0.63 of the mass.
  EXPECT_LT(mean_row_stat(kStructure, gaussian, top128), 0.7);
  // Fewer clusters → each query's cluster holds more keys.
  const double eff_2 =
      mean_row_stat(kStructure, make_inputs(kStructure, "clustered:clusters=2", 1), effective_keys);
  EXPECT_GT(eff_2, 2 * eff_c);
}

TEST(Inputs, BadDistributionsAreUsageErrorsListingTheValidOnes) {
  Shape s{1, 1, 8, 8, 4};
  for (const char* bad :
       {"uniform", "", "gaussian:x=1", "clustered:clusters=0", "clustered:clusters=2.5",
        "clustered:noise=-1", "clustered:clusters", "local:width=abc", "local:radius=3",
        "peaked:temperature=0", "peaked:temperature=-1", "peaked:temp=1", "npy", "npy:"}) {
    SCOPED_TRACE(bad);
    try {
      make_inputs(s, bad, 0);
      ADD_FAILURE() << "accepted";
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("valid: gaussian, clustered"), std::string::npos)
          << e.what();
    }
  }
}

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("attn_inputs_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void save(const fs::path& dir, const char* name, const Tensor& t, int rank) {
  std::vector<int64_t> shape = {t.batch(), t.heads(), t.seq(), t.dim()};
  shape.erase(shape.begin(), shape.begin() + (4 - rank));
  write_npy((dir / (std::string(name) + ".npy")).string(), shape, t.data());
}

TEST(Inputs, NpyRoundTripAtEveryRank) {
  fs::path d = scratch("roundtrip");
  for (int rank : {4, 3, 2}) {
    SCOPED_TRACE(rank);
    Shape s{rank == 4 ? 2 : 1, rank >= 3 ? 3 : 1, 19, 23, 8};
    Inputs in = make_inputs(s, "clustered", 5);
    save(d, "q", in.q, rank), save(d, "k", in.k, rank), save(d, "v", in.v, rank);
    EXPECT_TRUE(same_inputs(make_inputs(s, "npy:" + d.string(), 0), in));
  }
}

TEST(Inputs, NpyShapeMismatchIsAClearError) {
  fs::path d = scratch("badshape");
  Shape s{1, 2, 16, 16, 8};
  Inputs in = make_inputs(s, "gaussian", 5);
  save(d, "q", in.q, 3), save(d, "k", in.k, 3), save(d, "v", in.v, 3);
  Shape other = s;
  other.dim = 4;
  try {
    make_inputs(other, "npy:" + d.string(), 0);
    ADD_FAILURE() << "accepted a [2,16,8] q.npy for D=4";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("q.npy has shape [2,16,8]"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("[1,2,16,4]"), std::string::npos) << e.what();
  }
  Shape more_heads = s;
  more_heads.batch = 2;  // [H,N,D] files only stand for B = 1
  EXPECT_THROW(make_inputs(more_heads, "npy:" + d.string(), 0), UsageError);
  EXPECT_THROW(make_inputs(s, "npy:" + (d / "missing").string(), 0), RuntimeError);
}

}  // namespace
}  // namespace attn::test
