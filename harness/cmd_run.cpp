#include <omp.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "attention/kernels/gemm.h"
#include "attention/positional/positional.h"
#include "attention/registry.h"
#include "harness/accuracy.h"
#include "harness/cli.h"
#include "harness/inputs.h"
#include "harness/posenc_hook.h"

namespace attnbench {
namespace {

double median_seconds(attn::Attention& a, const attn::Shape& s, const Inputs& in, attn::Tensor& out,
                      int reps) {
  a.forward(s, in.q, in.k, in.v, out);  // warm-up
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    a.forward(s, in.q, in.k, in.v, out);
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

}  // namespace

int cmd_run(const Args& args) {
  namespace po = boost::program_options;
  std::vector<std::string> specs;
  std::string seqs, posenc;
  attn::Shape base;
  int threads = 0, reps = 5;
  uint64_t seed = 0;
  po::options_description opts("attnbench run");
  opts.add_options()("help,h", "this help")("variant", po::value(&specs)->required(),
                                            "variant spec, repeatable (see attnbench list)")(
      "seq", po::value(&seqs)->required(), "sequence lengths, e.g. 1024,2048")(
      "dim", po::value(&base.dim)->default_value(64), "head dim D")(
      "heads", po::value(&base.heads)->default_value(8), "heads H")(
      "batch", po::value(&base.batch)->default_value(1), "batch B")(
      "causal", po::bool_switch(&base.causal), "causal mask (j <= i)")(
      "threads", po::value(&threads)->default_value(0), "OpenMP threads (0 = all cores)")(
      "seed", po::value(&seed)->default_value(0), "input seed")(
      "reps", po::value(&reps)->default_value(5), "timed repetitions (median reported)")(
      "posenc", po::value(&posenc),
      "positional encoding added to q and k (attnbench posenc --list)");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  po::notify(vm);
  if (reps < 1) throw attn::UsageError("--reps must be >= 1");
  set_threads(threads);
  std::vector<int64_t> ns = parse_int_list(seqs, "--seq");

  // Parse every spec and check every shape before any measurement starts.
  std::vector<std::unique_ptr<attn::Attention>> variants;
  for (const auto& spec : specs) variants.push_back(attn::make_attention(spec));
  for (int64_t n : ns) {
    attn::Shape s = base;
    s.nq = s.nk = n;
    if (!posenc.empty()) attn::positional::make_encoding(posenc)->init(n, s.dim, 0);
    for (auto& a : variants) {
      a->validate(s);
      double inputs = 4.0 * s.heads_total() * n * s.dim * sizeof(float);
      attn::check_fits_in_memory(inputs + a->extra_bytes(s),
                                 a->name() + " at n=" + std::to_string(n));
    }
  }

  const double ceiling = attn::kernels::measure_sgemm_gflops();
  std::printf("oneDNN sgemm ceiling: %.1f GFLOP/s with %d threads (2048^3, median of 7)\n", ceiling,
              omp_get_max_threads());
  std::printf("%-28s %7s %10s %9s %7s %12s %10s %10s  %s\n", "variant", "n", "ms", "GFLOP/s",
              "%sgemm", "extra_MiB", "rel_err", "max_abs", "reference rows");
  for (int64_t n : ns) {
    attn::Shape s = base;
    s.nq = s.nk = n;
    Inputs in = make_inputs(s, "gaussian", seed);
    apply_posenc(posenc, in);  // the reference below sees the same encoded inputs
    ReferenceSample ref = compute_reference(s, in.q, in.k, in.v, 4096, 256, seed);
    attn::Tensor out(s.batch, s.heads, s.nq, s.dim);
    for (size_t i = 0; i < variants.size(); ++i) {
      attn::Attention& a = *variants[i];
      const double sec = median_seconds(a, s, in, out, reps);
      const Accuracy acc = measure_accuracy(s, ref, out);
      const double gflops = a.flops(s) / sec / 1e9;
      std::printf("%-28s %7lld %10.3f %9.1f %6.1f%% %12.3f %10.2e %10.2e  %s\n", specs[i].c_str(),
                  (long long)n, sec * 1e3, gflops, 100.0 * gflops / ceiling,
                  a.extra_bytes(s) / (1 << 20), acc.rel_fro, acc.max_abs,
                  ref.all_rows ? "all" : (std::to_string(ref.rows.size()) + " sampled").c_str());
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace attnbench
