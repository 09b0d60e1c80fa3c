// Shared helpers for the tests: seeded inputs and error against the fp64 reference.
#pragma once

#include <omp.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include <cmath>
#include <vector>

#include "attention/reference.h"
#include "attention/registry.h"
#include "harness/inputs.h"

namespace attn::test {

inline attnbench::Inputs random_inputs(const Shape& s, uint64_t seed) {
  attnbench::Inputs in{Tensor(s.batch, s.heads, s.nq, s.dim), Tensor(s.batch, s.heads, s.nk, s.dim),
                       Tensor(s.batch, s.heads, s.nk, s.dim)};
  attnbench::fill_gaussian(in.q, seed, 1);
  attnbench::fill_gaussian(in.k, seed, 2);
  attnbench::fill_gaussian(in.v, seed, 3);
  return in;
}

// ‖out − ref‖_F / ‖ref‖_F over the ref.size() values of out.
inline double relative_error(const float* out, const std::vector<double>& ref) {
  double e = 0, r = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(out[i]) - ref[i];
    e += d * d, r += ref[i] * ref[i];
  }
  return r > 0 ? std::sqrt(e / r) : std::sqrt(e);
}
inline double relative_error(const Tensor& out, const std::vector<double>& ref) {
  return relative_error(out.data(), ref);
}

inline bool all_finite(const Tensor& t) {
  for (int64_t i = 0; i < t.size(); ++i)
    if (!std::isfinite(t.data()[i])) return false;
  return true;
}

inline Tensor run_variant(const std::string& spec, const Shape& s, const attnbench::Inputs& in) {
  auto a = make_attention(spec);
  a->validate(s);
  Tensor out(s.batch, s.heads, s.nq, s.dim);
  a->forward(s, in.q, in.k, in.v, out);
  return out;
}

// The UsageError message of building `spec` and validating it on `s` ("" if accepted).
inline std::string usage_error(const std::string& spec, const Shape& s) {
  try {
    make_attention(spec)->validate(s);
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

// Runs `f` with the OpenMP thread count set to `threads`, restoring it afterwards.
template <class F>
auto with_threads(int threads, F&& f) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto r = f();
  omp_set_num_threads(before);
  return r;
}

inline bool bit_identical(const Tensor& a, const Tensor& b) {
  return a.size() == b.size() && std::equal(a.data(), a.data() + a.size(), b.data());
}

struct CliResult {
  int code;            // exit code, -1 if the process did not exit normally
  std::string output;  // stdout and stderr
};

// Runs a shell command line and captures its output and exit code.
inline CliResult run_shell(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

#ifdef ATTNBENCH_EXE
// Runs the attnbench executable built alongside the tests.
inline CliResult run_cli(const std::string& args) {
  return run_shell(std::string(ATTNBENCH_EXE) + " " + args);
}
#endif

}  // namespace attn::test
