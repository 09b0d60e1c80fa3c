// Positional encodings added to attention inputs: sinusoidal (fixed), learned (a full n×D
// table, the memory baseline) and axial (Reformer's factorized table).
// Spec strings look like variant specs: "kind[:key=value,...]", e.g.
// "axial:shape=64x64,dims=32x32,order=row" (see describe_kinds()).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attention/registry.h"
#include "attention/tensor.h"

namespace attn::positional {

// An encoding E: positions 0…n−1 → R^D. Lifecycle: make_encoding(spec), init(n, dim, seed)
// (validates and sizes the tables), optionally load_weights(dir), then encode/add_to.
class Encoding {
 public:
  virtual ~Encoding() = default;
  virtual std::string kind() const = 0;

  // Sizes the parameters for n positions of width dim and draws them from N(0, 1) with `seed`.
  // UsageError when the spec cannot encode (n, dim); RuntimeError when the tables would not
  // fit in memory.
  virtual void init(int64_t n, int64_t dim, uint64_t seed) = 0;
  int64_t positions() const { return positions_; }  // how many positions the tables cover
  int64_t dim() const { return dim_; }

  virtual int64_t param_count() const = 0;
  double param_bytes() const { return double(param_count()) * sizeof(float); }

  // out[j·dim + c] = E(j)_c for j < n (n ≤ positions()).
  virtual void encode(int64_t n, float* out) const = 0;
  // x[r, j, :] += E(j) for r < rows, j < n: x is a contiguous [rows, n, dim] array.
  virtual void add_to(float* x, int64_t rows, int64_t n) const;
  // Broadcast over batch and heads of a [B, H, N, D] tensor (D must equal dim()).
  void add_to(Tensor& x) const;

  // Parameter tables as .npy files in dir (see each kind's doc for the file names); loading
  // checks every shape against the spec and throws RuntimeError naming the mismatch.
  virtual void save_weights(const std::string& dir) const;
  virtual void load_weights(const std::string& dir);

 protected:
  // std::logic_error unless init() succeeded.
  void check_ready() const;
  // check_ready(), then UsageError unless 0 < n ≤ positions().
  void check_rows(int64_t n) const;
  // x[r, j, :] += table[j, :] for every r < rows, j < n.
  void add_table(const float* table, float* x, int64_t rows, int64_t n) const;
  int64_t positions_ = 0, dim_ = 0;
};

struct KindInfo {
  std::string name;
  std::string doc;
  std::vector<ParamSpec> params;
  std::function<std::unique_ptr<Encoding>(const Params&)> make;
};

// Every kind, in listing order.
const std::vector<KindInfo>& kinds();
// Parses and validates "kind[:key=value,...]"; UsageError on anything invalid, saying what is.
std::unique_ptr<Encoding> make_encoding(const std::string& spec);
// The kinds with parameters and docs, formatted like `attnbench list`.
std::string describe_kinds();

// Helpers shared by the kinds.
// "64x64x3" -> {64, 64, 3}; UsageError (naming `what`) on anything but positive integers.
std::vector<int64_t> parse_factors(const std::string& text, const std::string& what);
// i.i.d. N(0,1) values whose element e depends only on (seed, stream, e).
void fill_normal(float* p, int64_t count, uint64_t seed, uint64_t stream);
// Reads a .npy table and checks its shape is [rows, cols] (unit dimensions ignored, so
// Hugging Face's (l1, 1, d1) parameter layout loads as is).
std::vector<float> read_table(const std::string& path, int64_t rows, int64_t cols);

KindInfo sinusoidal_kind();
KindInfo learned_kind();
KindInfo axial_kind();

}  // namespace attn::positional
