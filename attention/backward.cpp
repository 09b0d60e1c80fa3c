// The checks every backward pass shares (attention/attention.h): the one place that decides
// what a valid dO and a matching Saved are, so that no variant can forget them.
#include <cmath>

#include "attention/attention.h"

namespace attn {
namespace {

std::string dims(const Tensor& t) {
  return "[" + std::to_string(t.batch()) + "," + std::to_string(t.heads()) + "," +
         std::to_string(t.seq()) + "," + std::to_string(t.dim()) + "]";
}

std::string dims(int64_t b, int64_t h, int64_t n, int64_t d) {
  return "[" + std::to_string(b) + "," + std::to_string(h) + "," + std::to_string(n) + "," +
         std::to_string(d) + "]";
}

bool has_shape(const Tensor& t, int64_t b, int64_t h, int64_t n, int64_t d) {
  return t.batch() == b && t.heads() == h && t.seq() == n && t.dim() == d;
}

bool same_problem(const Shape& a, const Shape& b) {
  return a.batch == b.batch && a.heads == b.heads && a.nq == b.nq && a.nk == b.nk &&
         a.dim == b.dim && a.causal == b.causal && a.softmax_scale() == b.softmax_scale();
}

void check_grad_shape(const Tensor& t, int64_t n, const Shape& s, const char* what) {
  if (!has_shape(t, s.batch, s.heads, n, s.dim))
    throw UsageError(std::string("backward: ") + what + " is " + dims(t) + ", expected " +
                     dims(s.batch, s.heads, n, s.dim));
}

}  // namespace

void check_grad_output(const Shape& s, const Tensor& dout) {
  if (!has_shape(dout, s.batch, s.heads, s.nq, s.dim))
    throw UsageError("dO has shape " + dims(dout) + "; it must have the output's shape " +
                     dims(s.batch, s.heads, s.nq, s.dim) + " ([B,H,Nq,D])");
  const float* x = dout.data();
  for (int64_t e = 0; e < dout.size(); ++e)
    if (!std::isfinite(x[e]))
      throw UsageError("dO holds a non-finite value (" + std::to_string(x[e]) + ") at element " +
                       std::to_string(e) + "; every entry of dO must be finite");
}

void Attention::forward_train(const Shape&, const Tensor&, const Tensor&, const Tensor&, Tensor&,
                              Saved&) {
  throw UsageError(name() + " has no backward yet");
}

void Attention::compute_backward(const Shape&, const Tensor&, const Tensor&, const Tensor&,
                                 const Tensor&, const Saved&, const Tensor&, Grads) {
  throw UsageError(name() + " has no backward yet");
}

void Attention::backward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                         const Tensor& out, const Saved& saved, const Tensor& dout, Grads g) {
  if (!has_backward()) throw UsageError(name() + " has no backward yet");
  check_grad_output(s, dout);
  if (saved.variant != name() || !same_problem(saved.shape, s))
    throw UsageError("backward of " + name() + " on " + s.str() + ": the saved state comes from " +
                     (saved.variant.empty() ? std::string("no forward_train") : saved.variant) +
                     (saved.variant.empty() ? "" : " on " + saved.shape.str()) +
                     "; run forward_train on the same problem first");
  check_grad_shape(g.dq, s.nq, s, "dQ");
  check_grad_shape(g.dk, s.nk, s, "dK");
  check_grad_shape(g.dv, s.nk, s, "dV");
  check_grad_shape(out, s.nq, s, "the output");
  compute_backward(s, q, k, v, out, saved, dout, g);
}

void Attention::start_saved(Saved& saved, const Shape& s, size_t floats) const {
  saved.variant = name();
  saved.shape = s;
  saved.floats = FloatBuffer(floats);
}

}  // namespace attn
