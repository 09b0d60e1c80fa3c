// `longformer`: Longformer's local + global attention pattern (arXiv:2004.05150; docs/ALGORITHMS.md
// §Longformer) with the same q, k, v for both parts. A non-global row attends to its band ∪ G (each
// global key once: global keys are hidden inside the band and attended from a gathered copy);
// a global row attends to every key. The causal mask applies on top. Built on the shared
// kernel through band.h, like `sliding_window`.
#include <omp.h>

#include <algorithm>
#include <sstream>

#include "attention/band.h"
#include "attention/registry.h"

namespace attn {
namespace {

using kernels::kQueryRows;
using kernels::OnlineSoftmax;

// "i1;i2;…" to positions: non-negative integers without duplicates ("none" = no list).
std::vector<int64_t> parse_indices(const std::string& text) {
  std::vector<int64_t> idx;
  if (text == "none") return idx;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ';')) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
    }
    if (v < 0 || used != item.size())
      throw UsageError("longformer: global_idx entry '" + item +
                       "' is not a non-negative integer; expected global_idx=i1;i2;...");
    idx.push_back(v);
  }
  std::sort(idx.begin(), idx.end());
  for (size_t a = 1; a < idx.size(); ++a)
    if (idx[a] == idx[a - 1])
      throw UsageError("longformer: global_idx lists position " + std::to_string(idx[a]) +
                       " twice; each global position must appear once");
  return idx;
}

// Keys of one residue class that are global, so that the band hides them.
struct GlobalsInBand {
  const std::vector<uint8_t>& is_global;
  const std::vector<int64_t>& globals;
  int64_t rho, k;
  bool operator()(int64_t t) const { return is_global[rho + t * k]; }
  bool any(int64_t lo, int64_t hi) const {
    if (globals.empty() || globals.front() > rho + hi * k || globals.back() < rho + lo * k)
      return false;
    for (int64_t t = lo; t <= hi; ++t)
      if (is_global[rho + t * k]) return true;
    return false;
  }
};

class Longformer final : public Attention {
 public:
  Longformer(int64_t radius, int64_t dilation, int64_t global, const std::string& global_idx)
      : radius_(radius), dilation_(dilation), global_(global), idx_(parse_indices(global_idx)) {
    if (global_ > 0 && !idx_.empty())
      throw UsageError(
          "longformer: give either global=g (the first g positions) or global_idx, "
          "not both");
  }

  std::string name() const override { return "longformer"; }
  ParamValues params() const override {
    std::string idx;
    for (int64_t i : idx_) {
      if (!idx.empty()) idx += ';';
      idx += std::to_string(i);
    }
    return {{"radius", std::to_string(radius_)},
            {"dilation", std::to_string(dilation_)},
            {"global", std::to_string(global_)},
            {"global_idx", idx.empty() ? "none" : idx}};
  }

  void validate(const Shape& s) const override {
    s.check();
    if (s.nq != s.nk)
      throw UsageError("longformer is self-attention: Nq must equal Nk (got Nq=" +
                       std::to_string(s.nq) + ", Nk=" + std::to_string(s.nk) + ")");
    if (global_ > s.nq)
      throw UsageError("longformer: global=" + std::to_string(global_) +
                       " exceeds the sequence length " + std::to_string(s.nq));
    if (!idx_.empty() && idx_.back() >= s.nq)
      throw UsageError("longformer: global_idx position " + std::to_string(idx_.back()) +
                       " is out of range for sequence length " + std::to_string(s.nq) +
                       " (valid: 0.." + std::to_string(s.nq - 1) + ")");
  }

  // One parallel loop over the global-row chunks (first: the heaviest tasks, so dynamic
  // scheduling balances them against the band blocks) and the band blocks. Band blocks write
  // every row of `out`; global rows go to their own buffer and replace those rows afterwards.
  void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
               Tensor& out) override {
    Globals gl(s, globals(s.nq));
    gather_keys(s, k, v, gl);
    const band::BlockGrid grid(s, window(s).dilation);
    const int64_t global_tasks = s.heads_total() * gl.chunks;
    band::parallel_tasks(global_tasks + grid.count(), s.dim, [&](int64_t t, OnlineSoftmax& sm) {
      if (t < global_tasks) return attend_global_rows(s, q, k, v, gl, t, sm);
      grid.run(t - global_tasks, q, k, v, out, sm,
               [&](int64_t b, int64_t h, const band::View& view, int64_t row0, int64_t rows,
                   OnlineSoftmax& block_sm) {
                 attend_local_block(s, gl, b, h, view, row0, rows, block_sm);
               });
    });
    scatter_global_rows(s, gl, out);
  }

  // 4·D per visible pair. Pairs: the band's closed form, minus the global rows' bands, plus
  // each non-global row's visible globals, minus the globals already inside its band, plus
  // the global rows' dense rows (docs/ALGORITHMS.md §Longformer). The sums over G: O(g log g).
  double flops(const Shape& s) const override {
    const int64_t n = s.nq;
    const band::Window w = window(s);
    const std::vector<int64_t> G = globals(n);
    const double g = double(G.size());
    double p = band::pairs(n, w);
    double globals_seen = s.causal ? -g * (g + 1) / 2 : (n - g) * g;
    for (int64_t j : G) {
      p += (s.causal ? j + 1 : n) - band::row_pairs(n, w, j) - band::column_pairs(n, w, j);
      if (s.causal) globals_seen += n - j;
    }
    return 4.0 * s.dim * (p + globals_seen + global_pairs_in_band(G, w)) * s.heads_total();
  }

  // Per thread: kernel scratch and a gathered block of global query rows; shared: the
  // gathered global keys and values and the global rows' outputs of every head, the flags.
  double extra_bytes(const Shape& s) const override {
    const double g = double(globals(s.nq).size());
    const double per_thread = kQueryRows * (3.0 * s.dim + kernels::kKeyTile + 3) * sizeof(float);
    return per_thread * omp_get_max_threads() + 3.0 * s.heads_total() * g * s.dim * sizeof(float) +
           s.nq + g * sizeof(int64_t);
  }

  bool visited_keys(const Shape& s, int64_t, int64_t, int64_t i, VisitedKeys& out) const override {
    const std::vector<int64_t> G = globals(s.nq);
    out.assign(1, {});
    std::vector<int64_t>& keys = out[0];
    if (std::binary_search(G.begin(), G.end(), i)) {
      for (int64_t j = 0; j <= (s.causal ? i : s.nq - 1); ++j) keys.push_back(j);
      return true;
    }
    std::vector<int64_t> local;
    band::row_keys(s.nq, window(s), i, local);
    auto visible_end = s.causal ? std::upper_bound(G.begin(), G.end(), i) : G.end();
    std::set_union(local.begin(), local.end(), G.begin(), visible_end, std::back_inserter(keys));
    return true;
  }

 private:
  band::Window window(const Shape& s) const {
    return band::clipped_window(radius_, dilation_, s.causal, s.nq);
  }

  std::vector<int64_t> globals(int64_t n) const {
    if (!idx_.empty()) return idx_;
    std::vector<int64_t> G(std::min(global_, n));
    for (size_t a = 0; a < G.size(); ++a) G[a] = int64_t(a);
    return G;
  }

  // Pairs (i, j) of global positions with j in the band of i: sorted by (residue, step), the
  // band of i within its residue class is a contiguous range.
  double global_pairs_in_band(const std::vector<int64_t>& G, const band::Window& w) const {
    std::vector<std::pair<int64_t, int64_t>> at;
    for (int64_t j : G) at.emplace_back(j % w.dilation, j / w.dilation);
    std::sort(at.begin(), at.end());
    double count = 0;
    for (auto [rho, t] : at) {
      auto lo = std::lower_bound(at.begin(), at.end(), std::make_pair(rho, t - w.radius));
      auto hi =
          std::upper_bound(at.begin(), at.end(), std::make_pair(rho, w.causal ? t : t + w.radius));
      count += double(hi - lo);
    }
    return count;
  }

  // The global positions of one forward and the buffers that go with them.
  struct Globals {
    Globals(const Shape& s, std::vector<int64_t> positions)
        : G(std::move(positions)),
          g(int64_t(G.size())),
          chunks((g + kQueryRows - 1) / kQueryRows),
          is_global(s.nq, 0),
          kv(size_t(2 * s.heads_total() * g * s.dim)),
          out(size_t(s.heads_total() * g * s.dim)),
          qbuf(size_t(omp_get_max_threads() * kQueryRows * s.dim)) {
      for (int64_t j : G) is_global[j] = 1;
    }
    std::vector<int64_t> G;  // ascending
    int64_t g, chunks;       // chunks of up to kQueryRows global rows per head
    std::vector<uint8_t> is_global;
    FloatBuffer kv;    // [B·H][2][g][D]: keys, then values, of the global positions
    FloatBuffer out;   // [B·H][g][D]: the global rows' outputs
    FloatBuffer qbuf;  // [thread][kQueryRows][D]: a gathered chunk of global queries
  };

  static void gather_keys(const Shape& s, const Tensor& k, const Tensor& v, Globals& gl) {
    const int64_t D = s.dim;
    for (int64_t bh = 0; bh < s.heads_total(); ++bh)
      for (int64_t a = 0; a < gl.g; ++a) {
        const float* kr = k.head(bh / s.heads, bh % s.heads) + gl.G[a] * D;
        const float* vr = v.head(bh / s.heads, bh % s.heads) + gl.G[a] * D;
        std::copy(kr, kr + D, gl.kv.data() + (bh * 2 * gl.g + a) * D);
        std::copy(vr, vr + D, gl.kv.data() + ((bh * 2 + 1) * gl.g + a) * D);
      }
  }

  // A block of rows: its band with the global keys hidden, then the global keys once.
  void attend_local_block(const Shape& s, const Globals& gl, int64_t b, int64_t h,
                          const band::View& view, int64_t row0, int64_t rows,
                          OnlineSoftmax& sm) const {
    const int64_t g = gl.g, D = s.dim;
    sm.begin(view.q + row0 * view.ld, view.ld, rows, s.softmax_scale());
    const band::Window w = window(s);
    band::attend_band(sm, view, w, row0, rows,
                      GlobalsInBand{gl.is_global, gl.G, view.rho, w.dilation});
    const float* kg = gl.kv.data() + (b * s.heads + h) * 2 * g * D;
    const float* vg = kg + g * D;
    const int64_t first = view.rho + row0 * w.dilation;
    const int64_t last = view.rho + (row0 + rows - 1) * w.dilation;
    // Causal: globals after the last row are hidden from the whole block.
    const auto& G = gl.G;
    const int64_t span = s.causal ? std::upper_bound(G.begin(), G.end(), last) - G.begin() : g;
    if (!s.causal || span == 0 || G[span - 1] <= first) {
      sm.attend(kg, vg, D, span);
    } else {
      sm.attend_masked(kg, vg, D, span, [&](int64_t r, int64_t c) {
        return G[c] > first + r * w.dilation ? OnlineSoftmax::kHidden : 0.0f;
      });
    }
    sm.finish(view.out + row0 * view.ld, view.ld);
  }

  // Chunk `task` (head-major) of the global rows: dense rows over every key (causal: keys up
  // to the row), written to gl.out.
  static void attend_global_rows(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                                 Globals& gl, int64_t task, OnlineSoftmax& sm) {
    const int64_t D = s.dim, bh = task / gl.chunks, b = bh / s.heads, h = bh % s.heads;
    const int64_t a0 = task % gl.chunks * kQueryRows, rows = std::min(kQueryRows, gl.g - a0);
    const int64_t* pos = gl.G.data() + a0;
    float* qbuf = gl.qbuf.data() + omp_get_thread_num() * kQueryRows * D;
    const float *qh = q.head(b, h), *kh = k.head(b, h), *vh = v.head(b, h);
    for (int64_t r = 0; r < rows; ++r)
      std::copy(qh + pos[r] * D, qh + (pos[r] + 1) * D, qbuf + r * D);
    sm.begin(qbuf, D, rows, s.softmax_scale());
    if (!s.causal) {
      sm.attend(kh, vh, D, s.nk);
    } else {
      // Keys up to the first row are visible to all rows (positions ascend).
      const int64_t p0 = pos[0], pl = pos[rows - 1];
      sm.attend(kh, vh, D, p0 + 1);
      sm.attend_masked(kh + (p0 + 1) * D, vh + (p0 + 1) * D, D, pl - p0, [&](int64_t r, int64_t c) {
        return p0 + 1 + c > pos[r] ? OnlineSoftmax::kHidden : 0.0f;
      });
    }
    sm.finish(gl.out.data() + (bh * gl.g + a0) * D, D);
  }

  static void scatter_global_rows(const Shape& s, const Globals& gl, Tensor& out) {
    const int64_t D = s.dim;
    for (int64_t bh = 0; bh < s.heads_total(); ++bh)
      for (int64_t a = 0; a < gl.g; ++a) {
        const float* o = gl.out.data() + (bh * gl.g + a) * D;
        std::copy(o, o + D, out.head(bh / s.heads, bh % s.heads) + gl.G[a] * D);
      }
  }

  int64_t radius_, dilation_, global_;
  std::vector<int64_t> idx_;  // explicit global positions, ascending
};

}  // namespace

VariantInfo longformer_variant() {
  return {
      "longformer",
      "Longformer local + global attention (exact): a non-global row sees its band (as "
      "sliding_window: |i - j| <= radius*dilation, j ≡ i (mod dilation)) plus every global key, "
      "each key once; a global row sees every key; causal mask on top. HF attention_window = "
      "2*radius. The same q, k, v serve the local and the global part: Longformer's separate "
      "global projections are a model detail outside the attention computation. "
      "O(n*(radius+g)*D) time, O(n + threads*D) extra memory.",
      {{"radius", ParamSpec::Kind::Int, "256", "one-sided window r (of the dilated grid)", 0},
       {"dilation", ParamSpec::Kind::Int, "1", "gap k between visible band keys", 1},
       {"global", ParamSpec::Kind::Int, "0", "the first g positions are global ([CLS]-like)", 0},
       {"global_idx", ParamSpec::Kind::Text, "none",
        "explicit global positions i1;i2;... (exclusive with global > 0)"}},
      [](const Params& p) {
        return std::make_unique<Longformer>(p.get_int("radius"), p.get_int("dilation"),
                                            p.get_int("global"), p.get("global_idx"));
      }};
}

}  // namespace attn
