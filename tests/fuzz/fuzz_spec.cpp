// Variant specs on tiny shapes: parse, validate and forward. The first 4 bytes pick the shape
// and input seed, the rest is the spec. A spec that validates must produce finite outputs;
// only UsageError / RuntimeError may be thrown.
#include <cmath>
#include <cstdint>

#include "attention/registry.h"
#include "fuzz_util.h"
#include "harness/inputs.h"

namespace {

// Keeps each input fast and small: the fuzzer looks for wrong answers and crashes, not for
// the (legitimate) cost of a big instance.
constexpr double kMaxFlops = 2e7, kMaxExtraBytes = 64.0 * (1 << 20);

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  attn::Shape s;
  s.nq = 1 + data[0] % 48;
  s.dim = 1 + data[1] % 16;
  s.heads = 1 + (data[2] & 1);
  s.batch = 1 + ((data[2] >> 1) & 1);
  s.causal = (data[2] >> 2) & 1;
  s.nk = (!s.causal && ((data[2] >> 3) & 1)) ? 1 + data[3] % 48 : s.nq;
  const uint64_t seed = data[3];
  const std::string spec(reinterpret_cast<const char*>(data) + 4, size - 4);
  attn::fuzz::expect_clean_errors([&] {
    auto a = attn::make_attention(spec);
    a->validate(s);
    if (!(a->flops(s) <= kMaxFlops) || !(a->extra_bytes(s) <= kMaxExtraBytes)) return;
    attnbench::Inputs in{attn::Tensor(s.batch, s.heads, s.nq, s.dim),
                         attn::Tensor(s.batch, s.heads, s.nk, s.dim),
                         attn::Tensor(s.batch, s.heads, s.nk, s.dim)};
    attnbench::fill_gaussian(in.q, seed, 1);
    attnbench::fill_gaussian(in.k, seed, 2);
    attnbench::fill_gaussian(in.v, seed, 3);
    attn::Tensor out(s.batch, s.heads, s.nq, s.dim);
    a->forward(s, in.q, in.k, in.v, out);
    for (int64_t i = 0; i < out.size(); ++i)
      if (!std::isfinite(out.data()[i]))
        attn::fuzz::fail("non-finite output of '" + spec + "' at " + s.str() + ", element " +
                         std::to_string(i));
  });
  return 0;
}
