// `lsh`: Reformer's LSH self-attention (arXiv:2001.04451; docs/ALGORITHMS.md §LSH).
//
// Per head and hash round: bucket every row by angular LSH (argmax over [xR, −xR],
// arXiv:1509.02897), stable-sort positions by (bucket, position) with a counting sort, pad
// each round's sorted order to a multiple of the chunk length c, concatenate the rounds and
// cut the concatenation into chunks of c. Each chunk's queries attend the keys of the chunks
// J−before … J+after, cyclic over the whole concatenation (HF `_look_adjacent`, trax
// `look_adjacent`), through the shared online-softmax kernel. Rounds are combined by their
// log-sum-exp weights, streamed round by round into the output (a normalized mixture).
//
// Padding (n not a multiple of c): pad slots sit at the end of each round (HF's extra
// padding bucket) and are dropped when a window is gathered, so they are never keys and
// never computed as queries; results for real positions are what HF gets from padding with
// masked tokens.
//
// Causality (causal_mode=reformer, the default): --causal only hides keys j > i. Which past keys
// share query i's chunk depends on the sort, and the sort on every position's hash, so changing
// future rows can change which past keys a query sees: Reformer's own behaviour, not causal in
// the strict sense. causal_mode=strict: per round, query i attends to the at most c most
// recent keys j <= i in its own bucket (same-bucket positions are contiguous and in order in the
// stable sort), rounds combined by log-sum-exp as above; a bucket depends only on its own row,
// so row i of the output depends on rows <= i alone.
#include <omp.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <limits>

#include "attention/kernels/gemm.h"
#include "attention/kernels/online_softmax.h"
#include "attention/npy.h"
#include "attention/random.h"
#include "attention/registry.h"

namespace attn {
namespace {

using kernels::OnlineSoftmax;

// The paper's self-mask value (HF fp32 and trax): added to the logit of a query's own
// position, so a token attends to itself only when nothing else is visible.
constexpr float kSelfPenalty = -1e5f;
constexpr float kHidden = OnlineSoftmax::kHidden;
constexpr int64_t kMaxBuckets = int64_t(1) << 24;

// Bucket count and how rotation columns split into factors (docs/ALGORITHMS.md §LSH buckets).
struct Layout {
  int64_t buckets = 0;           // total buckets per round: product of factors
  std::vector<int64_t> factors;  // each even; bucket = a1 + b1·a2 + b1·b2·a3 + …
  int64_t width = 0;             // rotation columns: Σ factors / 2
  int64_t chunk = 0;             // c, or n when c > n
  int64_t padded = 0;            // n rounded up to a multiple of c
  int64_t chunks = 0;            // chunks per round: padded / c
};

struct Config {
  std::string buckets;  // "auto" (n/c), "hf", an even integer, or "AxB"
  std::string factorize;
  int64_t rounds = 4, chunk = 64, before = 1, after = 0;
  bool shared_qk = true, dedup = false;
  bool strict = false;  // causal_mode=strict (see the top of this file)
  uint64_t seed = 0;
};

int64_t parse_even(const std::string& text, const std::string& whole) {
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno || v < 2 || v % 2 || v > kMaxBuckets)
    throw UsageError("lsh: buckets=" + whole +
                     " is invalid; expected auto, hf, an even integer in [2, 2^24] or a product "
                     "of even factors such as 32x32");
  return v;
}

// Explicit factors from "b" or "b1xb2x…"; empty for the n-dependent rules.
std::vector<int64_t> explicit_factors(const std::string& text) {
  if (text == "auto" || text == "hf") return {};
  std::vector<int64_t> f;
  size_t start = 0;
  int64_t product = 1;
  while (true) {
    size_t x = text.find('x', start);
    f.push_back(parse_even(text.substr(start, x - start), text));
    product *= f.back();
    if (product > kMaxBuckets) parse_even("0", text);  // throws the usual message
    if (x == std::string::npos) break;
    start = x + 1;
  }
  return f;
}

// HF's factorization: two factors near sqrt(nb), the smaller first ([2^⌊p/2⌋, 2^(p−⌊p/2⌋)]
// for nb = 2^p); flat when nb has no split into two even factors.
std::vector<int64_t> split_two(int64_t nb) {
  for (int64_t b1 = int64_t(std::sqrt(double(nb))); b1 >= 2; --b1)
    if (b1 % 2 == 0 && nb % b1 == 0 && (nb / b1) % 2 == 0) return {b1, nb / b1};
  return {nb};
}

Layout make_layout(const Config& cfg, int64_t n) {
  Layout L;
  L.factors = explicit_factors(cfg.buckets);
  if (L.factors.size() <= 1) {  // a bucket count (given or by rule), not explicit factors
    int64_t nb;
    if (!L.factors.empty()) {
      nb = L.factors[0];
    } else if (cfg.buckets == "auto") {
      nb = 2 * std::max<int64_t>(1, n / (2 * cfg.chunk));  // lucidrains: n / bucket_size
    } else {
      // HF: largest power of two <= 2·floor(n/c) (at least 2).
      const int64_t two = 2 * (n / cfg.chunk);
      nb = 2;
      while (nb * 2 <= two) nb *= 2;
    }
    nb = std::min(nb, kMaxBuckets);
    // HF factorizes when nb > 2·max(floor(sqrt(max_pos / c)), c), max_pos = 4096 by default.
    const int64_t limit =
        2 * std::max<int64_t>(int64_t(std::sqrt(4096.0 / double(cfg.chunk))), cfg.chunk);
    L.factors = (cfg.factorize == "auto" && nb > limit) ? split_two(nb) : std::vector<int64_t>{nb};
  }
  L.buckets = 1;
  for (int64_t f : L.factors) L.buckets *= f, L.width += f / 2;
  // A chunk longer than the sequence holds the same slots as one of length n (one chunk per
  // round either way), so the shorter one is used and no buffer grows with c beyond n.
  L.chunk = std::min(cfg.chunk, n);
  L.padded = checked_add(n, L.chunk - 1, "lsh padded length") / L.chunk * L.chunk;
  L.chunks = L.padded / L.chunk;
  return L;
}

// Rotations [heads, rounds, D, width], shared by the batch (as HF).
struct Rotations {
  int64_t heads = 0, rounds = 0, dim = 0, width = 0;
  std::vector<float> data;
  const float* at(int64_t h, int64_t r) const {
    return data.data() + (h * rounds + r) * dim * width;
  }
  bool fits(int64_t H, int64_t R, int64_t D, int64_t W) const {
    return heads == H && rounds == R && dim == D && width == W;
  }
};

Rotations random_rotations(uint64_t seed, int64_t H, int64_t R, int64_t D, int64_t W) {
  Rotations rot{H, R, D, W, std::vector<float>(size_t(H * R * D * W))};
  for (int64_t h = 0; h < H; ++h)
    for (int64_t r = 0; r < R; ++r) {
      // Entry e of (head, round) is normal(e) of its own stream (rounds <= 64 < 2^8).
      const RandomStream stream(seed, RandomDomain::kLshRotations, uint64_t(h) << 8 | uint64_t(r));
      float* out = rot.data.data() + (h * R + r) * D * W;
      for (int64_t e = 0; e < D * W; ++e) out[e] = float(stream.normal(uint64_t(e)));
    }
  return rot;
}

// First index of the maximum of the concatenation [p, −p] (p of length `half`): the maximum
// is max_t |p_t|, and the copy in p comes before the negated one.
int64_t argmax_plus_minus(const float* p, int64_t half) {
#if defined(__AVX512F__)
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t t = 0; t < half; t += 16) {
    const __mmask16 m = half - t >= 16 ? __mmask16(0xffff) : __mmask16((1u << (half - t)) - 1);
    vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, p + t)));
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, vmax);
  const float best = *std::max_element(lanes, lanes + 16);
  for (float target : {best, -best})
    for (int64_t t = 0; t < half; t += 16) {
      const __mmask16 m = half - t >= 16 ? __mmask16(0xffff) : __mmask16((1u << (half - t)) - 1);
      const __mmask16 eq = _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, p + t),
                                                   _mm512_set1_ps(target), _CMP_EQ_OQ);
      if (eq) return (target == best ? 0 : half) + t + __builtin_ctz(eq);
    }
  return 0;  // NaN projections
#else
  int64_t best = 0;
  float best_v = p[0];
  for (int64_t t = 1; t < 2 * half; ++t) {
    const float val = t < half ? p[t] : -p[t - half];
    if (val > best_v) best_v = val, best = t;
  }
  return best;
#endif
}

// Angular LSH bucket per factor, combined in mixed radix: a1 + b1·a2 + b1·b2·a3 + …
int32_t bucket_of(const float* proj, const std::vector<int64_t>& factors) {
  int64_t bucket = 0, radix = 1, off = 0;
  for (int64_t f : factors) {
    bucket += radix * argmax_plus_minus(proj + off, f / 2);
    radix *= f, off += f / 2;
  }
  return int32_t(bucket);
}

// ATTN_LSH_PROFILE=1: per-forward breakdown on stderr, in wall time and in CPU time (the
// latter is robust to other processes sharing the cores).
struct Stamp {
  double wall, cpu;
};
double clock_seconds(clockid_t id) {
  timespec t;
  clock_gettime(id, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}
Stamp stamp() {
  return {
      std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(),
      clock_seconds(CLOCK_PROCESS_CPUTIME_ID)};
}
struct Phase {
  double wall = 0, cpu = 0;
  void add(const Stamp& a) {
    const Stamp b = stamp();
    wall += b.wall - a.wall, cpu += b.cpu - a.cpu;
  }
};
struct Profile {
  bool on = false;
  Phase norms, hashing, sorting, attention;
  double gather = 0, kernel = 0, combine = 0;  // thread CPU seconds, summed over threads
};

class Lsh final : public Attention {
 public:
  explicit Lsh(Config cfg) : cfg_(std::move(cfg)) { explicit_factors(cfg_.buckets); }

  std::string name() const override { return "lsh"; }

  ParamValues params() const override {
    return {{"buckets", cfg_.buckets},
            {"factorize", cfg_.factorize},
            {"rounds", std::to_string(cfg_.rounds)},
            {"chunk", std::to_string(cfg_.chunk)},
            {"before", std::to_string(cfg_.before)},
            {"after", std::to_string(cfg_.after)},
            {"shared_qk", cfg_.shared_qk ? "true" : "false"},
            {"dedup", cfg_.dedup ? "true" : "false"},
            {"seed", std::to_string(cfg_.seed)},
            {"causal_mode", cfg_.strict ? "strict" : "reformer"}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (s.nq != s.nk)
      throw UsageError("lsh is self-attention: it needs equal query and key lengths, got Nq=" +
                       std::to_string(s.nq) + " Nk=" + std::to_string(s.nk));
    const Layout L = make_layout(cfg_, s.nq);
    if (double(cfg_.rounds) * L.padded >= double(std::numeric_limits<int32_t>::max()))
      throw UsageError("lsh: rounds x padded length must stay below 2^31 slots");
    if (cfg_.strict && !s.causal)
      throw UsageError("lsh: causal_mode=strict is a causal mask; use it with --causal");
    if (cfg_.strict && cfg_.dedup)
      throw UsageError(
          "lsh: causal_mode=strict visits each key at most once per round and "
          "does not combine with dedup=true");
  }

  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override;

  double flops(const Shape& s) const override {
    const Layout L = make_layout(cfg_, s.nq);
    const double n = double(s.nq), r = double(cfg_.rounds), D = double(s.dim);
    // Executed = model pairs (docs/ALGORITHMS.md §FLOPs): r·n·c·(1+before+after) when c divides n;
    // with a short last chunk, the real rows of every window.
    const int64_t M = cfg_.rounds * L.chunks;
    if (cfg_.strict)  // at most c keys per query and round (fewer in small buckets)
      return (4.0 * D * r * n * double(L.chunk) +
              2.0 * r * n * D * L.width * (cfg_.shared_qk ? 1 : 2)) *
             s.heads_total();
    auto rows = [&](int64_t g) { return std::min(L.chunk, s.nq - (g % L.chunks) * L.chunk); };
    double pairs = 0;
    for (int64_t g = 0; g < M; ++g)
      for (int64_t w = -cfg_.before; w <= cfg_.after; ++w)
        pairs += double(rows(g)) * double(rows(((g + w) % M + M) % M));
    const double attend = 4.0 * D * pairs;
    const double hash = 2.0 * r * n * D * L.width * (cfg_.shared_qk ? 1 : 2);
    return (attend + hash) * s.heads_total();
  }

  double extra_bytes(const Shape& s) const override {
    const Layout L = make_layout(cfg_, s.nq);
    const double BH = double(s.heads_total()), n = double(s.nq), r = double(cfg_.rounds);
    const double sides = cfg_.shared_qk ? 1 : 2;
    // perm + inv per side and round (kept for visited_keys), bucket ids, running lse, norms.
    double bytes = 4.0 * BH * r * sides * (L.padded + 2 * n) + 4.0 * BH * n * 2;
    if (cfg_.strict) bytes += 4.0 * BH * r * sides * n;  // bucket ids kept with the orders
    bytes += 2 * 4.0 * s.heads * r * s.dim * L.width;    // rotations, and joined for the GEMM
    const double c = double(L.chunk), span = 1.0 + cfg_.before + cfg_.after;
    double per_thread = 4.0 * (L.buckets + 512.0 * r * L.width);  // counting sort, projections
    // Cached key chunks (k, v, raw q when shared, positions, per-round chunks), the query
    // block, outputs, lse, positions and the dedup table.
    per_thread += 4.0 * (span + 1) * c * ((cfg_.shared_qk ? 3 : 2) * s.dim + 1 + r);
    per_thread += 4.0 * c * (2.0 * s.dim + 2 + 2 * r * span);
    per_thread += 4.0 * kernels::kQueryRows * (2.0 * s.dim + kernels::kKeyTile + 3);
    return bytes + per_thread * omp_get_max_threads();
  }

  bool visited_keys(const Shape& s, int64_t b, int64_t h, int64_t i,
                    VisitedKeys& out) const override;

  std::string dense_counterpart() const override {
    return cfg_.shared_qk ? "dense attention over keys k̂ = q/‖q‖ with the self-mask (a token "
                            "attends to itself only when it sees no other key)"
                          : "";
  }
  // Shared-QK LSH approximates dense attention over k̂ = q/‖q‖ in which a token sees itself
  // only when it sees no other key (causal row 0, or n = 1).
  bool counterpart_problem(const Shape& s, const Tensor& q, const Tensor&, Tensor& keys,
                           ElementMask& mask) const override {
    if (!cfg_.shared_qk) return false;
    keys = Tensor(q.batch(), q.heads(), q.seq(), q.dim());
    const int64_t D = q.dim();
    for (int64_t r = 0; r < q.size() / D; ++r) {
      const float* x = q.data() + r * D;
      float ss = 0;
      for (int64_t d = 0; d < D; ++d) ss += x[d] * x[d];
      const float inv = ss > 0 ? 1.0f / std::sqrt(ss) : 0.0f;
      for (int64_t d = 0; d < D; ++d) keys.data()[r * D + d] = x[d] * inv;
    }
    mask = [n = s.nk, causal = s.causal](int64_t, int64_t, int64_t i, int64_t j) {
      return j != i || n == 1 || (causal && i == 0);
    };
    return true;
  }

  void save_random(const std::string& dir, const Shape& s) const override;
  void load_random(const std::string& dir, const Shape& s) override;

 private:
  // Sorted orders of one side (queries, or keys when shared_qk=false) of the last forward():
  // perm[(bh·r + round)·padded + slot] = position (−1 = pad), inv[(bh·r + round)·n + pos] = slot.
  struct Order {
    std::vector<int32_t> perm, inv;
    std::vector<int32_t> bucket;  // strict mode: bucket[(bh·r + round)·n + pos]
  };

  const Rotations& rotations_for(const Shape& s, const Layout& L);
  void hash_and_sort(const Shape& s, const Layout& L, const Rotations& rot, const Tensor& x,
                     Order& order, Profile& prof) const;
  void attend_rounds(const Shape& s, const Layout& L, const Tensor& q, const Tensor& k,
                     const Tensor& v, const std::vector<float>& inv_norm, const Order& qo,
                     const Order& ko, Tensor& out, Profile& prof) const;
  void attend_strict(const Shape& s, const Layout& L, const Tensor& q, const Tensor& k,
                     const Tensor& v, const std::vector<float>& inv_norm, const Order& qo,
                     const Order& ko, Tensor& out) const;

  // Strict mode: the key slots [lo, hi) of round `round` in the key order that query i of head
  // bh sees: its bucket's positions <= i, the last c of them.
  void strict_window(const Layout& L, int64_t n, const Order& qo, const Order& ko, int64_t bh,
                     int64_t round, int64_t i, int64_t& lo, int64_t& hi) const {
    const int64_t t = bh * cfg_.rounds + round;
    const int32_t* perm = ko.perm.data() + t * L.padded;
    const int32_t* kb = ko.bucket.data() + t * n;
    const int32_t bq = qo.bucket[size_t(t * n + i)];
    // Slots [0, n) are sorted by (bucket, position): the first slot after (bq, i).
    int64_t a = 0, b = n;
    while (a < b) {
      const int64_t m = (a + b) / 2;
      const int32_t p = perm[m];
      if (kb[p] < bq || (kb[p] == bq && p <= i))
        a = m + 1;
      else
        b = m;
    }
    hi = a, lo = std::max<int64_t>(0, hi - L.chunk);
    while (lo < hi && kb[perm[lo]] != bq) ++lo;
  }

  // Global chunk g of a head's concatenation -> its real slots' positions (pads dropped).
  int64_t chunk_positions(const Layout& L, int64_t n, const int32_t* perm_head, int64_t g,
                          int32_t* pos) const {
    const int64_t round = g / L.chunks, j = g % L.chunks;
    const int32_t* p = perm_head + round * L.padded + j * L.chunk;
    const int64_t real = std::min<int64_t>(L.chunk, n - j * L.chunk);
    std::copy(p, p + real, pos);
    return real;
  }

  Config cfg_;
  Rotations rot_;
  bool loaded_ = false;
  // State of the last forward(), for visited_keys().
  Shape last_;
  Layout last_layout_;
  Order q_order_, k_order_;
};

const Rotations& Lsh::rotations_for(const Shape& s, const Layout& L) {
  if (rot_.fits(s.heads, cfg_.rounds, s.dim, L.width)) return rot_;
  if (loaded_)
    throw UsageError("lsh: the imported rotations are [" + std::to_string(rot_.heads) + "," +
                     std::to_string(rot_.rounds) + "," + std::to_string(rot_.dim) + "," +
                     std::to_string(rot_.width) + "] but this problem needs [" +
                     std::to_string(s.heads) + "," + std::to_string(cfg_.rounds) + "," +
                     std::to_string(s.dim) + "," + std::to_string(L.width) + "]");
  rot_ = random_rotations(cfg_.seed, s.heads, cfg_.rounds, s.dim, L.width);
  return rot_;
}

void Lsh::hash_and_sort(const Shape& s, const Layout& L, const Rotations& rot, const Tensor& x,
                        Order& order, Profile& prof) const {
  const int64_t n = s.nq, D = s.dim, R = cfg_.rounds, W = L.width;
  const int64_t tasks = s.heads_total() * R;
  std::vector<int32_t> buckets(size_t(tasks * n));
  order.perm.assign(size_t(tasks * L.padded), -1);
  order.inv.resize(size_t(tasks * n));

  Stamp t0 = stamp();
  // All rounds of a head in one GEMM, x · [R_0 | R_1 | …] of width rounds·W, so each row is
  // read once. Inside the parallel region oneDNN runs single-threaded, so each block's
  // projections are the same whatever the thread count.
  const int64_t RW = R * W;
  std::vector<float> joined(size_t(s.heads * D * RW));
  for (int64_t h = 0; h < s.heads; ++h)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t d = 0; d < D; ++d)
        std::copy_n(rot.at(h, r) + d * W, W, joined.data() + (h * D + d) * RW + r * W);
  constexpr int64_t kRows = 512;  // rows projected per GEMM
  const int64_t blocks = (n + kRows - 1) / kRows;
#pragma omp parallel
  {
    std::vector<float> proj(size_t(kRows * RW));
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < s.heads_total() * blocks; ++t) {
      const int64_t bh = t / blocks, r0 = (t % blocks) * kRows, rows = std::min(kRows, n - r0);
      const float* xh = x.head(bh / s.heads, bh % s.heads);
      kernels::sgemm(false, false, rows, RW, D, 1.0f, xh + r0 * D, D,
                     joined.data() + (bh % s.heads) * D * RW, RW, 0.0f, proj.data(), RW);
      for (int64_t r = 0; r < R; ++r) {
        int32_t* bk = buckets.data() + (bh * R + r) * n + r0;
        for (int64_t i = 0; i < rows; ++i)
          bk[i] = bucket_of(proj.data() + i * RW + r * W, L.factors);
      }
    }
  }
  prof.hashing.add(t0);

  // Counting sort per round: stable, so ties keep increasing positions.
  t0 = stamp();
#pragma omp parallel
  {
    std::vector<int32_t> start(size_t(L.buckets + 1));
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int32_t* bk = buckets.data() + t * n;
      int32_t* perm = order.perm.data() + t * L.padded;
      int32_t* inv = order.inv.data() + t * n;
      std::fill(start.begin(), start.end(), 0);
      for (int64_t i = 0; i < n; ++i) ++start[bk[i] + 1];
      for (int64_t b = 0; b < L.buckets; ++b) start[b + 1] += start[b];
      for (int64_t i = 0; i < n; ++i) {
        const int32_t slot = start[bk[i]]++;
        perm[slot] = int32_t(i), inv[i] = slot;
      }
    }
  }
  prof.sorting.add(t0);
  if (cfg_.strict) order.bucket = std::move(buckets);
}

void Lsh::forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  static const bool profile = std::getenv("ATTN_LSH_PROFILE") != nullptr;
  const Stamp t_start = stamp();
  const Layout L = make_layout(cfg_, s.nq);
  const Rotations& rot = rotations_for(s, L);
  const int64_t n = s.nq, D = s.dim;

  Profile prof;
  prof.on = profile;
  std::vector<float> inv_norm;
  if (cfg_.shared_qk) {
    const Stamp t0 = stamp();
    inv_norm.resize(size_t(s.heads_total() * n));
    const float* x = q.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < s.heads_total() * n; ++i) {
      float ss = 0;
      for (int64_t d = 0; d < D; ++d) ss += x[i * D + d] * x[i * D + d];
      inv_norm[i] = ss > 0 ? 1.0f / std::sqrt(ss) : 0.0f;  // a zero query gives a zero key
    }
    prof.norms.add(t0);
  }

  Order qo, ko;
  hash_and_sort(s, L, rot, q, qo, prof);
  if (!cfg_.shared_qk) hash_and_sort(s, L, rot, k, ko, prof);
  const Order& keys = cfg_.shared_qk ? qo : ko;

  const Stamp t0 = stamp();
  if (cfg_.strict)
    attend_strict(s, L, q, k, v, inv_norm, qo, keys, out);
  else
    attend_rounds(s, L, q, k, v, inv_norm, qo, keys, out, prof);
  prof.attention.add(t0);

  last_ = s, last_layout_ = L;
  q_order_ = std::move(qo), k_order_ = std::move(ko);
  if (profile) {
    Phase total;
    total.add(t_start);
    const double hs_wall = prof.norms.wall + prof.hashing.wall + prof.sorting.wall;
    const double hs_cpu = prof.norms.cpu + prof.hashing.cpu + prof.sorting.cpu;
    std::fprintf(stderr,
                 "lsh profile n=%lld buckets=%lld (%zu factor%s, %lld rotation columns) | wall ms: "
                 "total %.1f = norms %.1f + hashing %.1f + sorting %.1f + attention %.1f | CPU ms: "
                 "total %.1f = norms %.1f + hashing %.1f + sorting %.1f + attention %.1f (gather "
                 "%.1f, kernel %.1f, combine %.1f) | norms+hashing+sorting: %.1f%% of wall, %.1f%% "
                 "of CPU\n",
                 (long long)n, (long long)L.buckets, L.factors.size(),
                 L.factors.size() > 1 ? "s" : "", (long long)L.width, total.wall * 1e3,
                 prof.norms.wall * 1e3, prof.hashing.wall * 1e3, prof.sorting.wall * 1e3,
                 prof.attention.wall * 1e3, total.cpu * 1e3, prof.norms.cpu * 1e3,
                 prof.hashing.cpu * 1e3, prof.sorting.cpu * 1e3, prof.attention.cpu * 1e3,
                 prof.gather * 1e3, prof.kernel * 1e3, prof.combine * 1e3,
                 100.0 * hs_wall / total.wall, 100.0 * hs_cpu / total.cpu);
  }
}

// One gathered key chunk in a thread's cache: original positions, keys (k̂ = q/‖q‖ when
// shared), values, the raw query rows (shared: the chunk's queries are its keys' positions)
// and, for dedup, each key's chunk in every round.
struct KeyChunk {
  KeyChunk(int64_t c, int64_t D, bool shared, int64_t rounds)
      : k(size_t(c * D)),
        v(size_t(c * D)),
        q(shared ? size_t(c * D) : 0),
        pos(size_t(c)),
        chunks(size_t(c * rounds)) {}
  int64_t tag = -1, count = 0, used = 0;
  FloatBuffer k, v, q;
  std::vector<int32_t> pos, chunks;
};

// Per-thread state: a cache of span + 1 key chunks, so that consecutive chunks reuse the
// neighbours they share (chunk J−1 of chunk J was chunk J of the previous task), plus the
// query block, per-slot outputs and lse, and (dedup) each query's window chunks in every round.
struct ChunkScratch {
  ChunkScratch(int64_t c, int64_t span, int64_t D, bool shared, int64_t rounds)
      : qw(size_t(c * D)),
        ow(size_t(c * D)),
        lse(size_t(c)),
        qpos(size_t(c)),
        qchunks(size_t(c * rounds * span)),
        qrounds(size_t(c * rounds * span)),
        window(size_t(span)),
        missing(size_t(span)) {
    for (int64_t i = 0; i <= span; ++i) cache.emplace_back(c, D, shared, rounds);
  }
  FloatBuffer qw, ow;
  std::vector<float> lse;
  std::vector<int32_t> qpos, qchunks, qrounds;
  std::vector<KeyChunk> cache;
  std::vector<KeyChunk*> window;
  std::vector<int64_t> missing;  // window entries not in the cache
  int64_t clock = 0;
};

void Lsh::attend_rounds(const Shape& s, const Layout& L, const Tensor& q, const Tensor& k,
                        const Tensor& v, const std::vector<float>& inv_norm, const Order& qo,
                        const Order& ko, Tensor& out, Profile& prof) const {
  const int64_t n = s.nq, D = s.dim, R = cfg_.rounds, c = L.chunk;
  const int64_t span = 1 + cfg_.before + cfg_.after;
  const int64_t total_chunks = R * L.chunks;  // of one head's concatenation
  const float scale = s.softmax_scale();
  const bool shared = cfg_.shared_qk, causal = s.causal, dedup = cfg_.dedup;
  const int64_t dedup_len = R * span;
  std::vector<float> log_count(size_t(dedup_len + 1));
  for (int64_t m = 1; m <= dedup_len; ++m) log_count[size_t(m)] = std::log(float(m));
  std::vector<float> lse_run(size_t(s.heads_total() * n));
  auto wrap = [&](int64_t g) { return ((g % total_chunks) + total_chunks) % total_chunks; };
  // Global chunk of position `pos` in round `round` of the side `o`.
  auto chunk_of = [&](const Order& o, int64_t bh, int64_t round, int64_t pos) {
    return int32_t((round * L.padded + o.inv[size_t((bh * R + round) * n + pos)]) / c);
  };

  // Fills `kc` with key chunk g of head bh (pads dropped).
  auto gather_keys = [&](int64_t bh, int64_t g, KeyChunk& kc) {
    const int64_t b = bh / s.heads, h = bh % s.heads;
    kc.count = chunk_positions(L, n, ko.perm.data() + bh * R * L.padded, g, kc.pos.data());
    const float* vh = v.head(b, h);
    if (shared) {
      const float* qh = q.head(b, h);
      const float* norms = inv_norm.data() + bh * n;
      for (int64_t j = 0; j < kc.count; ++j) {
        const int64_t p = kc.pos[j];
        std::copy_n(qh + p * D, D, kc.q.data() + j * D);
        for (int64_t d = 0; d < D; ++d) kc.k[j * D + d] = qh[p * D + d] * norms[p];
      }
    } else {
      const float* kh = k.head(b, h);
      for (int64_t j = 0; j < kc.count; ++j)
        std::copy_n(kh + kc.pos[j] * D, D, kc.k.data() + j * D);
    }
    for (int64_t j = 0; j < kc.count; ++j) std::copy_n(vh + kc.pos[j] * D, D, kc.v.data() + j * D);
    if (dedup)
      for (int64_t j = 0; j < kc.count; ++j)
        for (int64_t rr = 0; rr < R; ++rr) kc.chunks[j * R + rr] = chunk_of(ko, bh, rr, kc.pos[j]);
  };

  // Points sc.window at the key chunks g−before … g+after, gathering the ones not cached.
  auto load_window = [&](ChunkScratch& sc, int64_t bh, int64_t g) {
    const int64_t clock = ++sc.clock;
    std::vector<int64_t>& missing = sc.missing;
    missing.clear();
    for (int64_t w = 0; w < span; ++w) {
      const int64_t tag = bh * total_chunks + wrap(g - cfg_.before + w);
      sc.window[size_t(w)] = nullptr;
      for (auto& kc : sc.cache)
        if (kc.tag == tag) sc.window[size_t(w)] = &kc, kc.used = clock;
      if (!sc.window[size_t(w)]) missing.push_back(w);
    }
    for (int64_t w : missing) {
      const int64_t tag = bh * total_chunks + wrap(g - cfg_.before + w);
      KeyChunk* hit = nullptr;  // an earlier miss of the same chunk (it repeats in the window)
      for (auto& kc : sc.cache)
        if (kc.tag == tag) hit = &kc;
      if (!hit) {
        hit = &sc.cache[0];
        for (auto& kc : sc.cache)
          if (kc.used < hit->used) hit = &kc;  // least recently used, never one in this window
        gather_keys(bh, wrap(g - cfg_.before + w), *hit);
        hit->tag = tag;
      }
      hit->used = clock;
      sc.window[size_t(w)] = hit;
    }
  };

  // Computes chunk g (of round g / chunks) of head bh and folds it into the output.
  auto process_chunk = [&](ChunkScratch& sc, OnlineSoftmax& sm, double* my, int64_t bh, int64_t g) {
    const double t0 = prof.on ? clock_seconds(CLOCK_THREAD_CPUTIME_ID) : 0;
    const int64_t b = bh / s.heads, h = bh % s.heads, round = g / L.chunks;
    load_window(sc, bh, g);
    const int64_t rows =
        chunk_positions(L, n, qo.perm.data() + bh * R * L.padded, g, sc.qpos.data());
    const float* qrows = sc.window[size_t(cfg_.before)]->q.data();
    if (!shared) {
      const float* qh = q.head(b, h);
      for (int64_t i = 0; i < rows; ++i) std::copy_n(qh + sc.qpos[i] * D, D, sc.qw.data() + i * D);
      qrows = sc.qw.data();
    }
    if (dedup)  // every chunk each query's windows cover, over all rounds
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t rr = 0; rr < R; ++rr)
          for (int64_t w = 0; w < span; ++w) {
            const int64_t e = i * dedup_len + rr * span + w;
            sc.qchunks[size_t(e)] =
                int32_t(wrap(chunk_of(qo, bh, rr, sc.qpos[i]) - cfg_.before + w));
            sc.qrounds[size_t(e)] = sc.qchunks[size_t(e)] / int32_t(L.chunks);
          }
    const double t1 = prof.on ? clock_seconds(CLOCK_THREAD_CPUTIME_ID) : 0;
    my[0] += t1 - t0;

    for (int64_t r0 = 0; r0 < rows; r0 += kernels::kQueryRows) {
      const int64_t nr = std::min(kernels::kQueryRows, rows - r0);
      const int32_t* qp = sc.qpos.data() + r0;
      const int32_t* qc = sc.qchunks.data() + r0 * dedup_len;
      const int32_t* qr = sc.qrounds.data() + r0 * dedup_len;
      sm.begin(qrows + r0 * D, D, nr, scale);
      // One kernel call per key chunk, whether or not it came from the cache, so the
      // arithmetic never depends on the schedule.
      for (const KeyChunk* kc : sc.window) {
        const int32_t* kp = kc->pos.data();
        const int32_t* kch = kc->chunks.data();
        // Shared, non-causal: the own chunk hides only its diagonal, and another chunk
        // of the same round holds no query's position (a position occurs once per
        // round), so it needs no mask at all.
        const int64_t kg = kc->tag % total_chunks;
        const bool same_round = kg / L.chunks == g / L.chunks;
        if (!causal && !dedup && (!shared || (same_round && kg != g))) {
          sm.attend(kc->k.data(), kc->v.data(), D, kc->count);
        } else if (!causal && !dedup && kg == g) {
          sm.attend_masked(kc->k.data(), kc->v.data(), D, kc->count,
                           [&](int64_t r, int64_t j) { return r0 + r == j ? kSelfPenalty : 0.0f; });
        } else if (!dedup) {
          sm.attend_masked(kc->k.data(), kc->v.data(), D, kc->count, [&](int64_t r, int64_t j) {
            if (causal && kp[j] > qp[r]) return kHidden;
            return shared && kp[j] == qp[r] ? kSelfPenalty : 0.0f;
          });
        } else {
          sm.attend_masked(kc->k.data(), kc->v.data(), D, kc->count, [&](int64_t r, int64_t j) {
            if (causal && kp[j] > qp[r]) return kHidden;
            // Times key j is a candidate of query r over all rounds (>= 1).
            int meets = 0;
            for (int64_t e = r * dedup_len; e < (r + 1) * dedup_len; ++e)
              meets += kch[j * R + qr[e]] == qc[e];
            const float self = shared && kp[j] == qp[r] ? kSelfPenalty : 0.0f;
            return self - log_count[size_t(meets)];
          });
        }
      }
      sm.finish(sc.ow.data() + r0 * D, D, sc.lse.data() + r0);
    }
    const double t2 = prof.on ? clock_seconds(CLOCK_THREAD_CPUTIME_ID) : 0;
    my[1] += t2 - t1;

    // Streamed log-sum-exp combination: out stays the normalized mixture of the rounds
    // so far; each position occurs once per round, so threads never share a row.
    float* oh = out.head(b, h);
    float* lr = lse_run.data() + bh * n;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t p = sc.qpos[i];
      const float* o = sc.ow.data() + i * D;
      float* dst = oh + p * D;
      const float a = lr[p], l = sc.lse[i];
      if (round == 0 || (a == kHidden && l != kHidden)) {
        std::copy_n(o, D, dst), lr[p] = l;
      } else if (l != kHidden) {
        const float m = std::max(a, l), wa = std::exp(a - m), wl = std::exp(l - m);
        const float inv = 1.0f / (wa + wl);
        for (int64_t d = 0; d < D; ++d) dst[d] = (wa * dst[d] + wl * o[d]) * inv;
        lr[p] = m + std::log(wa + wl);
      }
    }
    if (prof.on) my[2] += clock_seconds(CLOCK_THREAD_CPUTIME_ID) - t2;
  };

  const int threads = omp_get_max_threads();
  std::vector<double> parts(size_t(3 * threads), 0.0);
  // With enough heads, a task is a whole head: no barrier between rounds, and its chunks run in
  // order through the cache. Otherwise the chunks of one round run in parallel, with a barrier
  // per round. Either way every chunk is computed alike and every position's rounds are
  // combined in round order, so the output has the same bits for any thread count.
  const bool by_head = s.heads_total() >= 2 * threads;
#pragma omp parallel
  {
    OnlineSoftmax sm(D);
    ChunkScratch sc(c, span, D, shared, R);
    double* my = parts.data() + 3 * omp_get_thread_num();
    if (by_head) {
#pragma omp for schedule(dynamic, 1)
      for (int64_t bh = 0; bh < s.heads_total(); ++bh)
        for (int64_t g = 0; g < total_chunks; ++g) process_chunk(sc, sm, my, bh, g);
    } else {
      for (int64_t round = 0; round < R; ++round) {
        // Blocks of consecutive chunks per thread, so neighbours come from the cache.
#pragma omp for schedule(dynamic, 16)
        for (int64_t t = 0; t < s.heads_total() * L.chunks; ++t)
          process_chunk(sc, sm, my, t / L.chunks, round * L.chunks + t % L.chunks);
      }
    }
  }
  for (size_t th = 0; th < parts.size(); th += 3)
    prof.gather += parts[th], prof.kernel += parts[th + 1], prof.combine += parts[th + 2];
}

// Strict mode, one query row at a time (each row's arithmetic is the same for any thread
// count): per round a softmax over the row's window, then the streamed log-sum-exp mixture of
// attend_rounds, in round order.
void Lsh::attend_strict(const Shape& s, const Layout& L, const Tensor& q, const Tensor& k,
                        const Tensor& v, const std::vector<float>& inv_norm, const Order& qo,
                        const Order& ko, Tensor& out) const {
  const int64_t n = s.nq, D = s.dim, R = cfg_.rounds;
  const float scale = s.softmax_scale();
  const bool shared = cfg_.shared_qk;
#pragma omp parallel
  {
    std::vector<float> logit(static_cast<size_t>(L.chunk)), acc(static_cast<size_t>(D));
#pragma omp for schedule(dynamic, 64)
    for (int64_t t = 0; t < s.heads_total() * n; ++t) {
      const int64_t bh = t / n, i = t % n, b = bh / s.heads, h = bh % s.heads;
      const float* qi = q.head(b, h) + i * D;
      const float* keys = shared ? q.head(b, h) : k.head(b, h);
      const float* norms = shared ? inv_norm.data() + bh * n : nullptr;
      const float* vh = v.head(b, h);
      float* dst = out.head(b, h) + i * D;
      float run = kHidden;  // log-sum-exp of the rounds so far
      for (int64_t round = 0; round < R; ++round) {
        int64_t lo = 0, hi = 0;
        strict_window(L, n, qo, ko, bh, round, i, lo, hi);
        const int32_t* perm = ko.perm.data() + (bh * R + round) * L.padded;
        float m = kHidden;
        for (int64_t x = lo; x < hi; ++x) {
          const int64_t j = perm[x];
          float dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qi[d] * keys[j * D + d];
          float l = scale * (shared ? dot * norms[j] : dot);
          if (shared && j == i) l += kSelfPenalty;
          logit[size_t(x - lo)] = l, m = std::max(m, l);
        }
        if (hi == lo) continue;  // separate QK: no earlier key in this bucket
        std::fill(acc.begin(), acc.end(), 0.0f);
        float sum = 0;
        for (int64_t x = lo; x < hi; ++x) {
          const float w = std::exp(logit[size_t(x - lo)] - m);
          const float* vj = vh + perm[x] * D;
          for (int64_t d = 0; d < D; ++d) acc[size_t(d)] += w * vj[d];
          sum += w;
        }
        const float l = m + std::log(sum), inv = 1.0f / sum;
        if (run == kHidden) {
          for (int64_t d = 0; d < D; ++d) dst[d] = acc[size_t(d)] * inv;
          run = l;
        } else {
          const float mm = std::max(run, l), wa = std::exp(run - mm), wl = std::exp(l - mm);
          const float norm = 1.0f / (wa + wl);
          for (int64_t d = 0; d < D; ++d) dst[d] = (wa * dst[d] + wl * acc[size_t(d)] * inv) * norm;
          run = mm + std::log(wa + wl);
        }
      }
      if (run == kHidden) std::fill(dst, dst + D, 0.0f);  // sees no key in any round
    }
  }
}

bool Lsh::visited_keys(const Shape& s, int64_t b, int64_t h, int64_t i, VisitedKeys& out) const {
  if (q_order_.perm.empty() || s.nq != last_.nq || s.heads != last_.heads || s.batch != last_.batch)
    return false;
  const Layout& L = last_layout_;
  const int64_t n = s.nq, R = cfg_.rounds, bh = b * s.heads + h;
  const int64_t total_chunks = R * L.chunks;
  const Order& ko = cfg_.shared_qk ? q_order_ : k_order_;
  const int32_t* kperm = ko.perm.data() + bh * R * L.padded;
  std::vector<int32_t> pos(size_t(L.chunk));
  out.assign(size_t(R), {});
  if (cfg_.strict) {
    for (int64_t round = 0; round < R; ++round) {
      int64_t lo = 0, hi = 0;
      strict_window(L, n, q_order_, ko, bh, round, i, lo, hi);
      const int32_t* perm = kperm + round * L.padded;
      out[size_t(round)].assign(perm + lo, perm + hi);
    }
    return true;
  }
  for (int64_t round = 0; round < R; ++round) {
    const int64_t slot = q_order_.inv[size_t((bh * R + round) * n + i)];
    const int64_t g = (round * L.padded + slot) / L.chunk;
    auto& keys = out[size_t(round)];
    for (int64_t off = -cfg_.before; off <= cfg_.after; ++off) {
      const int64_t gg = ((g + off) % total_chunks + total_chunks) % total_chunks;
      const int64_t m = chunk_positions(L, n, kperm, gg, pos.data());
      for (int64_t j = 0; j < m; ++j)
        if (!last_.causal || pos[j] <= i) keys.push_back(pos[j]);
    }
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  }
  return true;
}

void Lsh::save_random(const std::string& dir, const Shape& s) const {
  const Layout L = make_layout(cfg_, s.nq);
  const Rotations rot = rot_.fits(s.heads, cfg_.rounds, s.dim, L.width)
                            ? rot_
                            : random_rotations(cfg_.seed, s.heads, cfg_.rounds, s.dim, L.width);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw RuntimeError("lsh: cannot create directory " + dir + ": " + ec.message());
  write_npy(dir + "/rotations.npy", {rot.heads, rot.rounds, rot.dim, rot.width}, rot.data.data());
}

void Lsh::load_random(const std::string& dir, const Shape& s) {
  const std::string path = dir + "/rotations.npy";
  NpyArray a = read_npy(path);
  const Layout L = make_layout(cfg_, s.nq);
  const std::vector<int64_t> want = {s.heads, cfg_.rounds, s.dim, L.width};
  if (a.shape != want)
    throw RuntimeError(path + ": expected rotations of shape [heads, rounds, D, Σ buckets/2] = [" +
                       std::to_string(want[0]) + "," + std::to_string(want[1]) + "," +
                       std::to_string(want[2]) + "," + std::to_string(want[3]) + "]");
  rot_ = Rotations{want[0], want[1], want[2], want[3], std::move(a.data)};
  loaded_ = true;
}

}  // namespace

VariantInfo lsh_variant() {
  using K = ParamSpec::Kind;
  return {
      "lsh",
      "Reformer LSH self-attention (arXiv:2001.04451): per round, angular LSH buckets "
      "(argmax over [xR, -xR], R Gaussian), stable sort by (round, bucket, position), chunks of c "
      "attending themselves and `before`/`after` neighbour chunks (cyclic over the concatenated "
      "rounds), rounds combined by log-sum-exp weights. shared_qk=true: keys are q/‖q‖, the "
      "given k is ignored, self-mask -1e5; dense counterpart = dense attention over k̂ with that "
      "self-mask. shared_qk=false: q and k hashed and sorted separately, query chunk i attends "
      "key chunks i-before..i+after. Needs Nq = Nk. n not a multiple of c: each round is padded "
      "with masked slots. Rotations: DIR/rotations.npy, float32 [heads, rounds, D, Σ b_k/2] "
      "(columns of factor k follow those of factor k-1), shared by the batch. Cost per head: "
      "4·D·r·n·c·(1+before+after) attention (the real rows of every window when c does not "
      "divide n) + 2·r·n·D·Σb_k/2 hashing FLOPs (both counted), O(r·n) "
      "counting sort; extra memory O(r·n) indices + per-thread chunk buffers. Causality: with "
      "causal_mode=reformer (the default, Reformer's own) --causal only hides keys j > i, but "
      "future positions' hashes change the sort and so which past keys share a chunk: changing "
      "the last rows changes earlier output rows. causal_mode=strict is strictly causal (row i "
      "depends on rows <= i only): per round the at most c most recent same-bucket keys j <= i, "
      "scalar code, cost <= 4·D·r·n·c.",
      {{"buckets", K::Text, "auto",
        "buckets per round: auto = 2·floor(n/2c) (lucidrains' n/c rule), hf = largest power of "
        "two <= 2·floor(n/c) (Hugging Face's rule), an even integer, or explicit even factors "
        "AxB"},
       {"factorize",
        K::Choice,
        "auto",
        "auto: split the bucket count of the auto/hf/integer forms into two even factors near "
        "sqrt (hashing cost Σb_k/2 instead of b/2) when b > 2·max(floor(sqrt(4096/c)), c), Hugging "
        "Face's rule at its default max_position_embeddings; no: never",
        -1e300,
        1e300,
        {"auto", "no"}},
       {"rounds", K::Int, "4", "hash rounds r (HF/trax default 1, lucidrains 8)", 1, 64},
       {"chunk", K::Int, "64", "chunk length c (HF 64, trax 128)", 1, 1 << 20},
       {"before", K::Int, "1", "neighbour chunks attended before (cyclic)", 0, 64},
       {"after", K::Int, "0", "neighbour chunks attended after (cyclic)", 0, 64},
       {"shared_qk", K::Bool, "true", "keys = unit-normalized queries, with the self-mask"},
       {"dedup", K::Bool, "false",
        "lower each logit by log(number of times the pair meets over all rounds)"},
       {"seed", K::Int, "0", "seed of the random rotations", 0, 9e15},
       {"causal_mode",
        K::Choice,
        "reformer",
        "with --causal: reformer = Reformer's mask j <= i inside the sorted chunks (future rows "
        "change the sort, so they can change which past keys a query sees); strict = per round, "
        "the at most c most recent keys j <= i in the query's bucket (before/after unused), so "
        "row i depends on rows <= i only",
        -1e300,
        1e300,
        {"reformer", "strict"}}},
      [](const Params& p) {
        Config c;
        c.buckets = p.get("buckets");
        c.factorize = p.get("factorize");
        c.rounds = p.get_int("rounds");
        c.chunk = p.get_int("chunk");
        c.before = p.get_int("before");
        c.after = p.get_int("after");
        c.shared_qk = p.get_bool("shared_qk");
        c.dedup = p.get_bool("dedup");
        c.seed = uint64_t(p.get_int("seed"));
        c.strict = p.get("causal_mode") == "strict";
        return std::make_unique<Lsh>(std::move(c));
      }};
}

}  // namespace attn
