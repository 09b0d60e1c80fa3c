// `attnbench posenc`: parameter memory and lookup speed of positional encodings, with the
// encoding and its weights as .npy so other implementations can be checked against it.
#include <omp.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>

#include "attention/npy.h"
#include "attention/positional/positional.h"
#include "harness/cli.h"
#include "harness/stats.h"

namespace attnbench {
namespace {

using Clock = std::chrono::steady_clock;
namespace pos = attn::positional;

template <class F>
double seconds(F&& f) {
  const auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Each thread copies one contiguous slice, like the row-parallel materialization it is the
// yardstick for.
void parallel_memcpy(char* dst, const char* src, size_t bytes) {
#pragma omp parallel
  {
    const size_t t = omp_get_thread_num(), T = omp_get_num_threads();
    const size_t chunk = ((bytes + T - 1) / T + 63) / 64 * 64;  // ≥ bytes / T, whole lines
    const size_t begin = std::min(bytes, t * chunk), end = std::min(bytes, begin + chunk);
    std::memcpy(dst + begin, src + begin, end - begin);
  }
}

struct Row {
  std::string kind;
  int64_t n, dim, batch;
  int64_t param_count;
  double param_bytes, full_table_bytes;
  double materialize_ms, add_ms, memcpy_gbps;
};

double mib(double bytes) {
  return bytes / (1 << 20);
}

void print_row(const Row& r) {
  const double out_bytes = double(r.n) * r.dim * sizeof(float);
  const double gbps = out_bytes / (r.materialize_ms * 1e-3) / 1e9;
  std::printf("%-36s %7lld %5lld %11lld %11.3f %10.3f %8.3f%% %10.3f %8.2f %7.1f%% %9.3f\n",
              r.kind.c_str(), (long long)r.n, (long long)r.dim, (long long)r.param_count,
              mib(r.param_bytes), mib(r.full_table_bytes),
              100.0 * r.param_bytes / r.full_table_bytes, r.materialize_ms, gbps,
              100.0 * gbps / r.memcpy_gbps, r.add_ms);
  std::fflush(stdout);
}

nlohmann::json to_json(const Row& r, int threads) {
  const double out_bytes = double(r.n) * r.dim * sizeof(float);
  return {{"kind", r.kind},
          {"n", r.n},
          {"dim", r.dim},
          {"param_count", r.param_count},
          {"param_bytes", r.param_bytes},
          {"full_table_bytes", r.full_table_bytes},
          {"materialize_ms", r.materialize_ms},
          {"add_ms", r.add_ms},
          {"batch", r.batch},
          {"threads", threads},
          {"materialize_gbps", out_bytes / (r.materialize_ms * 1e-3) / 1e9},
          {"memcpy_gbps", r.memcpy_gbps}};
}

}  // namespace

int cmd_posenc(const Args& args) {
  namespace po = boost::program_options;
  std::vector<std::string> specs;
  std::string seqs, out, weights_out, weights_in, json;
  int64_t dim = 0, batch = 1;
  int threads = 0, reps = 7;
  uint64_t seed = 0;
  po::options_description opts("attnbench posenc");
  opts.add_options()("help,h", "this help")("list", "list the encoding kinds and their parameters")(
      "kind", po::value(&specs), "encoding spec, repeatable, e.g. axial:shape=64x64,dims=32x32")(
      "seq", po::value(&seqs), "sequence lengths n, e.g. 4096,65536")(
      "dim", po::value(&dim), "encoding width D (the head dim)")(
      "batch", po::value(&batch)->default_value(1), "batch B of the [B, N, D] input for add")(
      "out", po::value(&out), "write the [n, D] encoding (.npy); one --kind and --seq")(
      "weights-out", po::value(&weights_out), "save the parameter tables (.npy) to DIR")(
      "weights-in", po::value(&weights_in), "load the parameter tables (.npy) from DIR")(
      "json", po::value(&json), "write posenc.json rows (see results_schema) to FILE")(
      "threads", po::value(&threads)->default_value(0), "OpenMP threads (0 = all cores)")(
      "seed", po::value(&seed)->default_value(0), "seed of the N(0,1) table initialization")(
      "reps", po::value(&reps)->default_value(7), "timed repetitions (median reported)");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  if (vm.count("list")) return std::cout << pos::describe_kinds(), 0;
  po::notify(vm);
  if (specs.empty()) throw attn::UsageError("--kind is required (see attnbench posenc --list)");
  if (seqs.empty()) throw attn::UsageError("--seq is required, e.g. --seq 4096");
  if (dim <= 0) throw attn::UsageError("--dim is required and must be a positive integer");
  if (batch <= 0) throw attn::UsageError("--batch must be a positive integer");
  if (reps < 1) throw attn::UsageError("--reps must be >= 1");
  set_threads(threads);
  const std::vector<int64_t> ns = parse_int_list(seqs, "--seq");
  const bool single = specs.size() == 1 && ns.size() == 1;
  for (const auto* opt : {&out, &weights_out, &weights_in})
    if (!opt->empty() && !single)
      throw attn::UsageError(
          "--out, --weights-out and --weights-in need exactly one --kind and one --seq length");

  auto prepare = [&](const std::string& spec, int64_t n) {
    auto e = pos::make_encoding(spec);
    e->init(n, dim, seed);
    if (!weights_in.empty()) e->load_weights(weights_in);
    return e;
  };
  // Every spec, size and weights file is checked before anything is timed; the tables are
  // then rebuilt one length at a time so that only one length's buffers are alive.
  for (const auto& spec : specs)
    for (int64_t n : ns) {
      auto e = prepare(spec, n);
      attn::check_fits_in_memory(
          double(n) * dim * sizeof(float) * (3 + batch) + e->param_bytes(),
          spec + " at n=" + std::to_string(n) + " (tables, encoding, input and memcpy buffers)");
      if (!weights_out.empty()) e->save_weights(weights_out);
    }

  std::printf(
      "materialize: write the [n, D] encoding; add: x += E for x [B=%lld, n, D]; memcpy: "
      "n*D*4 bytes with %d threads; medians of %d reps, interleaved\n",
      (long long)batch, omp_get_max_threads(), reps);
  std::printf("%-36s %7s %5s %11s %11s %10s %9s %10s %8s %8s %9s\n", "kind", "n", "D", "params",
              "param_MiB", "full_MiB", "of_full", "mat_ms", "mat_GB/s", "%memcpy", "add_ms");
  std::vector<Row> rows;
  for (const int64_t n : ns) {
    std::vector<std::unique_ptr<pos::Encoding>> encs;
    for (const auto& spec : specs) encs.push_back(prepare(spec, n));
    const size_t count = size_t(n) * dim, bytes = count * sizeof(float);
    attn::FloatBuffer src(count), dst(count), enc(count);
    attn::Tensor x(batch, 1, n, dim);
    pos::fill_normal(src.data(), int64_t(count), seed, 99);
    pos::fill_normal(x.data(), x.size(), seed, 100);
    // Warm-up touches every page, so that no timing includes first-touch page faults.
    parallel_memcpy(reinterpret_cast<char*>(dst.data()), reinterpret_cast<const char*>(src.data()),
                    bytes);
    for (auto& e : encs) e->encode(n, enc.data()), e->add_to(x);
    std::vector<double> copy_s;
    std::vector<std::vector<double>> mat_s(specs.size()), add_s(specs.size());
    for (int r = 0; r < reps; ++r) {
      copy_s.push_back(seconds([&] {
        parallel_memcpy(reinterpret_cast<char*>(dst.data()),
                        reinterpret_cast<const char*>(src.data()), bytes);
      }));
      for (size_t k = 0; k < specs.size(); ++k) {
        mat_s[k].push_back(seconds([&] { encs[k]->encode(n, enc.data()); }));
        add_s[k].push_back(seconds([&] { encs[k]->add_to(x); }));
      }
    }
    const double memcpy_gbps = double(bytes) / median(copy_s) / 1e9;
    std::printf("%-36s %7lld %5lld %64s %8.2f GB/s\n", "memcpy", (long long)n, (long long)dim, "",
                memcpy_gbps);
    for (size_t k = 0; k < specs.size(); ++k) {
      const pos::Encoding& e = *encs[k];
      rows.push_back({specs[k], n, dim, batch, e.param_count(), e.param_bytes(), double(bytes),
                      median(mat_s[k]) * 1e3, median(add_s[k]) * 1e3, memcpy_gbps});
      print_row(rows.back());
    }
    if (!out.empty()) {  // one kind and one length
      encs[0]->encode(n, enc.data());
      attn::write_npy(out, {n, dim}, enc.data());
    }
  }

  if (!json.empty()) {
    nlohmann::json j = {{"rows", nlohmann::json::array()}};
    for (const Row& r : rows) j["rows"].push_back(to_json(r, omp_get_max_threads()));
    attn::write_file_atomic(json, j.dump(2) + "\n");
  }
  return 0;
}

}  // namespace attnbench
