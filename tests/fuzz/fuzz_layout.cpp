// block_sparse layouts (layout=FILE.npy) on arbitrary bytes: the first 3 bytes pick the shape
// and block size, the rest is the .npy file. A layout must be refused with a clean error or
// run: validate + forward on a tiny shape, finite outputs, flops within the dense count.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>

#include "attention/registry.h"
#include "fuzz_util.h"
#include "harness/inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  attn::Shape s;
  s.nq = s.nk = 1 + data[0] % 64;
  s.dim = 1 + data[1] % 8;
  s.heads = 1 + (data[2] & 1);
  s.causal = (data[2] >> 1) & 1;
  const int block = 1 << ((data[2] >> 2) % 6);  // 1 ... 32
  static const std::string path = "/tmp/attn_fuzz_layout_" + std::to_string(getpid()) + ".npy";
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data) + 3, std::streamsize(size - 3));
  const std::string spec = "block_sparse:layout=" + path + ",block=" + std::to_string(block);
  attn::fuzz::expect_clean_errors([&] {
    auto a = attn::make_attention(spec);
    a->validate(s);
    const double dense = 4.0 * s.dim * double(s.nq) * double(s.nk) * double(s.heads_total());
    if (!(a->flops(s) <= dense)) attn::fuzz::fail("more pairs than dense attention has");
    attnbench::Inputs in{attn::Tensor(s.batch, s.heads, s.nq, s.dim),
                         attn::Tensor(s.batch, s.heads, s.nk, s.dim),
                         attn::Tensor(s.batch, s.heads, s.nk, s.dim)};
    attnbench::fill_gaussian(in.q, 1, 1);
    attnbench::fill_gaussian(in.k, 1, 2);
    attnbench::fill_gaussian(in.v, 1, 3);
    attn::Tensor out(s.batch, s.heads, s.nq, s.dim);
    a->forward(s, in.q, in.k, in.v, out);
    for (int64_t i = 0; i < out.size(); ++i)
      if (!std::isfinite(out.data()[i]))
        attn::fuzz::fail("non-finite output at " + s.str() + ", element " + std::to_string(i));
  });
  return 0;
}
