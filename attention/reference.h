// fp64 dense attention: the ground truth for every accuracy figure in attnbench.
#pragma once

#include <functional>
#include <vector>

#include "attention/tensor.h"

namespace attn {

// true = key j is visible to query i of head (b, h). Applied on top of the causal mask.
using ElementMask = std::function<bool(int64_t b, int64_t h, int64_t i, int64_t j)>;

// Logits z_ij (fp64) of query row i of head (b, h) over all Nk keys, −infinity where hidden;
// returns their log-sum-exp (−infinity for a row with no visible key).
double reference_logits(const Shape& s, const Tensor& q, const Tensor& k, int64_t b, int64_t h,
                        int64_t i, const ElementMask* mask, std::vector<double>& z);

// Softmax probabilities (fp64) of query row i of head (b, h) over all Nk keys, masked entries
// 0. A row with no visible key is all zeros.
void reference_probs(const Shape& s, const Tensor& q, const Tensor& k, int64_t b, int64_t h,
                     int64_t i, const ElementMask* mask, std::vector<double>& p);

// Output rows `rows` of head (b, h) in fp64, written to out[r * D + d]. A row with no visible
// key gets 0 (PyTorch's convention).
void reference_rows(const Shape& s, const Tensor& q, const Tensor& k, const Tensor& v, int64_t b,
                    int64_t h, const std::vector<int64_t>& rows, const ElementMask* mask,
                    double* out);

// Every output row, [B, H, Nq, D] in fp64. Parallel over rows, deterministic.
std::vector<double> reference_attention(const Shape& s, const Tensor& q, const Tensor& k,
                                        const Tensor& v, const ElementMask* mask = nullptr);

// Gradients of L with respect to q, k, v for dout = ∂L/∂out, [B,H,N,D] each in fp64: the ground
// truth of every gradient accuracy figure (docs/ALGORITHMS.md §Backward). Parallel over rows
// (dQ) and keys (dK, dV), each sum sequential: independent of the thread count.
struct ReferenceGrads {
  std::vector<double> dq, dk, dv;
};
ReferenceGrads reference_gradients(const Shape& s, const Tensor& q, const Tensor& k,
                                   const Tensor& v, const Tensor& dout,
                                   const ElementMask* mask = nullptr);

}  // namespace attn
