// The .npy reader on arbitrary bytes: a clean RuntimeError or an array whose data matches its
// shape, and only finite values.
#include <cmath>
#include <cstdint>

#include "attention/npy.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attn::fuzz::expect_clean_errors([&] {
    const attn::NpyArray a =
        attn::parse_npy(std::string(reinterpret_cast<const char*>(data), size), "fuzz.npy");
    size_t count = 1;
    for (int64_t d : a.shape) {
      if (d < 0) attn::fuzz::fail("negative dimension");
      count *= size_t(d);
    }
    if (count != a.data.size()) attn::fuzz::fail("data size differs from the shape");
    for (float v : a.data)
      if (!std::isfinite(v)) attn::fuzz::fail("non-finite value accepted");
  });
  return 0;
}
