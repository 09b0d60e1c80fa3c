#include <boost/program_options.hpp>
#include <filesystem>
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

std::string dims(const attn::Tensor& t) {
  return "[" + std::to_string(t.batch()) + "," + std::to_string(t.heads()) + "," +
         std::to_string(t.seq()) + "," + std::to_string(t.dim()) + "]";
}

// Writes t to DIR/NAME with the rank of the input it is the gradient of.
void write_grad(const std::string& dir, const std::string& name, const attn::Tensor& t,
                size_t rank) {
  std::vector<int64_t> shape = {t.batch(), t.heads(), t.seq(), t.dim()};
  shape.erase(shape.begin(), shape.begin() + (4 - rank));
  attn::write_npy(dir + "/" + name, shape, t.data());
}

// The backward of the forward just run: reads dO (the output's shape), writes dq, dk, dv.
void write_gradients(attn::Attention& a, const attn::Shape& s, const attn::Tensor& q,
                     const attn::Tensor& k, const attn::Tensor& v, const attn::Tensor& out,
                     const attn::Saved& saved, const std::string& dout_path, const std::string& dir,
                     size_t q_rank, size_t kv_rank) {
  size_t rank = 0;
  attn::Tensor dout = read_tensor(dout_path, rank);
  if (dout.batch() != s.batch || dout.heads() != s.heads || dout.seq() != s.nq ||
      dout.dim() != s.dim)
    throw attn::UsageError("--dout " + dout_path + " is " + dims(dout) +
                           "; it must have the output's shape " + dims(out) + " ([B,H,Nq,D])");
  attn::Tensor dq(s.batch, s.heads, s.nq, s.dim), dk(s.batch, s.heads, s.nk, s.dim),
      dv(s.batch, s.heads, s.nk, s.dim);
  a.backward(s, q, k, v, out, saved, dout, {dq, dk, dv});
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    throw attn::RuntimeError("--grads-out: cannot create directory " + dir + ": " + ec.message());
  write_grad(dir, "dq.npy", dq, q_rank);
  write_grad(dir, "dk.npy", dk, kv_rank);
  write_grad(dir, "dv.npy", dv, kv_rank);
}

}  // namespace

int cmd_apply(const Args& args) {
  namespace po = boost::program_options;
  std::string spec, qp, kp, vp, outp, random_out, random_in, doutp, grads_out;
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
      "random-in", po::value(&random_in), "import the variant's random state (.npy) from DIR")(
      "dout", po::value(&doutp),
      "gradient of the loss w.r.t. the output .npy (shape of out); "
      "with --grads-out, runs the backward pass")(
      "grads-out", po::value(&grads_out),
      "write DIR/dq.npy, dk.npy, dv.npy (float32, shapes of "
      "q, k, v)");
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(opts).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  po::notify(vm);
  set_threads(threads);
  if (doutp.empty() != grads_out.empty())
    throw attn::UsageError("--dout and --grads-out go together: give both to run the backward");

  auto attention = attn::make_attention(spec);
  if (!doutp.empty() && !attention->has_backward())
    throw attn::UsageError(attention->name() +
                           " has no backward yet; `attnbench list` marks the variants with one");
  size_t q_rank = 0, rank = 0;
  attn::Tensor q = read_tensor(qp, q_rank), k = read_tensor(kp, rank), v = read_tensor(vp, rank);
  const attn::Shape s = attn::attention_shape(q, k, v, causal, scale);
  attention->validate(s);
  if (!random_in.empty()) attention->load_random(random_in, s);
  attn::Tensor out(s.batch, s.heads, s.nq, s.dim);
  attn::Saved saved;
  if (doutp.empty())
    attention->forward(s, q, k, v, out);
  else
    attention->forward_train(s, q, k, v, out, saved);
  if (!random_out.empty()) attention->save_random(random_out, s);
  std::vector<int64_t> shape = {s.batch, s.heads, s.nq, s.dim};
  shape.erase(shape.begin(), shape.begin() + (4 - q_rank));
  attn::write_npy(outp, shape, out.data());
  if (!doutp.empty())
    write_gradients(*attention, s, q, k, v, out, saved, doutp, grads_out, q_rank, rank);
  return 0;
}

}  // namespace attnbench
