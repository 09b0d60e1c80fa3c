// Row-major single-precision GEMM through oneDNN, and the machine's measured fp32 ceiling.
#pragma once

#include <cstdint>

namespace attn::kernels {

// C[M,N] = alpha · op(A)·op(B) + beta · C, row-major; trans_b means B is stored [N,K].
// Inside an OpenMP parallel region oneDNN runs it on the calling thread only.
void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// Median GFLOP/s of oneDNN's sgemm on an n x n x n product with the current OpenMP thread
// count: the practical fp32 ceiling every kernel's efficiency is quoted against.
double measure_sgemm_gflops(int64_t n = 2048, int reps = 7);

}  // namespace attn::kernels
