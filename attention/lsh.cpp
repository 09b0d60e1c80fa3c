// `lsh`: Reformer's LSH self-attention (arXiv:2001.04451; ALGORITHMS.md §2).
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
#include <omp.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>

#include "attention/kernels/gemm.h"
#include "attention/kernels/online_softmax.h"
#include "attention/npy.h"
#include "attention/registry.h"

namespace attn {
namespace {

using kernels::OnlineSoftmax;

// The paper's self-mask value (HF fp32 and trax): added to the logit of a query's own
// position, so a token attends to itself only when nothing else is visible.
constexpr float kSelfPenalty = -1e5f;
constexpr float kHidden = OnlineSoftmax::kHidden;
constexpr int64_t kMaxBuckets = int64_t(1) << 24;

// Bucket count and how the rotation columns are split into factors (ALGORITHMS.md §2.3).
struct Layout {
  int64_t buckets = 0;           // total buckets per round: product of factors
  std::vector<int64_t> factors;  // each even; bucket = a1 + b1·a2 + b1·b2·a3 + …
  int64_t width = 0;             // rotation columns: Σ factors / 2
  int64_t padded = 0;            // n rounded up to a multiple of c
  int64_t chunks = 0;            // chunks per round: padded / c
};

struct Config {
  std::string buckets;  // "auto" (n/c), "hf", an even integer, or "AxB"
  std::string factorize;
  int64_t rounds = 4, chunk = 64, before = 1, after = 0;
  bool shared_qk = true, dedup = false;
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
  if (L.factors.empty()) {
    int64_t nb;
    if (cfg.buckets == "auto") {
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
  L.padded = (n + cfg.chunk - 1) / cfg.chunk * cfg.chunk;
  L.chunks = L.padded / cfg.chunk;
  return L;
}

// Counter-based N(0,1): entry e of (head, round) depends only on (seed, head, round, e).
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
float gaussian(uint64_t stream, uint64_t e) {
  const double u1 = (double(mix(stream ^ mix(2 * e)) >> 11) + 0.5) * 0x1p-53;
  const double u2 = (double(mix(stream ^ mix(2 * e + 1)) >> 11) + 0.5) * 0x1p-53;
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
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
      const uint64_t stream = mix(mix(seed) ^ mix(uint64_t(h) << 32 | uint64_t(r)));
      float* out = rot.data.data() + (h * R + r) * D * W;
      for (int64_t e = 0; e < D * W; ++e) out[e] = gaussian(stream, uint64_t(e));
    }
  return rot;
}

// argmax over [p, −p] of each factor's column slice, first maximum; mixed-radix bucket.
int32_t bucket_of(const float* proj, const std::vector<int64_t>& factors) {
  int64_t bucket = 0, radix = 1, off = 0;
  for (int64_t f : factors) {
    const int64_t half = f / 2;
    int64_t best = 0;
    float best_v = proj[off];
    for (int64_t t = 1; t < f; ++t) {
      const float val = t < half ? proj[off + t] : -proj[off + t - half];
      if (val > best_v) best_v = val, best = t;
    }
    bucket += radix * best, radix *= f, off += half;
  }
  return int32_t(bucket);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

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
            {"seed", std::to_string(cfg_.seed)}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (s.nq != s.nk)
      throw UsageError("lsh is self-attention: it needs equal query and key lengths, got Nq=" +
                       std::to_string(s.nq) + " Nk=" + std::to_string(s.nk));
    const Layout L = make_layout(cfg_, s.nq);
    if (double(cfg_.rounds) * L.padded >= double(std::numeric_limits<int32_t>::max()))
      throw UsageError("lsh: rounds x padded length must stay below 2^31 slots");
  }

  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override;

  double flops(const Shape& s) const override {
    const Layout L = make_layout(cfg_, s.nq);
    const double n = double(s.nq), r = double(cfg_.rounds), D = double(s.dim);
    const double attend = 4.0 * D * r * n * cfg_.chunk * (1 + cfg_.before + cfg_.after);
    const double hash = 2.0 * r * n * D * L.width * (cfg_.shared_qk ? 1 : 2);
    return (attend + hash) * s.heads_total();
  }

  double extra_bytes(const Shape& s) const override {
    const Layout L = make_layout(cfg_, s.nq);
    const double BH = double(s.heads_total()), n = double(s.nq), r = double(cfg_.rounds);
    const double sides = cfg_.shared_qk ? 1 : 2;
    // perm + inv per side and round (kept for visited_keys), bucket ids, running lse, norms.
    double bytes = 4.0 * BH * r * sides * (L.padded + 2 * n) + 4.0 * BH * n * 2;
    bytes += 4.0 * s.heads * r * s.dim * L.width;  // rotations
    const double window = double(cfg_.chunk) * (1 + cfg_.before + cfg_.after);
    double per_thread = 4.0 * (L.buckets + 1024.0 * L.width);  // counting sort, projections
    per_thread += 4.0 * (2 * cfg_.chunk * (s.dim + 2) + 2 * window * s.dim + window);
    if (cfg_.dedup) per_thread += 4.0 * (cfg_.chunk + window) * r * (1 + cfg_.before + cfg_.after);
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

  void save_random(const std::string& dir, const Shape& s) const override;
  void load_random(const std::string& dir, const Shape& s) override;

 private:
  // Sorted orders of one side (queries, or keys when shared_qk=false) of the last forward():
  // perm[(bh·r + round)·padded + slot] = position (−1 = pad), inv[(bh·r + round)·n + pos] = slot.
  struct Order {
    std::vector<int32_t> perm, inv;
  };

  const Rotations& rotations_for(const Shape& s, const Layout& L);
  void hash_and_sort(const Shape& s, const Layout& L, const Rotations& rot, const Tensor& x,
                     Order& order, double& t_hash, double& t_sort) const;
  void attend_rounds(const Shape& s, const Layout& L, const Tensor& q, const Tensor& k,
                     const Tensor& v, const std::vector<float>& inv_norm, const Order& qo,
                     const Order& ko, Tensor& out, double* t_parts) const;

  // Global chunk g of a head's concatenation -> its real slots' positions (pads dropped).
  int64_t chunk_positions(const Layout& L, int64_t n, const int32_t* perm_head, int64_t g,
                          int32_t* pos) const {
    const int64_t round = g / L.chunks, j = g % L.chunks;
    const int32_t* p = perm_head + round * L.padded + j * cfg_.chunk;
    const int64_t real = std::min<int64_t>(cfg_.chunk, n - j * cfg_.chunk);
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
                        Order& order, double& t_hash, double& t_sort) const {
  const int64_t n = s.nq, D = s.dim, R = cfg_.rounds, W = L.width;
  const int64_t tasks = s.heads_total() * R;
  std::vector<int32_t> buckets(size_t(tasks * n));
  order.perm.assign(size_t(tasks * L.padded), -1);
  order.inv.resize(size_t(tasks * n));

  auto t0 = std::chrono::steady_clock::now();
  constexpr int64_t kRows = 1024;  // rows projected per GEMM
#pragma omp parallel
  {
    std::vector<float> proj(size_t(kRows * W));
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t bh = t / R, round = t % R;
      const float* xh = x.head(bh / s.heads, bh % s.heads);
      const float* rt = rot.at(bh % s.heads, round);
      int32_t* bk = buckets.data() + t * n;
      for (int64_t r0 = 0; r0 < n; r0 += kRows) {
        const int64_t rows = std::min(kRows, n - r0);
        kernels::sgemm(false, false, rows, W, D, 1.0f, xh + r0 * D, D, rt, W, 0.0f, proj.data(), W);
        for (int64_t i = 0; i < rows; ++i) bk[r0 + i] = bucket_of(proj.data() + i * W, L.factors);
      }
    }
  }
  t_hash += seconds_since(t0);

  // Counting sort per round: stable, so ties keep increasing positions.
  t0 = std::chrono::steady_clock::now();
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
  t_sort += seconds_since(t0);
}

void Lsh::forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out) {
  static const bool profile = std::getenv("ATTN_LSH_PROFILE") != nullptr;
  const auto t_start = std::chrono::steady_clock::now();
  const Layout L = make_layout(cfg_, s.nq);
  const Rotations& rot = rotations_for(s, L);
  const int64_t n = s.nq, D = s.dim;

  double t_norm = 0, t_hash = 0, t_sort = 0, t_parts[3] = {0, 0, 0};
  std::vector<float> inv_norm;
  if (cfg_.shared_qk) {
    auto t0 = std::chrono::steady_clock::now();
    inv_norm.resize(size_t(s.heads_total() * n));
    const float* x = q.data();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < s.heads_total() * n; ++i) {
      float ss = 0;
      for (int64_t d = 0; d < D; ++d) ss += x[i * D + d] * x[i * D + d];
      inv_norm[i] = ss > 0 ? 1.0f / std::sqrt(ss) : 0.0f;  // a zero query gives a zero key
    }
    t_norm = seconds_since(t0);
  }

  Order qo, ko;
  hash_and_sort(s, L, rot, q, qo, t_hash, t_sort);
  if (!cfg_.shared_qk) hash_and_sort(s, L, rot, k, ko, t_hash, t_sort);
  const Order& keys = cfg_.shared_qk ? qo : ko;

  auto t0 = std::chrono::steady_clock::now();
  attend_rounds(s, L, q, k, v, inv_norm, qo, keys, out, t_parts);
  const double t_attend = seconds_since(t0);

  last_ = s, last_layout_ = L;
  q_order_ = std::move(qo), k_order_ = std::move(ko);
  if (profile) {
    const double total = seconds_since(t_start);
    std::fprintf(stderr,
                 "lsh profile n=%lld buckets=%lld (%zu factor%s, %lld rotation columns): total "
                 "%.1f ms = norms %.1f + hashing %.1f + sorting %.1f + attention %.1f "
                 "(per-thread mean: gather %.1f, kernel %.1f, combine %.1f); hashing+sorting "
                 "%.1f%%\n",
                 (long long)n, (long long)L.buckets, L.factors.size(),
                 L.factors.size() > 1 ? "s" : "", (long long)L.width, total * 1e3, t_norm * 1e3,
                 t_hash * 1e3, t_sort * 1e3, t_attend * 1e3, t_parts[0] * 1e3, t_parts[1] * 1e3,
                 t_parts[2] * 1e3, 100.0 * (t_norm + t_hash + t_sort) / total);
  }
}

// Per-thread buffers for one chunk: gathered query rows, the window's keys and values,
// original positions, per-slot outputs and lse, and (dedup) the chunks each pair meets in.
struct ChunkScratch {
  ChunkScratch(int64_t c, int64_t window, int64_t D, int64_t dedup_len)
      : qw(size_t(c * D)),
        kw(size_t(window * D)),
        vw(size_t(window * D)),
        ow(size_t(c * D)),
        lse(size_t(c)),
        qpos(size_t(c)),
        kpos(size_t(window)),
        qchunks(size_t(c * dedup_len)),
        kchunks(size_t(window * dedup_len)) {}
  FloatBuffer qw, kw, vw, ow;
  std::vector<float> lse;
  std::vector<int32_t> qpos, kpos, qchunks, kchunks;
};

void Lsh::attend_rounds(const Shape& s, const Layout& L, const Tensor& q, const Tensor& k,
                        const Tensor& v, const std::vector<float>& inv_norm, const Order& qo,
                        const Order& ko, Tensor& out, double* t_parts) const {
  const int64_t n = s.nq, D = s.dim, R = cfg_.rounds, c = cfg_.chunk;
  const int64_t span = 1 + cfg_.before + cfg_.after, window = c * span;
  const int64_t total_chunks = R * L.chunks;  // of one head's concatenation
  const int64_t tasks = s.heads_total() * L.chunks;
  const float scale = s.softmax_scale();
  const bool shared = cfg_.shared_qk, causal = s.causal, dedup = cfg_.dedup;
  const int64_t dedup_len = dedup ? R * span : 0;
  std::vector<float> lse_run(size_t(s.heads_total() * n));
  auto wrap = [&](int64_t g) { return ((g % total_chunks) + total_chunks) % total_chunks; };
  // Global chunk of position `pos` in round `round` of the side `o`.
  auto chunk_of = [&](const Order& o, int64_t bh, int64_t round, int64_t pos) {
    return int32_t((round * L.padded + o.inv[size_t((bh * R + round) * n + pos)]) / c);
  };

  std::vector<double> parts(size_t(3 * omp_get_max_threads()), 0.0);
#pragma omp parallel
  {
    OnlineSoftmax sm(D);
    ChunkScratch sc(c, window, D, dedup_len);
    double* my = parts.data() + 3 * omp_get_thread_num();
    for (int64_t round = 0; round < R; ++round) {
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < tasks; ++t) {
        auto t0 = std::chrono::steady_clock::now();
        const int64_t bh = t / L.chunks, b = bh / s.heads, h = bh % s.heads;
        const int64_t g = round * L.chunks + t % L.chunks;
        const int32_t* qperm = qo.perm.data() + bh * R * L.padded;
        const int32_t* kperm = ko.perm.data() + bh * R * L.padded;
        const float* qh = q.head(b, h);
        const float* kh = shared ? qh : k.head(b, h);
        const float* vh = v.head(b, h);
        const float* norms = shared ? inv_norm.data() + bh * n : nullptr;

        const int64_t rows = chunk_positions(L, n, qperm, g, sc.qpos.data());
        for (int64_t i = 0; i < rows; ++i)
          std::copy_n(qh + sc.qpos[i] * D, D, sc.qw.data() + i * D);
        int64_t nkeys = 0;
        for (int64_t off = -cfg_.before; off <= cfg_.after; ++off)
          nkeys += chunk_positions(L, n, kperm, wrap(g + off), sc.kpos.data() + nkeys);
        for (int64_t j = 0; j < nkeys; ++j) {
          const int64_t p = sc.kpos[j];
          float* kr = sc.kw.data() + j * D;
          if (shared)
            for (int64_t d = 0; d < D; ++d) kr[d] = kh[p * D + d] * norms[p];
          else
            std::copy_n(kh + p * D, D, kr);
          std::copy_n(vh + p * D, D, sc.vw.data() + j * D);
        }
        if (dedup) {
          // Every chunk each query's windows cover (all rounds), and each key's chunk per round.
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t rr = 0; rr < R; ++rr)
              for (int64_t off = -cfg_.before; off <= cfg_.after; ++off)
                sc.qchunks[i * dedup_len + rr * span + off + cfg_.before] =
                    int32_t(wrap(chunk_of(qo, bh, rr, sc.qpos[i]) + off));
          for (int64_t j = 0; j < nkeys; ++j)
            for (int64_t rr = 0; rr < R; ++rr)
              sc.kchunks[j * R + rr] = chunk_of(ko, bh, rr, sc.kpos[j]);
        }
        auto t1 = std::chrono::steady_clock::now();
        my[0] += std::chrono::duration<double>(t1 - t0).count();

        for (int64_t r0 = 0; r0 < rows; r0 += kernels::kQueryRows) {
          const int64_t nr = std::min(kernels::kQueryRows, rows - r0);
          const int32_t* qp = sc.qpos.data() + r0;
          const int32_t* kp = sc.kpos.data();
          sm.begin(sc.qw.data() + r0 * D, D, nr, scale);
          if (!shared && !causal && !dedup) {
            sm.attend(sc.kw.data(), sc.vw.data(), D, nkeys);
          } else if (!dedup) {
            sm.attend_masked(sc.kw.data(), sc.vw.data(), D, nkeys, [&](int64_t r, int64_t j) {
              if (causal && kp[j] > qp[r]) return kHidden;
              return shared && kp[j] == qp[r] ? kSelfPenalty : 0.0f;
            });
          } else {
            const int32_t* qc = sc.qchunks.data() + r0 * dedup_len;
            const int32_t* kc = sc.kchunks.data();
            sm.attend_masked(sc.kw.data(), sc.vw.data(), D, nkeys, [&](int64_t r, int64_t j) {
              if (causal && kp[j] > qp[r]) return kHidden;
              // Times key j is a candidate of query r over all rounds (>= 1: it is one here).
              int meets = 0;
              for (int64_t e = 0; e < dedup_len; ++e) {
                const int32_t gc = qc[r * dedup_len + e];
                meets += kc[j * R + gc / L.chunks] == gc;
              }
              const float self = shared && kp[j] == qp[r] ? kSelfPenalty : 0.0f;
              return self - std::log(float(meets));
            });
          }
          sm.finish(sc.ow.data() + r0 * D, D, sc.lse.data() + r0);
        }
        auto t2 = std::chrono::steady_clock::now();
        my[1] += std::chrono::duration<double>(t2 - t1).count();

        // Streamed log-sum-exp combination: out stays the normalized mixture of rounds so far.
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
        my[2] += seconds_since(t2);
      }
    }
  }
  const int threads = omp_get_max_threads();
  for (int th = 0; th < threads; ++th)
    for (int x = 0; x < 3; ++x) t_parts[x] += parts[size_t(3 * th + x)] / threads;
}

bool Lsh::visited_keys(const Shape& s, int64_t b, int64_t h, int64_t i, VisitedKeys& out) const {
  if (q_order_.perm.empty() || s.nq != last_.nq || s.heads != last_.heads || s.batch != last_.batch)
    return false;
  const Layout& L = last_layout_;
  const int64_t n = s.nq, R = cfg_.rounds, bh = b * s.heads + h;
  const int64_t total_chunks = R * L.chunks;
  const Order& ko = cfg_.shared_qk ? q_order_ : k_order_;
  const int32_t* kperm = ko.perm.data() + bh * R * L.padded;
  std::vector<int32_t> pos(size_t(cfg_.chunk));
  out.assign(size_t(R), {});
  for (int64_t round = 0; round < R; ++round) {
    const int64_t slot = q_order_.inv[size_t((bh * R + round) * n + i)];
    const int64_t g = (round * L.padded + slot) / cfg_.chunk;
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
      "4·D·r·n·c·(1+before+after) attention + 2·r·n·D·Σb_k/2 hashing FLOPs (both counted), O(r·n) "
      "counting sort; extra memory O(r·n) indices + per-thread chunk buffers.",
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
       {"seed", K::Int, "0", "seed of the random rotations", 0, 9e15}},
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
        return std::make_unique<Lsh>(std::move(c));
      }};
}

}  // namespace attn
