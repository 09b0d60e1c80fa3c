// Axial positional encoding (Reformer; Hugging Face AxialPositionEmbeddings, trax
// AxialPositionalEncoding, lucidrains axial-positional-embedding): factor tables
// E_i ∈ R^{l_i × d_i}, Π l_i ≥ n, Σ d_i = D, and E(j) = concat_i E_i[a_i(j)] where a(j) are the
// digits of j in the mixed radix (l_1, …, l_m). order=row (the code of all three sources, see
// docs/ALGORITHMS.md §Axial): the last factor varies fastest, so for two factors
// E(j) = [E1[j div l2], E2[j mod l2]]. order=col (the Hugging Face docs): the first factor varies
// fastest, E(j) = [E1[j mod l1], E2[j div l1]]. Lookup is a pure gather: 0 FLOPs.
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "attention/npy.h"
#include "attention/positional/positional.h"

namespace attn::positional {
namespace {

std::string join_x(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) s += 'x';
    s += std::to_string(v[i]);
  }
  return s;
}

// Smallest l with l^m ≥ n.
int64_t auto_side(int64_t n, size_t m) {
  int64_t l = std::max<int64_t>(1, int64_t(std::floor(std::pow(double(n), 1.0 / double(m)))) - 1);
  auto covers = [&](int64_t side) {
    double p = 1;
    for (size_t i = 0; i < m; ++i) p *= double(side);
    return p >= double(n);
  };
  while (!covers(l)) ++l;
  return l;
}

// Outputs at least this large go around the cache (about one L3): they cannot stay cached for
// the consumer anyway, and streaming stores skip the read-for-ownership that would otherwise
// double the memory traffic of a write-only gather.
constexpr double kStreamBytes = 32.0 * (1 << 20);

// dst[0, count) = src[0, count); with `stream`, the 64-byte-aligned whole vectors use
// non-temporal stores (the caller fences).
inline void copy_floats(float* dst, const float* src, int64_t count, bool stream) {
#if defined(__AVX512F__)
  if (stream) {
    int64_t c = 0;
    for (; c < count && (reinterpret_cast<uintptr_t>(dst + c) & 63); ++c) dst[c] = src[c];
    for (; c + 16 <= count; c += 16) _mm512_stream_ps(dst + c, _mm512_loadu_ps(src + c));
    for (; c < count; ++c) dst[c] = src[c];
    return;
  }
#endif
  std::memcpy(dst, src, count * sizeof(float));
}

// Makes this thread's streaming stores visible before the parallel region ends.
inline void fence_streams() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

class Axial final : public Encoding {
 public:
  Axial(const std::string& shape, const std::string& dims, bool row_major) : row_major_(row_major) {
    if (shape != "auto") spec_l_ = parse_factors(shape, "axial: shape");
    if (dims != "auto") spec_d_ = parse_factors(dims, "axial: dims");
    if (!spec_l_.empty() && !spec_d_.empty() && spec_l_.size() != spec_d_.size())
      throw UsageError("axial: shape=" + shape + " has " + std::to_string(spec_l_.size()) +
                       " factors but dims=" + dims + " has " + std::to_string(spec_d_.size()) +
                       "; give one width per factor");
  }
  std::string kind() const override { return "axial"; }

  void init(int64_t n, int64_t dim, uint64_t seed) override {
    dim_ = 0;  // unusable until this init succeeds
    if (n <= 0 || dim <= 0)
      throw UsageError("axial: positions and width must be positive, got n=" + std::to_string(n) +
                       " D=" + std::to_string(dim));
    const size_t m = !spec_l_.empty() ? spec_l_.size() : !spec_d_.empty() ? spec_d_.size() : 2;
    l_ = spec_l_.empty() ? std::vector<int64_t>(m, auto_side(n, m)) : spec_l_;
    d_ = spec_d_.empty() ? even_split(dim, m) : spec_d_;
    check_widths(dim);
    positions_ = covered_positions();
    if (positions_ < n)
      throw UsageError("axial: shape=" + join_x(l_) + " covers " + std::to_string(positions_) +
                       " positions, fewer than the sequence length " + std::to_string(n) +
                       "; the product of the shape factors must be >= n");
    double bytes = 0;
    for (size_t i = 0; i < m; ++i) bytes += double(l_[i]) * double(d_[i]) * sizeof(float);
    check_fits_in_memory(bytes, "axial factor tables shape=" + join_x(l_) + " dims=" + join_x(d_));
    tables_.clear();
    offset_.assign(m, 0);
    for (size_t i = 0; i < m; ++i) {
      tables_.emplace_back(size_t(l_[i] * d_[i]));
      fill_normal(tables_[i].data(), l_[i] * d_[i], seed, i);
      if (i) offset_[i] = offset_[i - 1] + d_[i - 1];
    }
    dim_ = dim;
  }

  int64_t param_count() const override {
    int64_t p = 0;
    for (size_t i = 0; i < l_.size(); ++i) p += l_[i] * d_[i];
    return p;
  }

  // Each thread takes one contiguous range of rows, finds the factor rows of its first
  // position once and then steps them like an odometer: no division per row, the load is
  // balanced for any shape, and every row is written by contiguous copies.
  void encode(int64_t n, float* out) const override {
    check_rows(n);
    const int64_t d = dim_;
    const bool stream = double(n) * d * sizeof(float) >= kStreamBytes;
#pragma omp parallel
    {
      const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
      const int64_t begin = n * t / T, end = n * (t + 1) / T;
      int64_t a[kMaxFactors];
      digits(begin, a);
      for (int64_t j = begin; j < end; ++j, step(a)) {
        for (size_t i = 0; i < l_.size(); ++i)
          copy_floats(out + j * d + offset_[i], tables_[i].data() + a[i] * d_[i], d_[i], stream);
      }
      fence_streams();
    }
  }

  // Same partition over the rows·n vectors of x; the position wraps to 0 at each new slice.
  void add_to(float* x, int64_t rows, int64_t n) const override {
    check_rows(n);
    const int64_t d = dim_, total = rows * n;
#pragma omp parallel
    {
      const int64_t t = omp_get_thread_num(), T = omp_get_num_threads();
      const int64_t begin = total * t / T, end = total * (t + 1) / T;
      int64_t a[kMaxFactors], j = begin % n;
      digits(j, a);
      for (int64_t rj = begin; rj < end; ++rj) {
        for (size_t i = 0; i < l_.size(); ++i) {
          float* xr = x + rj * d + offset_[i];
          const float* e = tables_[i].data() + a[i] * d_[i];
#pragma omp simd
          for (int64_t c = 0; c < d_[i]; ++c) xr[c] += e[c];
        }
        if (++j == n)
          j = 0, digits(0, a);
        else
          step(a);
      }
    }
  }

  void save_weights(const std::string& dir) const override {
    check_ready();
    std::filesystem::create_directories(dir);
    for (size_t i = 0; i < l_.size(); ++i)
      write_npy(file(dir, i), {l_[i], d_[i]}, tables_[i].data());
  }

  void load_weights(const std::string& dir) override {
    check_ready();
    if (std::filesystem::exists(file(dir, l_.size())))
      throw RuntimeError(file(dir, l_.size()) + " exists but the spec has only " +
                         std::to_string(l_.size()) + " factors (shape=" + join_x(l_) + ")");
    for (size_t i = 0; i < l_.size(); ++i) {
      std::vector<float> t = read_table(file(dir, i), l_[i], d_[i]);
      std::copy(t.begin(), t.end(), tables_[i].data());
    }
  }

 private:
  static constexpr size_t kMaxFactors = 16;

  static std::string file(const std::string& dir, size_t i) {
    return dir + "/factor_" + std::to_string(i) + ".npy";
  }

  static std::vector<int64_t> even_split(int64_t dim, size_t m) {
    std::vector<int64_t> d(m, dim / int64_t(m));
    for (size_t i = 0; i < size_t(dim % int64_t(m)); ++i) ++d[i];
    return d;
  }

  void check_widths(int64_t dim) const {
    if (l_.size() > kMaxFactors)
      throw UsageError("axial: at most " + std::to_string(kMaxFactors) + " factors, got " +
                       std::to_string(l_.size()));
    int64_t sum = 0;
    for (int64_t w : d_) {
      if (w <= 0)
        throw UsageError("axial: width " + std::to_string(dim) + " cannot be split into " +
                         std::to_string(d_.size()) + " positive factor widths");
      sum += w;
    }
    if (sum != dim)
      throw UsageError("axial: dims=" + join_x(d_) + " sum to " + std::to_string(sum) +
                       " but the encoding width (head dim) is " + std::to_string(dim) +
                       "; the factor widths must sum to D");
  }

  // Π l_i, saturating: a product beyond int64 covers any sequence.
  int64_t covered_positions() const {
    int64_t p = 1;
    for (int64_t l : l_)
      if (__builtin_mul_overflow(p, l, &p)) return std::numeric_limits<int64_t>::max();
    return p;
  }

  // a[i] = the row of factor i for position j.
  void digits(int64_t j, int64_t* a) const {
    const size_t m = l_.size();
    if (row_major_) {
      for (size_t i = m; i-- > 0;) a[i] = j % l_[i], j /= l_[i];
    } else {
      for (size_t i = 0; i < m; ++i) a[i] = j % l_[i], j /= l_[i];
    }
  }

  // The factor rows of position j + 1 from those of j (a mixed-radix increment).
  void step(int64_t* a) const {
    const size_t m = l_.size();
    if (row_major_) {
      for (size_t i = m; i-- > 0;) {
        if (++a[i] < l_[i] || i == 0) return;
        a[i] = 0;
      }
    } else {
      for (size_t i = 0; i < m; ++i) {
        if (++a[i] < l_[i] || i == m - 1) return;
        a[i] = 0;
      }
    }
  }

  bool row_major_;
  std::vector<int64_t> spec_l_, spec_d_;  // empty: "auto"
  std::vector<int64_t> l_, d_, offset_;
  std::vector<FloatBuffer> tables_;
};

}  // namespace

KindInfo axial_kind() {
  return {"axial",
          "Reformer's factorized table: factors E_i [l_i, d_i], prod l_i >= n, sum d_i = D, "
          "E(j) = concat of one row per factor; params sum l_i*d_i, O(sqrt(n)*D) for 2 factors. "
          "order=row (default; Hugging Face/trax/lucidrains code): E(j) = [E1[j div l2], "
          "E2[j mod l2]], last factor fastest; order=col (Hugging Face docs): [E1[j mod l1], "
          "E2[j div l1]], first factor fastest. Weights DIR/factor_<i>.npy [l_i, d_i] "
          "(HF's (l1,1,d1)/(1,l2,d2) layouts load too); init N(0,1) (HF axial_norm_std=1)",
          {{"shape", ParamSpec::Kind::Text, "auto",
            "l1xl2[x...] positions per factor; auto = m equal factors, the smallest with l^m >= n"},
           {"dims", ParamSpec::Kind::Text, "auto",
            "d1xd2[x...] feature widths per factor, summing to D; auto = D split evenly"},
           {"order",
            ParamSpec::Kind::Choice,
            "row",
            "row: last factor varies fastest (the code); col: first factor fastest (the HF docs)",
            -1e300,
            1e300,
            {"row", "col"}}},
          [](const Params& p) {
            return std::make_unique<Axial>(p.get("shape"), p.get("dims"), p.get("order") == "row");
          }};
}

}  // namespace attn::positional
