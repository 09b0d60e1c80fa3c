// A free [L, D] table, one row per position (BERT/GPT-2 style): the O(n·D) memory baseline
// the axial factorization is measured against.
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "attention/npy.h"
#include "attention/positional/positional.h"

namespace attn::positional {
namespace {

class Learned final : public Encoding {
 public:
  explicit Learned(int64_t rows) : rows_(rows) {}
  std::string kind() const override { return "learned"; }

  void init(int64_t n, int64_t dim, uint64_t seed) override {
    const int64_t rows = rows_ ? rows_ : n;
    if (n <= 0 || dim <= 0)
      throw UsageError("learned: positions and width must be positive, got n=" + std::to_string(n) +
                       " D=" + std::to_string(dim));
    if (n > rows)
      throw UsageError("learned: the table has positions=" + std::to_string(rows) +
                       " rows, fewer than the sequence length " + std::to_string(n));
    check_fits_in_memory(
        double(rows) * dim * sizeof(float),
        "learned table [" + std::to_string(rows) + "," + std::to_string(dim) + "]");
    table_ = FloatBuffer(size_t(rows) * dim);
    fill_normal(table_.data(), rows * dim, seed, 0);
    positions_ = rows, dim_ = dim, needed_ = n;
  }

  int64_t param_count() const override { return positions_ * dim_; }

  void encode(int64_t n, float* out) const override {
    check_rows(n);
    // The first n rows are one contiguous block: one slice per thread.
    const size_t count = size_t(n) * dim_;
#pragma omp parallel
    {
      const size_t t = omp_get_thread_num(), T = omp_get_num_threads();
      const size_t chunk = ((count + T - 1) / T + 15) / 16 * 16;  // ≥ count / T, whole lines
      const size_t begin = std::min(count, t * chunk), end = std::min(count, begin + chunk);
      std::memcpy(out + begin, table_.data() + begin, (end - begin) * sizeof(float));
    }
  }

  void add_to(float* x, int64_t rows, int64_t n) const override {
    check_rows(n);
    add_table(table_.data(), x, rows, n);
  }

  void save_weights(const std::string& dir) const override {
    check_ready();
    std::filesystem::create_directories(dir);
    write_npy(dir + "/table.npy", {positions_, dim_}, table_.data());
  }

  // Any table with at least the n rows init() asked for and width D loads (a longer trained
  // table is used through its prefix), unless the spec fixed positions=.
  void load_weights(const std::string& dir) override {
    check_ready();
    const std::string path = dir + "/table.npy";
    NpyArray a = read_npy(path);
    if (a.shape.size() != 2 || a.shape[1] != dim_ || a.shape[0] < needed_ ||
        (rows_ && a.shape[0] != rows_))
      throw RuntimeError(
          path + ": expected a [" +
          (rows_ ? std::to_string(rows_) : ">=" + std::to_string(needed_)) + "," +
          std::to_string(dim_) + "] table, got a " + std::to_string(a.shape.size()) + "-D array" +
          (a.shape.size() == 2
               ? " [" + std::to_string(a.shape[0]) + "," + std::to_string(a.shape[1]) + "]"
               : ""));
    table_ = FloatBuffer(a.data.size());
    std::copy(a.data.begin(), a.data.end(), table_.data());
    positions_ = a.shape[0];
  }

 private:
  int64_t rows_;  // 0: as many rows as the sequence length given to init()
  int64_t needed_ = 0;
  FloatBuffer table_;
};

}  // namespace

KindInfo learned_kind() {
  return {
      "learned",
      "a free [L, D] table, one N(0,1)-initialized row per position (BERT/GPT-2 style); "
      "L·D parameters, the O(n·D) memory baseline; weights file DIR/table.npy [L, D]",
      {{"positions", ParamSpec::Kind::Int, "0", "table rows L (0 = the sequence length)", 0, 1e15}},
      [](const Params& p) { return std::make_unique<Learned>(p.get_int("positions")); }};
}

}  // namespace attn::positional
