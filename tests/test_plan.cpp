// The tile plan (attention/plan.h) and every plan-based variant: one property test, driven by
// the registry, so that a new pattern is covered as soon as it is registered.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "attention/plan.h"
#include "test_util.h"

namespace attn::test {
namespace {

// Specs beyond each variant's default that the property test also runs (parameter corners).
const std::map<std::string, std::vector<std::string>> kExtraSpecs = {
    {"sliding_window", {"sliding_window:radius=9,dilation=3", "sliding_window:radius=0"}},
    {"longformer",
     {"longformer:radius=20,dilation=2,global_idx=3;100;129", "longformer:radius=7,global=70"}},
};

// Row i's keys of one head pattern, written out element by element from the plan's own
// definition (ownership, span positions, predicate), independently of the plan's derivations.
struct BruteMask {
  int64_t n = 0, nk = 0;
  std::vector<uint8_t> seen;  // [i][j] visits
  std::vector<int> owners;    // per row: how many blocks supply its output
  bool duplicate = false;     // some row visits a key twice
  bool visible(int64_t i, int64_t j) const { return seen[i * nk + j] != 0; }
};

BruteMask brute_mask(const HeadPattern& p, int64_t nq, int64_t nk) {
  BruteMask m{nq, nk, std::vector<uint8_t>(nq * nk, 0), std::vector<int>(nq, 0)};
  auto pos = [&](const Positions& x, int64_t t) {
    return x.gathered ? p.gather[x.base + t] : x.base + t * x.step;
  };
  std::vector<uint8_t> in_gathered(nq, 0);
  for (const QueryBlock& b : p.blocks)
    if (b.rows.gathered)
      for (int64_t t = 0; t < b.rows.count; ++t) in_gathered[pos(b.rows, t)] = 1;
  for (const QueryBlock& b : p.blocks)
    for (int64_t t = 0; t < b.rows.count; ++t) {
      const int64_t i = pos(b.rows, t);
      if (!b.rows.gathered && in_gathered[i]) continue;  // overwritten by its gathered block
      ++m.owners[i];
      for (int64_t a = b.first; a < b.first + b.count; ++a) {
        const KeySpan& sp = p.spans[a];
        for (int64_t c = 0; c < sp.keys.count; ++c) {
          const int64_t j = pos(sp.keys, c);
          const bool in =
              !sp.partial || (j - i >= sp.lo && j - i <= sp.hi && !(sp.skip_hidden && p.hidden[j]));
          if (!in) continue;
          m.duplicate |= m.seen[i * nk + j] != 0;
          m.seen[i * nk + j] = 1;
        }
      }
    }
  return m;
}

// The transposed index rebuilt by brute force: per key block, the (block, span) tiles holding
// one of its keys, in block then span order.
std::vector<std::vector<std::pair<int64_t, int64_t>>> brute_transpose(const HeadPattern& p,
                                                                      int64_t nk) {
  const int64_t B = TilePlan::kKeyBlock;
  std::vector<std::vector<std::pair<int64_t, int64_t>>> t((nk + B - 1) / B);
  for (int64_t bi = 0; bi < int64_t(p.blocks.size()); ++bi) {
    const QueryBlock& b = p.blocks[bi];
    for (int64_t a = 0; a < b.count; ++a) {
      std::set<int64_t> kbs;
      const KeySpan& sp = p.spans[b.first + a];
      for (int64_t c = 0; c < sp.keys.count; ++c) kbs.insert(position(p, sp.keys, c) / B);
      for (int64_t kb : kbs) t[kb].push_back({bi, a});
    }
  }
  return t;
}

// Shapes around the 64-row block, B·H above the thread count.
Shape random_shape(std::mt19937& rng) {
  const int64_t lengths[] = {1, 7, 63, 65, 130, 200, 257, 450, 520, 641, 777};
  const int64_t dims[] = {16, 32};
  const int64_t n = lengths[rng() % 11];
  return Shape{1 + int64_t(rng() % 2), 2 + int64_t(rng() % 2), n, n,
               dims[rng() % 2],        bool(rng() % 2)};
}

// Everything the plan promises, for one spec at one shape. Returns false if the variant
// rejects the shape (so the caller can count the cases that ran).
bool check_plan_case(const std::string& spec, const Shape& s, uint64_t seed) {
  auto a = make_attention(spec);
  try {
    a->validate(s);
  } catch (const UsageError&) {
    return false;
  }
  const auto plan = a->plan(s);
  EXPECT_TRUE(plan) << spec;
  if (!plan) return false;
  const std::string where = spec + " " + s.str();
  std::vector<BruteMask> masks(s.heads);
  double pairs = 0;
  for (int64_t h = 0; h < s.heads; ++h) {
    const HeadPattern& p = plan->of_head(h);
    masks[h] = brute_mask(p, s.nq, s.nk);
    const BruteMask& m = masks[h];
    EXPECT_FALSE(m.duplicate) << where << " head " << h << ": a row visits a key twice";
    for (int64_t i = 0; i < s.nq; ++i) {
      EXPECT_EQ(m.owners[i], 1) << where << " head " << h << " row " << i;
      for (int64_t j = 0; j < s.nk; ++j) {
        pairs += m.visible(i, j);
        if (s.causal && j > i) {
          EXPECT_FALSE(m.visible(i, j)) << where << " sees the future";
        }
      }
    }
    // visited_keys() against the mask's row (both heads' rows, first and last batch).
    VisitedKeys keys;
    for (int64_t i = 0; i < s.nq; ++i) {
      std::vector<int64_t> expect;
      for (int64_t j = 0; j < s.nk; ++j)
        if (m.visible(i, j)) expect.push_back(j);
      EXPECT_TRUE(a->visited_keys(s, s.batch - 1, h, i, keys));
      EXPECT_EQ(keys, VisitedKeys{expect}) << where << " head " << h << " row " << i;
    }
    // The transposed index is exactly the plan's tiles, regrouped by key block.
    const auto t = brute_transpose(p, s.nk);
    EXPECT_EQ(p.key_block_start.size(), t.size() + 1) << where;
    for (size_t kb = 0; kb < t.size() && kb + 1 < p.key_block_start.size(); ++kb) {
      std::vector<std::pair<int64_t, int64_t>> got;
      for (int64_t r = p.key_block_start[kb]; r < p.key_block_start[kb + 1]; ++r)
        got.push_back({p.refs[r].block, p.refs[r].span});
      EXPECT_EQ(got, t[kb]) << where << " key block " << kb;
    }
  }
  EXPECT_EQ(a->flops(s), 4.0 * s.dim * pairs * s.batch) << where;
  EXPECT_GE(a->extra_bytes(s), plan->bytes()) << where;

  auto in = random_inputs(s, seed);
  Tensor one = with_threads(1, [&] { return run_variant(spec, s, in); });
  Tensor two = with_threads(2, [&] { return run_variant(spec, s, in); });
  EXPECT_TRUE(bit_identical(one, two)) << where << ": 1 and 2 threads differ";
  const ElementMask mask = [&](int64_t, int64_t h, int64_t i, int64_t j) {
    return masks[h].visible(i, j);
  };
  EXPECT_LT(relative_error(two, reference_attention(s, in.q, in.k, in.v, &mask)), 1e-5) << where;
  return true;
}

TEST(TilePlan, EveryPlanBasedVariantKeepsItsPromises) {
  std::mt19937 rng(17);
  int plan_based = 0;
  uint64_t seed = 1;
  for (const VariantInfo& v : variants()) {
    if (!make_attention(v.name)->plan(Shape{1, 1, 64, 64, 16, false})) continue;
    ++plan_based;
    std::vector<std::string> specs = {v.name};
    if (kExtraSpecs.count(v.name))
      specs.insert(specs.end(), kExtraSpecs.at(v.name).begin(), kExtraSpecs.at(v.name).end());
    for (const std::string& spec : specs) {
      int ran = 0;
      for (int c = 0; c < 10; ++c) ran += check_plan_case(spec, random_shape(rng), seed++);
      // Long enough for every default (BigBird's blocks), causal and not.
      for (bool causal : {false, true})
        ran += check_plan_case(spec, Shape{2, 2, 700, 700, 16, causal}, seed++);
      EXPECT_GE(ran, 2) << spec << ": too few shapes validated to test the plan";
    }
  }
  EXPECT_GE(plan_based, 2) << "sliding_window and longformer are plan builders";
}

TEST(TilePlan, BrokenPlansAreCaughtByFinish) {
  TilePlan plan(1, 10, 10);
  HeadPattern& p = plan.patterns.emplace_back();
  p.add_block({0, 5, 1, false});
  p.add_span({{0, 10}});
  EXPECT_THROW(plan.finish(), std::logic_error);  // rows 5..9 belong to no block
  p.add_block({5, 5, 1, false});
  p.add_span({{3, 8}});
  EXPECT_THROW(plan.finish(), std::logic_error);  // keys 3..10: past the end
  p.spans.back().keys.count = 7;
  EXPECT_NO_THROW(plan.finish());
  EXPECT_EQ(plan.pairs(), 5 * 10 + 5 * 7);
}

}  // namespace
}  // namespace attn::test
