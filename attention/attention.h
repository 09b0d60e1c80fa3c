// The one interface every attention variant implements.
#pragma once

#include <cstdint>
#include <map>
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

  // Random state (LSH rotations, Performer features) as .npy files in a directory, so a run
  // can be reproduced exactly elsewhere. Variants without random state throw UsageError.
  virtual void save_random(const std::string& dir, const Shape& s) const;
  virtual void load_random(const std::string& dir, const Shape& s);
};

}  // namespace attn
