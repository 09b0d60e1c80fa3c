// `linformer`: low-rank projection of keys and values along the sequence axis (Wang et al.,
// arXiv:2006.04768; docs/ALGORITHMS.md §Linformer).
//
//   out = softmax(s · Q (E K)ᵀ) · (F V),   E, F ∈ R^{k×Nk},
//
// i.e. dense attention of the Nq queries over k projected keys E·K with values F·V. E and F
// are seeded Gaussian N(0, 1/k) matrices (the paper learns them; a benchmark draws them like
// any other weights), one pair for all heads (the paper's headwise sharing) or one per head,
// optionally E = F (key-value sharing). The projections are sgemm calls, the attention the
// shared online-softmax kernel.
//
// Determinism: the projections are split into fixed tasks of kProjRows rows of E (or F), one
// single-threaded sgemm each; every query block is one OnlineSoftmax run. No result depends on
// the thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <filesystem>
#include <vector>

#include "attention/kernels/gemm.h"
#include "attention/kernels/online_softmax.h"
#include "attention/npy.h"
#include "attention/random.h"
#include "attention/registry.h"

namespace attn {
namespace {

using kernels::OnlineSoftmax;

// Rows of E (or F) per projection task: a fixed split, so each projected row is computed by
// the same sgemm call whatever the thread count.
constexpr int64_t kProjRows = 64;
constexpr int64_t kMaxRank = 1 << 16;

struct Config {
  int64_t k = 256;
  bool per_head = false;
  bool shared_kv = false;
  uint64_t seed = 0;
};

class Linformer final : public Attention {
 public:
  explicit Linformer(const Config& c) : cfg_(c) {}

  std::string name() const override { return "linformer"; }

  ParamValues params() const override {
    return {{"k", std::to_string(cfg_.k)},
            {"per_head", cfg_.per_head ? "true" : "false"},
            {"shared_kv", cfg_.shared_kv ? "true" : "false"},
            {"seed", std::to_string(cfg_.seed)}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (s.causal)
      throw UsageError(
          "linformer is not defined for causal attention (E and F mix every key position, later "
          "ones included, into each projected key); run it without causal");
    if (cfg_.k > s.nk)
      throw UsageError("linformer: k=" + std::to_string(cfg_.k) +
                       " projected keys exceed the key length Nk=" + std::to_string(s.nk) +
                       "; use k <= Nk");
    check_fits_in_memory(extra_bytes(s) + random_floats(s) * sizeof(float),
                         "linformer at " + s.str());
  }

  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override;

  // Matmul FLOPs (docs/ALGORITHMS.md §FLOPs): the projections E·K and F·V, 2·k·Nk·D each, and
  // dense attention over k keys, 4·D per (query, projected key) pair; softmax not counted.
  double flops(const Shape& s) const override {
    const double k = cfg_.k, D = s.dim;
    return s.heads_total() * (4.0 * k * s.nk * D + 4.0 * s.nq * k * D);
  }

  // E·K and F·V of every (batch, head), and the online-softmax scratch per thread. E and F
  // themselves (random_floats) are instance state drawn once per Nk, like weights, and not
  // counted (validate checks that they fit).
  double extra_bytes(const Shape& s) const override {
    using namespace kernels;
    const double projected = 2.0 * double(s.heads_total()) * cfg_.k * s.dim;
    const double per_thread = kQueryRows * (2.0 * s.dim + kKeyTile + 3);
    return (projected + per_thread * omp_get_max_threads()) * sizeof(float);
  }

  // DIR/E.npy (and DIR/F.npy unless shared_kv): [1 or H, k, Nk], entries N(0, 1/k).
  void save_random(const std::string& dir, const Shape& s) const override {
    validate(s);
    ensure_random(s);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw RuntimeError("cannot create directory " + dir + ": " + ec.message());
    const int64_t size = cfg_.k * s.nk;
    for (int64_t w = 0; w < kinds(); ++w) {
      std::vector<float> m(size_t(groups(s) * size));
      for (int64_t g = 0; g < groups(s); ++g) std::copy_n(matrix(g, w), size, m.data() + g * size);
      write_npy(dir + (w ? "/F.npy" : "/E.npy"), {groups(s), cfg_.k, s.nk}, m.data());
    }
  }

  void load_random(const std::string& dir, const Shape& s) override {
    validate(s);
    const std::vector<int64_t> want = {groups(s), cfg_.k, s.nk};
    std::vector<float> all;
    for (int64_t w = 0; w < kinds(); ++w) {
      const std::string path = dir + (w ? "/F.npy" : "/E.npy");
      NpyArray a = read_npy(path);
      if (a.shape != want)
        throw RuntimeError(path + " must have shape [" + std::to_string(want[0]) + ", " +
                           std::to_string(want[1]) + ", " + std::to_string(want[2]) +
                           "] (1 or heads, k, Nk) for this instance");
      all.insert(all.end(), a.data.begin(), a.data.end());
    }
    // Stored as [group][kind][k][Nk]; the files are [kind][group][k][Nk].
    const size_t size = size_t(cfg_.k * s.nk);
    mats_.assign(all.size(), 0.0f);
    for (int64_t w = 0; w < kinds(); ++w)
      for (int64_t g = 0; g < groups(s); ++g)
        std::copy_n(all.data() + (w * groups(s) + g) * size, size,
                    mats_.data() + (g * kinds() + w) * size);
    drawn_for_ = {s.nk, groups(s)};
  }

 private:
  int64_t groups(const Shape& s) const { return cfg_.per_head ? s.heads : 1; }
  int64_t kinds() const { return cfg_.shared_kv ? 1 : 2; }  // E, or E and F
  double random_floats(const Shape& s) const { return double(groups(s)) * kinds() * cfg_.k * s.nk; }
  // E (w = 0) or F (w = 1; E again when shared_kv) of head group g, [k, Nk] row-major.
  const float* matrix(int64_t g, int64_t w) const {
    return mats_.data() + (g * kinds() + (cfg_.shared_kv ? 0 : w)) * cfg_.k * drawn_for_.first;
  }

  // Entry e of matrix i (i = group·kinds + kind) is k^(-1/2)·normal(e) of the stream (seed,
  // kLinformerProjection, i) (attention/random.h), so the draw depends only on (seed, i, k, Nk).
  void ensure_random(const Shape& s) const {
    if (drawn_for_ == std::pair<int64_t, int64_t>{s.nk, groups(s)}) return;
    const int64_t size = cfg_.k * s.nk;
    mats_.assign(size_t(groups(s) * kinds() * size), 0.0f);
    const double sigma = 1.0 / std::sqrt(double(cfg_.k));
    for (int64_t i = 0; i < groups(s) * kinds(); ++i) {
      const RandomStream stream(cfg_.seed, RandomDomain::kLinformerProjection, uint64_t(i));
      float* m = mats_.data() + i * size;
#pragma omp parallel for schedule(static)
      for (int64_t e = 0; e < size; ++e) m[e] = float(sigma * stream.normal(uint64_t(e)));
    }
    drawn_for_ = {s.nk, groups(s)};
  }

  void project(const Shape& s, const Tensor& k, const Tensor& v, float* projected) const;

  Config cfg_;
  mutable std::vector<float> mats_;                      // [group][kind][k][Nk]
  mutable std::pair<int64_t, int64_t> drawn_for_{0, 0};  // (Nk, groups) of mats_
};

// projected[bh] = [E_g·K_bh (k×D); F_g·V_bh (k×D)], g the head's group.
void Linformer::project(const Shape& s, const Tensor& k, const Tensor& v, float* projected) const {
  const int64_t D = s.dim, rank = cfg_.k, nk = s.nk;
  const int64_t blocks = (rank + kProjRows - 1) / kProjRows;
  const int64_t tasks = s.heads_total() * 2 * blocks;
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t bh = t / (2 * blocks), w = (t / blocks) % 2, blk = t % blocks;
    const int64_t b = bh / s.heads, h = bh % s.heads;
    const int64_t r0 = blk * kProjRows, rows = std::min(kProjRows, rank - r0);
    const float* m = matrix(cfg_.per_head ? h : 0, w) + r0 * nk;
    const float* x = w ? v.head(b, h) : k.head(b, h);
    float* y = projected + (bh * 2 + w) * rank * D + r0 * D;
    try {
      kernels::sgemm(false, false, rows, D, nk, 1.0f, m, nk, x, D, 0.0f, y, D);
    } catch (...) {
#pragma omp critical(linformer_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

void Linformer::forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                        Tensor& out) {
  ensure_random(s);
  const int64_t D = s.dim, rank = cfg_.k;
  FloatBuffer projected(size_t(s.heads_total()) * 2 * rank * D);
  project(s, k, v, projected.data());
  const float scale = s.softmax_scale();
  kernels::for_each_query_block(
      s, [&](int64_t b, int64_t h, int64_t row0, int64_t rows, OnlineSoftmax& sm) {
        const float* kp = projected.data() + (b * s.heads + h) * 2 * rank * D;
        sm.begin(q.head(b, h) + row0 * D, D, rows, scale);
        sm.attend(kp, kp + rank * D, D, rank);
        sm.finish(out.head(b, h) + row0 * D, D);
      });
}

}  // namespace

VariantInfo linformer_variant() {
  using K = ParamSpec::Kind;
  return {"linformer",
          "Linformer (arXiv:2006.04768): softmax(s·Q(EK)ᵀ)·(FV), keys and values projected along "
          "the sequence to k rows by seeded Gaussian E, F ∈ R^{k×Nk} (entries N(0, 1/k)); "
          "approximates plain dense softmax attention. Non-causal only (causal is a usage error); "
          "needs k <= Nk. FLOPs count the matmuls: 4·k·Nk·D projections + 4·Nq·k·D attention per "
          "head. Extra memory 2·B·H·k·D projected keys/values; E and F (2·k·Nk floats, ×H per "
          "head, ×1/2 shared_kv) are kept between calls like weights and not counted. Exported / "
          "imported as DIR/E.npy, DIR/F.npy [1 or H, k, Nk] by `apply --random-out/--random-in`.",
          {{"k", K::Int, "256", "projected length (the paper's k; 256 in its main experiments)", 1,
            double(kMaxRank)},
           {"per_head", K::Bool, "false",
            "one E, F pair per head; false = one pair shared by all heads (headwise sharing)"},
           {"shared_kv", K::Bool, "false", "E = F (the paper's key-value sharing)"},
           {"seed", K::Int, "0", "seed of E and F", 0, 9.0e15}},
          [](const Params& p) {
            Config c;
            c.k = p.get_int("k");
            c.per_head = p.get_bool("per_head");
            c.shared_kv = p.get_bool("shared_kv");
            c.seed = uint64_t(p.get_int("seed"));
            return std::make_unique<Linformer>(c);
          }};
}

}  // namespace attn
