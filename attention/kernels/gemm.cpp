#include "attention/kernels/gemm.h"

#include <oneapi/dnnl/dnnl.h>
#include <algorithm>
#include <chrono>
#include <vector>

#include "attention/tensor.h"

namespace attn::kernels {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha, A, lda, B,
                                ldb, beta, C, ldc);
  if (st != dnnl_success)
    throw RuntimeError("oneDNN sgemm failed with status " + std::to_string(int(st)));
}

double measure_sgemm_gflops(int64_t n, int reps) {
  FloatBuffer a(size_t(n) * n), b(size_t(n) * n), c(size_t(n) * n);
  for (size_t i = 0; i < a.size(); ++i) a[i] = float(i % 7) * 0.1f, b[i] = float(i % 5) * 0.1f;
  // Warm up for at least 0.3 s: the first call JIT-compiles, and a core that was idle needs a
  // moment to reach its clock; a ceiling measured cold reads low and flatters every ratio.
  const auto warm_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  do {
    sgemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  } while (std::chrono::steady_clock::now() < warm_until);
  std::vector<double> secs;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    sgemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    auto t1 = std::chrono::steady_clock::now();
    secs.push_back(std::chrono::duration<double>(t1 - t0).count());
  }
  std::nth_element(secs.begin(), secs.begin() + secs.size() / 2, secs.end());
  return 2.0 * n * n * n / secs[secs.size() / 2] / 1e9;
}

}  // namespace attn::kernels
