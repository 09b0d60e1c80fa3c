#include <boost/program_options.hpp>
#include <iostream>

#include "attention/npy.h"
#include "attention/registry.h"
#include "harness/cli.h"

namespace attnbench {
namespace {

// A [B,H,N,D], [H,N,D] or [N,D] .npy read straight into a [B,H,N,D] tensor; the shape is
// checked from the header, before anything is allocated. `rank` gets the file's rank.
attn::Tensor read_tensor(const std::string& path, size_t& rank) {
  attn::Tensor t;
  attn::read_npy_into(path, [&](const std::vector<int64_t>& shape) {
    const auto [b, h, n, d] = attn::as_bhnd(shape, path);
    rank = shape.size();
    t = attn::Tensor(b, h, n, d);
    return t.data();
  });
  return t;
}

}  // namespace

int cmd_apply(const Args& args) {
  namespace po = boost::program_options;
  std::string spec, qp, kp, vp, outp, random_out, random_in;
  bool causal = false;
  float scale = 0.0f;
  int threads = 0;
  po::options_description opts("attnbench apply");
  opts.add_options()("help,h", "this help")("variant", po::value(&spec)->required(),
                                            "variant spec (see attnbench list)")(
      "q", po::value(&qp)->required(), "queries .npy: [B,H,N,D], [H,N,D] or [N,D], float32/64")(
      "k", po::value(&kp)->required(), "keys .npy (same B, H, D as q)")(
      "v", po::value(&vp)->required(), "values .npy (same shape as k)")(
      "out", po::value(&outp)->required(), "output .npy (float32, the shape of q)")(
      "causal", po::bool_switch(&causal), "causal mask (j <= i)")(
      "scale", po::value(&scale)->default_value(0.0f), "logit scale (0 = 1/sqrt(D))")(
      "threads", po::value(&threads)->default_value(0), "OpenMP threads (0 = all cores)")(
      "random-out", po::value(&random_out), "export the variant's random state (.npy) to DIR")(
      "random-in", po::value(&random_in), "import the variant's random state (.npy) from DIR");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  po::notify(vm);
  set_threads(threads);

  auto attention = attn::make_attention(spec);
  size_t q_rank = 0, rank = 0;
  attn::Tensor q = read_tensor(qp, q_rank), k = read_tensor(kp, rank), v = read_tensor(vp, rank);
  const attn::Shape s = attn::attention_shape(q, k, v, causal, scale);
  attention->validate(s);
  if (!random_in.empty()) attention->load_random(random_in, s);
  attn::Tensor out(s.batch, s.heads, s.nq, s.dim);
  attention->forward(s, q, k, v, out);
  if (!random_out.empty()) attention->save_random(random_out, s);
  std::vector<int64_t> shape = {s.batch, s.heads, s.nq, s.dim};
  shape.erase(shape.begin(), shape.begin() + (4 - q_rank));
  attn::write_npy(outp, shape, out.data());
  return 0;
}

}  // namespace attnbench
