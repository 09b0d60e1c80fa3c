// The one interface every attention variant implements.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "attention/reference.h"
#include "attention/tensor.h"

namespace attn {

// Resolved parameter values of an instance, as text (for listing and result files).
using ParamValues = std::map<std::string, std::string>;

// The keys one query row visits, per hash round (one round for fixed patterns). Used by the
// harness's attention-mass coverage metric. Keys may repeat across rounds, not within one.
using VisitedKeys = std::vector<std::vector<int64_t>>;

class TilePlan;  // attention/plan.h

// What a training forward keeps for its backward (the row log-sum-exps of the flash-style
// variants, the probabilities of full_materialized): declared and sized per variant by
// Attention::saved_bytes(), apart from scratch (extra_bytes), so that training memory is
// measured honestly. The caller owns it between forward_train() and backward(), so an
// instance keeps no hidden state from one call to the other (docs/DESIGN.md §Backward).
struct Saved {
  std::string variant;  // name() of the variant that filled it
  Shape shape;          // the problem it was saved for
  FloatBuffer floats;   // through alloc_floats, so the harness's allocation hook counts it
};

// Gradients of a scalar loss L with respect to q, k, v given dO = ∂L/∂out; each has the shape
// of the tensor it differentiates (allocated by the caller).
struct Grads {
  Tensor& dq;
  Tensor& dk;
  Tensor& dv;
};

class Attention {
 public:
  virtual ~Attention() = default;

  virtual std::string name() const = 0;
  virtual ParamValues params() const { return {}; }

  // Throws UsageError with a message a user can act on if this variant cannot run `s`.
  virtual void validate(const Shape& s) const { s.check(); }

  // out[b,h,i,:] = attention of query row i over the keys this variant visits.
  // q: [B,H,Nq,D], k and v: [B,H,Nk,D], out: [B,H,Nq,D]. Call validate() first.
  virtual void forward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                       Tensor& out) = 0;

  // Model FLOPs (4·D per visited (query, key) pair, docs/ALGORITHMS.md §FLOPs) and the peak of
  // memory allocated during forward() beyond q, k, v and out (analytic).
  virtual double flops(const Shape& s) const = 0;
  virtual double extra_bytes(const Shape& s) const = 0;

  // Sparsity pattern: fills `out` with the keys of query row `i` of head (b, h) for the inputs
  // of the last forward(). Returns false for variants that visit every key or have no pattern.
  virtual bool visited_keys(const Shape& s, int64_t b, int64_t h, int64_t i,
                            VisitedKeys& out) const {
    return false;
  }
  // The tile plan of a plan-based variant (attention/plan.h) for shape `s`, validated and
  // built once per shape; null for variants that are not plan builders.
  virtual std::shared_ptr<const TilePlan> plan(const Shape& s) const { return nullptr; }
  // The dense counterpart this variant approximates, when it is not plain dense attention on
  // the given q, k (e.g. shared-QK LSH). Empty = plain dense attention.
  virtual std::string dense_counterpart() const { return {}; }
  // That counterpart as a problem the fp64 reference can solve: effective keys (same shape as
  // k) and an element mask. Returns false when it is plain dense attention on (q, k). The
  // harness measures accuracy and coverage against this problem.
  virtual bool counterpart_problem(const Shape& s, const Tensor& q, const Tensor& k, Tensor& keys,
                                   ElementMask& mask) const {
    return false;
  }

  // ---- Backward (training) ----
  // Whether backward() is implemented; variants without one are listed as "no backward yet".
  virtual bool has_backward() const { return false; }
  // Bytes forward_train() keeps in Saved for backward() (analytic), and the peak of memory
  // backward() allocates beyond q, k, v, out, saved, dO and the gradients.
  virtual double saved_bytes(const Shape& s) const { return 0.0; }
  virtual double backward_extra_bytes(const Shape& s) const { return 0.0; }
  // Model FLOPs of backward(): 2.5 x the forward's matmul FLOPs of the same pairs, the
  // convention of FlashAttention's benchmarks (docs/ALGORITHMS.md §Backward FLOPs).
  virtual double backward_flops(const Shape& s) const { return 2.5 * flops(s); }
  // forward() that also fills `saved` with what backward() needs. Throws UsageError for a
  // variant without a backward.
  virtual void forward_train(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                             Tensor& out, Saved& saved);
  // dq, dk, dv of L given dout = ∂L/∂out, for the out and saved of forward_train() on the same
  // q, k, v. Throws UsageError for a variant without a backward, a dout that is not finite or
  // not of out's shape, or a Saved from another variant or shape; then calls compute_backward.
  void backward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                const Tensor& out, const Saved& saved, const Tensor& dout, Grads g);

  // Random state (LSH rotations, Performer features) as .npy files in a directory, so a run
  // can be reproduced exactly elsewhere. Variants without random state throw UsageError.
  virtual void save_random(const std::string& dir, const Shape& s) const;
  virtual void load_random(const std::string& dir, const Shape& s);

 protected:
  // backward() after its checks: the inputs are valid and the gradients allocated.
  virtual void compute_backward(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                                const Tensor& out, const Saved& saved, const Tensor& dout, Grads g);
  // Starts `saved` for shape s with `floats` floats (uninitialized).
  void start_saved(Saved& saved, const Shape& s, size_t floats) const;
};

// UsageError unless dout is finite and has the shape [B, H, Nq, D] of the output of s.
void check_grad_output(const Shape& s, const Tensor& dout);

}  // namespace attn
