// The tile plan (attention/plan.h) and every plan-based variant: one property test, driven by
// the registry, so that a new pattern is covered as soon as it is registered.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>

#include "attention/npy.h"
#include "attention/plan.h"
#include "test_util.h"

namespace attn::test {
namespace {

// Specs beyond each variant's default that the property test also runs (parameter corners).
const std::map<std::string, std::vector<std::string>> kExtraSpecs = {
    {"sliding_window", {"sliding_window:radius=9,dilation=3", "sliding_window:radius=0"}},
    {"longformer",
     {"longformer:radius=20,dilation=2,global_idx=3;100;129", "longformer:radius=7,global=70"}},
    {"bigbird",
     {"bigbird:block=32,window=1,global=1,random=2,seed=4", "bigbird:block=100,global=0,random=1",
      "bigbird:block=7,window=5,global=3,random=0"}},
    {"sink_window", {"sink_window:window=10,sinks=70", "sink_window:window=1,sinks=0"}},
    {"block_sparse",
     {"block_sparse:block=32,density=0.3,seed=2", "block_sparse:block=100,density=1"}},
    {"sparse_transformer",
     {"sparse_transformer:pattern=strided,stride=20", "sparse_transformer:pattern=strided,stride=5",
      "sparse_transformer:pattern=strided,stride=70,causal=false",
      "sparse_transformer:pattern=fixed,stride=100,summary=7,causal=false",
      "sparse_transformer:pattern=fixed,stride=16,summary=16"}},
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
      // Pass 0 supplies the output (a gathered block over a strided one); later passes add
      // keys through their own blocks.
      if (b.pass == 0 && !b.rows.gathered && in_gathered[i]) continue;
      if (b.pass == 0) ++m.owners[i];
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

// visited_keys() of every row against a definition of the pattern.
template <class Visible>
void expect_rows(const std::string& spec, const Shape& s, Visible&& visible) {
  auto a = make_attention(spec);
  a->validate(s);
  VisitedKeys keys;
  for (int64_t h = 0; h < s.heads; ++h)
    for (int64_t i = 0; i < s.nq; ++i) {
      std::vector<int64_t> expect;
      for (int64_t j = 0; j < s.nk; ++j)
        if (visible(h, i, j)) expect.push_back(j);
      ASSERT_TRUE(a->visited_keys(s, 0, h, i, keys));
      ASSERT_EQ(keys, VisitedKeys{expect})
          << spec << " " << s.str() << " head " << h << " row " << i;
    }
}

TEST(SinkWindow, IsTheStreamingLlmPattern) {
  for (int64_t n : {1, 50, 200})
    for (bool causal : {false, true}) {
      const int64_t W = 13, S = 4;
      expect_rows("sink_window:window=13,sinks=4", Shape{1, 1, n, n, 16, causal},
                  [&](int64_t, int64_t i, int64_t j) { return j <= i && (j < S || i - j < W); });
    }
}

// Both factorized patterns of arXiv:1904.10509 §4.2, merged, from their definitions.
TEST(SparseTransformer, IsTheUnionOfBothFactors) {
  for (int64_t n : {1, 30, 150})
    for (bool causal : {true, false})
      for (int64_t l : {1, 4, 9, 64}) {
        const std::string c = causal ? "true" : "false", L = std::to_string(l);
        const Shape s{1, 1, n, n, 16, false};
        expect_rows("sparse_transformer:pattern=strided,stride=" + L + ",causal=" + c, s,
                    [&](int64_t, int64_t i, int64_t j) {
                      const int64_t d = i - j;
                      return (!causal || j <= i) && ((d <= l && d >= -l) || d % l == 0);
                    });
        const int64_t sc = std::min<int64_t>(3, l);
        expect_rows("sparse_transformer:pattern=fixed,summary=" + std::to_string(sc) +
                        ",stride=" + L + ",causal=" + c,
                    s, [&](int64_t, int64_t i, int64_t j) {
                      return (!causal || j <= i) && (j / l == i / l || j % l >= l - sc);
                    });
      }
  EXPECT_THROW(make_attention("sparse_transformer:stride=8,summary=9"), UsageError);
}

// BigBird's blocks from the definition: the window, the globals and r random blocks per
// query block, every key of a visible block (non-causal); seeds change only the random part.
TEST(BigBird, BlocksAreWindowGlobalsAndRandom) {
  const int64_t b = 16, n = 200, nb = 13;
  const Shape s{1, 2, n, n, 16, false};
  auto a = make_attention("bigbird:block=16,window=3,global=2,random=3,seed=5");
  a->validate(s);
  VisitedKeys keys;
  std::vector<std::set<int64_t>> random_of_head(2);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t qb = 0; qb < nb; ++qb) {
      ASSERT_TRUE(a->visited_keys(s, 0, h, qb * b, keys));
      std::set<int64_t> kbs;
      for (int64_t j : keys[0]) kbs.insert(j / b);
      int64_t keys_of_blocks = 0;  // every key of each visible block
      for (int64_t kb : kbs) keys_of_blocks += std::min(n, (kb + 1) * b) - kb * b;
      EXPECT_EQ(int64_t(keys[0].size()), keys_of_blocks);
      if (qb < 2) {
        EXPECT_EQ(int64_t(kbs.size()), nb) << "a global block's rows see everything";
        continue;
      }
      int64_t random = 0;
      for (int64_t kb : kbs) {
        const bool window = kb >= qb - 1 && kb <= qb + 1, global = kb < 2;
        random += !window && !global;
        if (!window && !global) random_of_head[h].insert(qb * 100 + kb);
      }
      for (int64_t kb : {qb - 1, qb, qb + 1, int64_t(0), int64_t(1)})
        if (kb >= 0 && kb < nb) {
          EXPECT_TRUE(kbs.count(kb)) << "qb " << qb << " kb " << kb;
        }
      EXPECT_EQ(random, 3) << "qb " << qb;
    }
  EXPECT_NE(random_of_head[0], random_of_head[1]) << "heads draw their own random blocks";
  // Same count, other blocks, when every block has b positions (at n = 200 a random pick of
  // the short last block would change it).
  const Shape whole{1, 2, nb * b, nb * b, 16, false};
  const double f = make_attention("bigbird:block=16,seed=6")->flops(whole);
  EXPECT_EQ(f, make_attention("bigbird:block=16,seed=5")->flops(whole));
}

TEST(BigBird, RandomBlocksRoundTripThroughNpy) {
  const Shape s{1, 2, 300, 300, 16, true};
  const std::string dir = testing::TempDir() + "bigbird_random";
  auto in = random_inputs(s, 3);
  auto a = make_attention("bigbird:block=32,random=2,seed=9");
  a->validate(s);
  Tensor out_a(1, 2, 300, 16), out_b(1, 2, 300, 16);
  a->forward(s, in.q, in.k, in.v, out_a);
  a->save_random(dir, s);
  auto b = make_attention("bigbird:block=32,random=2,seed=1");  // other seed, then imported
  b->load_random(dir, s);
  b->forward(s, in.q, in.k, in.v, out_b);
  EXPECT_TRUE(bit_identical(out_a, out_b));
  // A layout naming a window block as random is refused with the entry's position.
  NpyArray arr = read_npy(dir + "/random_blocks.npy");
  arr.data[2 * 5 + 0] = 4.0f;  // head 0, query block 5: block 4 is in its window
  write_npy(dir + "/random_blocks.npy", arr.shape, arr.data.data());
  try {
    b->load_random(dir, s);
    ADD_FAILURE() << "bad random block accepted";
  } catch (const RuntimeError& e) {
    EXPECT_NE(std::string(e.what()).find("entry [0,5,0]"), std::string::npos) << e.what();
  }
}

TEST(PlanVariants, BadParametersAreUsageErrors) {
  const Shape s{1, 2, 500, 500, 16, false};
  const std::pair<const char*, const char*> cases[] = {
      {"bigbird:block=0", "out of range"},
      {"bigbird:block=600", "exceeds the sequence length"},
      {"bigbird:window=2", "must be odd"},
      {"bigbird:random=4", "exceeds the 3 blocks"},  // 8 blocks: 3 window + 2 global + 3 left
      {"sink_window:window=0", "out of range"},
      {"block_sparse:density=0", "out of range"},
      {"block_sparse:density=1.5", "out of range"},
  };
  for (auto [spec, what] : cases) {
    const std::string e = usage_error(spec, s);
    EXPECT_NE(e.find(what), std::string::npos) << spec << ": '" << e << "'";
  }
  EXPECT_EQ(usage_error("bigbird:random=3", s), "");
  EXPECT_EQ(usage_error("bigbird:window=2,random=9", Shape{1, 2, 500, 500, 16, true}), "");
  for (const char* name : {"bigbird", "sink_window"})
    EXPECT_NE(usage_error(name, Shape{1, 1, 500, 400, 16, false}).find("Nq must equal Nk"),
              std::string::npos);
}

// A user layout: its blocks exactly (2 = causal inside the block), heads broadcast from 1,
// and clear errors for a wrong shape or entries other than 0/1/2.
TEST(BlockSparse, FileLayoutIsThePattern) {
  const std::string path = testing::TempDir() + "layout.npy";
  const Shape s{1, 2, 100, 70, 16, false};  // 4 x 3 blocks of 32 (cross-attention is fine)
  const float L[4][3] = {{1, 0, 0}, {2, 1, 0}, {0, 0, 1}, {1, 2, 2}};
  write_npy(path, {1, 4, 3}, &L[0][0]);
  expect_rows("block_sparse:block=32,layout=" + path, s, [&](int64_t, int64_t i, int64_t j) {
    const float x = L[i / 32][j / 32];
    return x == 1 || (x == 2 && j <= i);
  });
  auto in = random_inputs(s, 2);
  auto mask = [&](int64_t, int64_t, int64_t i, int64_t j) {
    const float x = L[i / 32][j / 32];
    return x == 1 || (x == 2 && j <= i);
  };
  const ElementMask m = mask;
  EXPECT_LT(relative_error(run_variant("block_sparse:block=32,layout=" + path, s, in),
                           reference_attention(s, in.q, in.k, in.v, &m)),
            1e-5);
  EXPECT_NE(usage_error("block_sparse:block=16,layout=" + path, s).find("needs [2 or 1,7,5]"),
            std::string::npos)
      << usage_error("block_sparse:block=16,layout=" + path, s);
  const float bad[3] = {1, 3, 0};
  write_npy(path, {1, 1, 3}, bad);
  try {
    make_attention("block_sparse:layout=" + path);
    ADD_FAILURE() << "entry 3 accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("entry 1"), std::string::npos) << e.what();
  }
  write_npy(path, {3}, bad);
  EXPECT_THROW(make_attention("block_sparse:layout=" + path), UsageError);
  EXPECT_THROW(make_attention("block_sparse:layout=/no/such/file.npy"), RuntimeError);
}

}  // namespace
}  // namespace attn::test
