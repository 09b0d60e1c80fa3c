// Tensors, problem shapes and the error types every part of attn uses.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace attn {

// A mistake in what the user asked for (unknown variant, bad parameter, impossible shape):
// the CLI exits with 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Something went wrong while doing a valid request (bad file, not enough memory): exit 1.
struct RuntimeError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Size arithmetic on user-given dimensions: a result that does not fit int64 is an impossible
// shape (UsageError naming `what`), never a wrapped value that would pass a memory check.
int64_t checked_mul(int64_t a, int64_t b, const char* what);
int64_t checked_add(int64_t a, int64_t b, const char* what);
// a·b·c·... for non-negative sizes, checked.
int64_t checked_product(std::initializer_list<int64_t> sizes, const char* what);

// The attention problem: [B, H, Nq, D] queries against [B, H, Nk, D] keys and values.
struct Shape {
  int64_t batch = 1;
  int64_t heads = 1;
  int64_t nq = 0;
  int64_t nk = 0;
  int64_t dim = 64;
  bool causal = false;
  float scale = 0.0f;  // 0 means the usual 1/sqrt(dim)

  float softmax_scale() const;
  int64_t heads_total() const { return checked_mul(batch, heads, "batch*heads"); }
  // Model FLOPs of exact dense attention: 4·D per visible (query, key) pair, n(n+1)/2 pairs
  // per head when causal (docs/ALGORITHMS.md §FLOPs).
  double dense_flops() const;
  // Throws UsageError unless every size is positive, causal problems are square, and the bytes
  // of q, k, v and out fit in int64 (so sizes and estimates derived from them cannot wrap).
  void check() const;
  std::string str() const;
};

// fp32, contiguous, layout [batch, heads, seq, dim]; 64-byte aligned when it owns its memory.
class Tensor {
 public:
  Tensor() = default;
  Tensor(int64_t batch, int64_t heads, int64_t seq, int64_t dim);
  // A tensor over `data`, which the caller owns and keeps alive (a NumPy array's buffer: the
  // Python module runs variants on it without a copy). Only float alignment is required: no
  // kernel assumes more of its inputs or output.
  static Tensor view(float* data, int64_t batch, int64_t heads, int64_t seq, int64_t dim);

  int64_t batch() const { return b_; }
  int64_t heads() const { return h_; }
  int64_t seq() const { return n_; }
  int64_t dim() const { return d_; }
  int64_t size() const { return b_ * h_ * n_ * d_; }  // checked by the constructor
  size_t bytes() const { return static_cast<size_t>(size()) * sizeof(float); }

  float* data() { return data_.get(); }
  const float* data() const { return data_.get(); }
  // The [seq, dim] matrix of one (batch, head), rows contiguous with stride dim().
  float* head(int64_t b, int64_t h) { return data_.get() + (b * h_ + h) * n_ * d_; }
  const float* head(int64_t b, int64_t h) const { return data_.get() + (b * h_ + h) * n_ * d_; }

  void fill(float value);

 private:
  struct Free {
    Free() : align(64) {}
    explicit Free(size_t a) : align(a) {}
    size_t align;  // what the buffer was allocated with (see the constructor); 0 = a view
    void operator()(float* p) const;
  };
  int64_t b_ = 0, h_ = 0, n_ = 0, d_ = 0;
  std::unique_ptr<float[], Free> data_;
};

// The [B, H, N, D] sizes of an array shaped [B,H,N,D], [H,N,D] or [N,D] (leading 1s added), as
// `attnbench apply` and the Python module read q, k and v. RuntimeError naming `what` for another
// rank or a zero-length dimension.
std::array<int64_t, 4> as_bhnd(const std::vector<int64_t>& shape, const std::string& what);
// The problem of queries q against keys k and values v: RuntimeError unless q and k agree in
// batch, heads and head dim and v has the shape of k.
Shape attention_shape(const Tensor& q, const Tensor& k, const Tensor& v, bool causal, float scale);

// Aligned scratch for kernels; allocated through the same hook as Tensor so that the
// harness's memory accounting sees it.
float* alloc_floats(size_t count);
void free_floats(float* p);

struct FloatBuffer {
  explicit FloatBuffer(size_t count = 0) : p(count ? alloc_floats(count) : nullptr), n(count) {}
  ~FloatBuffer() { free_floats(p); }
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  FloatBuffer(FloatBuffer&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr, o.n = 0; }
  FloatBuffer& operator=(FloatBuffer&& o) noexcept {
    std::swap(p, o.p), std::swap(n, o.n);
    return *this;
  }
  float* data() { return p; }
  const float* data() const { return p; }
  float& operator[](size_t i) { return p[i]; }
  size_t size() const { return n; }
  float* p;
  size_t n;
};

// Refuses (RuntimeError) a request for more bytes than this machine has available,
// before anything is allocated. `what` names the request in the message.
void check_fits_in_memory(double bytes, const std::string& what);
// MemAvailable from /proc/meminfo, in bytes.
double available_memory_bytes();

}  // namespace attn
