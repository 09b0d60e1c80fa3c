// `bigbird`: BigBird's block-sparse ITC pattern (Zaheer et al., arXiv:2007.14062, §2 and
// App. D): blocks of b positions; a query block sees w sliding key blocks around it, the g
// global blocks, and r random blocks drawn (seeded, per head) from the rest; the rows of a
// global block see every key. Causal: the w blocks ending at the query block, random blocks
// from earlier ones, the diagonal block masked. A plan builder over block_layout.h.
#include <cmath>
#include <filesystem>

#include "attention/block_layout.h"
#include "attention/npy.h"
#include "attention/registry.h"

namespace attn {
namespace {

using blocks::Tile;

class BigBird final : public PlanAttention {
 public:
  BigBird(int64_t block, int64_t window, int64_t global, int64_t random, int64_t seed)
      : b_(block), w_(window), g_(global), r_(random), seed_(seed) {}

  std::string name() const override { return "bigbird"; }
  ParamValues params() const override {
    return {{"block", std::to_string(b_)},
            {"window", std::to_string(w_)},
            {"global", std::to_string(g_)},
            {"random", std::to_string(r_)},
            {"seed", std::to_string(seed_)}};
  }

  void validate(const Shape& s) const override {
    s.check();
    auto fail = [&](const std::string& why) { throw UsageError("bigbird: " + why); };
    if (s.nq != s.nk)
      fail("self-attention only: Nq must equal Nk (got Nq=" + std::to_string(s.nq) +
           ", Nk=" + std::to_string(s.nk) + ")");
    if (b_ > s.nq)
      fail("block=" + std::to_string(b_) + " exceeds the sequence length " + std::to_string(s.nq) +
           "; use block <= n");
    if (!s.causal && w_ % 2 == 0)
      fail("window=" + std::to_string(w_) +
           " must be odd without a causal mask (w = 2k+1 blocks centred on the query block)");
    const int64_t nb = blocks::count(s.nq, b_);
    if (s.causal || r_ == 0) return;  // causal rows take the earlier blocks there are
    for (int64_t qb = std::min(g_, nb); qb < nb; ++qb)
      if (int64_t(pool(qb, nb, false).size()) < r_)
        fail("random=" + std::to_string(r_) + " exceeds the " +
             std::to_string(pool(qb, nb, false).size()) + " blocks outside the window and the " +
             "globals of query block " + std::to_string(qb) + " (n=" + std::to_string(s.nq) +
             ", block=" + std::to_string(b_) + ": " + std::to_string(nb) +
             " blocks); lower random or raise n");
  }

  void save_random(const std::string& dir, const Shape& s) const override {
    const int64_t nb = blocks::count(s.nq, b_);
    std::vector<float> data;
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t qb = 0; qb < nb; ++qb) {
        std::vector<int64_t> rnd = random_blocks(s, h, qb);
        rnd.resize(r_, -1);
        for (int64_t kb : rnd) data.push_back(float(kb));
      }
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw RuntimeError("bigbird: cannot create directory " + dir + ": " + ec.message());
    write_npy(dir + "/random_blocks.npy", {s.heads, nb, r_}, data.data());
  }

  void load_random(const std::string& dir, const Shape& s) override {
    const std::string path = dir + "/random_blocks.npy";
    NpyArray a = read_npy(path);
    const int64_t nb = blocks::count(s.nq, b_);
    if (a.shape != std::vector<int64_t>{s.heads, nb, r_})
      throw RuntimeError(
          path + ": expected random blocks of shape [heads, query blocks, random] = [" +
          std::to_string(s.heads) + "," + std::to_string(nb) + "," + std::to_string(r_) + "]");
    Loaded l{s.heads, nb, s.causal, std::vector<std::vector<int64_t>>(s.heads * nb)};
    for (int64_t row = 0; row < s.heads * nb; ++row) {
      const int64_t qb = row % nb;
      const std::vector<int64_t> allowed =
          qb < g_ ? std::vector<int64_t>{} : pool(qb, nb, s.causal);
      for (int64_t e = 0; e < r_; ++e) {
        const float x = a.data[row * r_ + e];
        if (x == -1.0f) continue;
        const bool ok = x >= 0 && x < float(nb) && x == std::floor(x) &&
                        std::binary_search(allowed.begin(), allowed.end(), int64_t(x));
        if (!ok)
          throw RuntimeError(path + ": entry [" + std::to_string(row / nb) + "," +
                             std::to_string(qb) + "," + std::to_string(e) + "] = " +
                             std::to_string(x) + " is not a block outside the window and the " +
                             "globals of that query block (or -1 for none)");
        l.random[row].push_back(int64_t(x));
      }
      std::sort(l.random[row].begin(), l.random[row].end());
      if (std::adjacent_find(l.random[row].begin(), l.random[row].end()) != l.random[row].end())
        throw RuntimeError(path + ": query block " + std::to_string(qb) + " of head " +
                           std::to_string(row / nb) + " names a random block twice");
    }
    loaded_ = std::move(l);
    forget_plan();
  }

 private:
  struct Loaded {
    int64_t heads = 0, nb = 0;
    bool causal = false;
    std::vector<std::vector<int64_t>> random;  // [h·nb + qb] ascending
  };

  // The window blocks of query block qb (clipped to [0, nb)).
  std::pair<int64_t, int64_t> window(int64_t qb, int64_t nb, bool causal) const {
    const int64_t lo = causal ? qb - w_ + 1 : qb - (w_ - 1) / 2;
    const int64_t hi = causal ? qb : qb + (w_ - 1) / 2;
    return {std::max<int64_t>(0, lo), std::min(nb - 1, hi)};
  }

  // The blocks random ones are drawn from: outside the window and the globals (causal: and
  // before the query block).
  std::vector<int64_t> pool(int64_t qb, int64_t nb, bool causal) const {
    const auto [lo, hi] = window(qb, nb, causal);
    std::vector<int64_t> p;
    for (int64_t kb = g_; kb < (causal ? qb : nb); ++kb)
      if (kb < lo || kb > hi) p.push_back(kb);
    return p;
  }

  std::vector<int64_t> random_blocks(const Shape& s, int64_t h, int64_t qb) const {
    const int64_t nb = blocks::count(s.nq, b_);
    if (qb < g_) return {};
    if (loaded_.heads == s.heads && loaded_.nb == nb && loaded_.causal == s.causal)
      return loaded_.random[h * nb + qb];
    return blocks::sample(pool(qb, nb, s.causal), r_, uint64_t(seed_), uint64_t(h * nb + qb));
  }

  TilePlan build_plan(const Shape& s) const override {
    const int64_t n = s.nq, nb = blocks::count(n, b_);
    TilePlan plan(s.heads, n, n);
    for (int64_t h = 0; h < s.heads; ++h) {
      HeadPattern& p = plan.patterns.emplace_back();
      plan.head_pattern[h] = h;
      for (int64_t qb = 0; qb < nb; ++qb) {
        std::vector<int64_t> kbs;
        if (qb < g_) {  // a global block's rows see everything
          for (int64_t kb = 0; kb < (s.causal ? qb + 1 : nb); ++kb) kbs.push_back(kb);
        } else {
          const auto [lo, hi] = window(qb, nb, s.causal);
          for (int64_t kb = 0; kb < std::min(g_, lo); ++kb) kbs.push_back(kb);
          for (int64_t kb = lo; kb <= hi; ++kb) kbs.push_back(kb);
          for (int64_t kb : random_blocks(s, h, qb)) kbs.push_back(kb);
          std::sort(kbs.begin(), kbs.end());
        }
        blocks::Row row;
        for (int64_t kb : kbs)
          row.push_back({kb, s.causal && kb == qb ? Tile::Causal : Tile::Full});
        blocks::add_row(p, qb, row, b_, n, n);
      }
    }
    return plan;
  }

  int64_t b_, w_, g_, r_, seed_;
  Loaded loaded_;
};

}  // namespace

VariantInfo bigbird_variant() {
  using K = ParamSpec::Kind;
  return {"bigbird",
          "BigBird block-sparse attention, ITC form (arXiv:2007.14062): blocks of `block` "
          "positions; a query block sees `window` sliding key blocks centred on it (odd), the "
          "first `global` blocks (global tokens; their rows see every key) and `random` blocks "
          "drawn per head and query block from the rest (seeded; export/import with "
          "--random-out/--random-in as DIR/random_blocks.npy, float32 [heads, query blocks, "
          "random], -1 = none). Causal: the `window` blocks ending at the query block, random "
          "blocks from earlier ones, diagonal block masked. HF BigBird makes the first and the "
          "last block global; here the first `global` ones are. Self-attention (Nq = Nk); n need "
          "not be a multiple of the block. O(n*(window+global+random)*block*D) time, O(n/block * "
          "(window+global+random)) plan.",
          {{"block", K::Int, "64", "block size b in positions (64 matches the kernel's rows)", 1},
           {"window", K::Int, "3", "sliding key blocks w per query block", 1},
           {"global", K::Int, "2", "global blocks g (the first g)", 0},
           {"random", K::Int, "3", "random key blocks r per query block", 0},
           {"seed", K::Int, "0", "seed of the random blocks", 0}},
          [](const Params& p) {
            return std::make_unique<BigBird>(p.get_int("block"), p.get_int("window"),
                                             p.get_int("global"), p.get_int("random"),
                                             p.get_int("seed"));
          }};
}

}  // namespace attn
