#include "attention/positional/positional.h"

#include <cmath>
#include <cstdlib>
#include <sstream>

#include "attention/npy.h"
#include "attention/random.h"

namespace attn::positional {
namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

std::string join_kind_names() {
  std::string s;
  for (const auto& k : kinds()) s += (s.empty() ? "" : ", ") + k.name;
  return s;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace

const std::vector<KindInfo>& kinds() {
  static const std::vector<KindInfo> all = {sinusoidal_kind(), learned_kind(), axial_kind()};
  return all;
}

std::unique_ptr<Encoding> make_encoding(const std::string& spec) {
  const std::string s = trim(spec);
  const size_t colon = s.find(':');
  const std::string name = trim(s.substr(0, colon));
  if (name.empty())
    throw UsageError(
        "empty positional encoding spec; expected kind[:key=value,...] with kind one of " +
        join_kind_names());
  for (const auto& k : kinds()) {
    if (k.name != name) continue;
    // parse_params needs only the name and the parameter list of a VariantInfo.
    const VariantInfo as_variant{k.name, k.doc, k.params, nullptr};
    return k.make(parse_params(as_variant, colon == std::string::npos ? "" : s.substr(colon + 1)));
  }
  throw UsageError("unknown positional encoding '" + name + "'; valid kinds: " + join_kind_names() +
                   " (see `attnbench posenc --list`)");
}

std::string describe_kinds() {
  std::ostringstream s;
  s << "Positional encodings (spec: kind[:key=value,...]; added to q and k by --posenc):\n";
  for (const auto& k : kinds()) {
    s << "\n  " << k.name << "\n      " << k.doc << "\n";
    for (const auto& p : k.params) s << "      " << p.describe() << "\n        " << p.doc << "\n";
  }
  return s.str();
}

std::vector<int64_t> parse_factors(const std::string& text, const std::string& what) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  auto fail = [&](const std::string& why) {
    throw UsageError(what + "=" + text + " " + why +
                     "; expected positive integers separated by 'x', e.g. 64x64");
  };
  while (std::getline(ss, item, 'x')) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno)
      fail("has a factor '" + item + "' that is not an integer");
    if (v <= 0) fail("has a factor " + item + " that is not positive");
    out.push_back(v);
  }
  if (out.empty() || text.back() == 'x') fail("is incomplete");
  return out;
}

void fill_normal(float* p, int64_t count, uint64_t seed, uint64_t stream) {
  RandomStream(seed, RandomDomain::kPositional, stream).fill_normal(p, count);
}

std::vector<float> read_table(const std::string& path, int64_t rows, int64_t cols) {
  NpyArray a = read_npy(path);
  auto squeeze = [](const std::vector<int64_t>& shape) {
    std::vector<int64_t> out;
    for (int64_t d : shape)
      if (d != 1) out.push_back(d);
    return out;
  };
  if (squeeze(a.shape) != squeeze({rows, cols}))
    throw RuntimeError(path + ": expected a [" + std::to_string(rows) + "," + std::to_string(cols) +
                       "] table for this spec, got " + shape_str(a.shape));
  return std::move(a.data);
}

void Encoding::check_ready() const {
  if (dim_ <= 0) throw std::logic_error(kind() + ": init() must succeed before use");
}

void Encoding::check_rows(int64_t n) const {
  check_ready();
  if (n <= 0 || n > positions_)
    throw UsageError(kind() + ": cannot encode " + std::to_string(n) +
                     " positions; its tables cover " + std::to_string(positions_));
}

void Encoding::add_to(float* x, int64_t rows, int64_t n) const {
  check_rows(n);
  FloatBuffer table(size_t(n) * dim_);
  encode(n, table.data());
  add_table(table.data(), x, rows, n);
}

void Encoding::add_table(const float* table, float* x, int64_t rows, int64_t n) const {
  const int64_t d = dim_;
#pragma omp parallel for schedule(static)
  for (int64_t rj = 0; rj < rows * n; ++rj) {
    float* xr = x + rj * d;
    const float* e = table + (rj % n) * d;
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) xr[c] += e[c];
  }
}

void Encoding::add_to(Tensor& x) const {
  if (x.dim() != dim_)
    throw UsageError(kind() + ": encoding width " + std::to_string(dim_) +
                     " does not match the head dim " + std::to_string(x.dim()));
  add_to(x.data(), x.batch() * x.heads(), x.seq());
}

void Encoding::save_weights(const std::string&) const {
  throw UsageError(kind() + " has no weights to save (it is a fixed function of the position)");
}

void Encoding::load_weights(const std::string&) {
  throw UsageError(kind() + " has no weights to load (it is a fixed function of the position)");
}

}  // namespace attn::positional
