// Pieces of `nystrom` (attention/nystrom.cpp) that tests check on their own.
#pragma once

#include <cstdint>

namespace attn::nystrom {

// First row of landmark segment i when n rows are split into m consecutive segments:
// floor(i·n/m), so segment sizes differ by at most one and every row is in exactly one
// segment (docs/ALGORITHMS.md §Nyström). Segment i is [segment_start(i), segment_start(i+1)).
inline int64_t segment_start(int64_t i, int64_t n, int64_t m) {
  return i * n / m;
}

// z ≈ A⁺ for the m×m matrix a (row-major) by `iterations` steps of the paper's iteration
//   Z_{j+1} = ¼·Z_j·(13I − A Z_j (15I − A Z_j (7I − A Z_j))),  Z_0 = Aᵀ / (‖A‖₁ ‖A‖∞)
// (arXiv:2102.03902, its approximation of the Moore-Penrose inverse after Razavi et al. 2014;
// ‖A‖₁ the largest column sum of |a_ij|, ‖A‖∞ the largest row sum; docs/ALGORITHMS.md
// §Nyström). scratch holds 3·m·m floats. The sgemm calls run on the calling thread when
// called inside a parallel region.
void iterative_pinv(const float* a, int64_t m, int iterations, float* z, float* scratch);

}  // namespace attn::nystrom
