// `attnbench inputs`: the generated inputs of one distribution as q.npy, k.npy, v.npy, so that
// `apply`, NumPy or PyTorch can be fed exactly what run and sweep measure. For a recall
// distribution also its answer key (recall.json: the planted pairs, and the codebook as
// recall_codebook.npy), so recall can be scored outside attnbench.
#include <boost/program_options.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "attention/npy.h"
#include "harness/cli.h"
#include "harness/inputs.h"

namespace attnbench {
namespace {

namespace po = boost::program_options;

void write_tensor(const std::string& path, const attn::Tensor& t) {
  attn::write_npy(path, {t.batch(), t.heads(), t.seq(), t.dim()}, t.data());
}

void write_probe(const std::string& dir, const attn::Shape& s, const RecallProbe& probe) {
  nlohmann::json j = {{"pairs", probe.pairs},
                      {"beta", probe.beta},
                      {"heads", s.heads},
                      {"batch", s.batch},
                      {"queries", nlohmann::json::array()}};
  for (const auto& head : probe.queries) {  // [b·H + h]
    nlohmann::json list = nlohmann::json::array();
    for (const RecallQuery& q : head)
      list.push_back({{"row", q.row}, {"key", q.key}, {"pair", q.pair}, {"depth", q.depth}});
    j["queries"].push_back(list);
  }
  std::ofstream(dir + "/recall.json") << j.dump(1) << "\n";
  attn::write_npy(dir + "/recall_codebook.npy", {s.batch * s.heads, probe.pairs, s.dim},
                  probe.codebook.data());
}

}  // namespace

int cmd_inputs(const Args& args) {
  std::string dist = "gaussian", out;
  int64_t n = 0, dim = 64, heads = 8, batch = 1;
  uint64_t seed = 0;
  bool overwrite = false;
  po::options_description opts("attnbench inputs");
  opts.add_options()("help,h", "this help")("dist", po::value(&dist)->default_value("gaussian"),
                                            "input distribution (attnbench list)")(
      "seq", po::value(&n)->required(), "sequence length N")(
      "dim", po::value(&dim)->default_value(64), "head dim D")(
      "heads", po::value(&heads)->default_value(8), "heads H")(
      "batch", po::value(&batch)->default_value(1), "batch B")(
      "seed", po::value(&seed)->default_value(0), "input seed")(
      "out", po::value(&out)->required(), "directory for q.npy, k.npy, v.npy ([B,H,N,D] float32)")(
      "overwrite", po::bool_switch(&overwrite), "replace inputs already in --out");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  po::notify(vm);
  if (dist.rfind("npy:", 0) == 0)
    throw attn::UsageError("--dist npy:DIR reads inputs; `inputs` writes generated ones");
  const attn::Shape s{batch, heads, n, n, dim, false};
  s.check();
  const double bytes = 3.0 * double(s.heads_total()) * double(n) * double(dim) * sizeof(float);
  attn::check_fits_in_memory(bytes, "inputs at n=" + std::to_string(n));
  std::error_code ec;
  if (!overwrite && std::filesystem::exists(out + "/q.npy", ec))
    throw attn::UsageError("--out " + out + " already holds q.npy; pass --overwrite to replace it");
  std::filesystem::create_directories(out, ec);
  if (ec) throw attn::RuntimeError("--out: cannot create directory " + out + ": " + ec.message());
  const Inputs in = make_inputs(s, dist, seed);
  write_tensor(out + "/q.npy", in.q);
  write_tensor(out + "/k.npy", in.k);
  write_tensor(out + "/v.npy", in.v);
  if (const auto probe = recall_probe(s, dist, seed)) write_probe(out, s, *probe);
  return 0;
}

}  // namespace attnbench
