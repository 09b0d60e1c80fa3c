// The results.json reader of --resume on arbitrary text: a clean error naming the file, or
// rows that satisfy what the sweep relies on (positive sizes, unique keys).
#include <cstdint>
#include <set>

#include "fuzz_util.h"
#include "harness/results.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attn::fuzz::expect_clean_errors([&] {
    const auto rows = attnbench::parse_rows(std::string(reinterpret_cast<const char*>(data), size),
                                            "fuzz/results.json");
    std::set<std::string> keys;
    for (const auto& r : rows) {
      if (r.batch < 1 || r.heads < 1 || r.n < 1 || r.dim < 1 || r.threads < 0 || r.threads > 1024 ||
          r.reps < 1)
        attn::fuzz::fail("row accepted with an out-of-range count");
      if (!keys.insert(r.key).second) attn::fuzz::fail("duplicate key accepted");
      (void)attnbench::to_json(r).dump();  // what the sweep writes back
    }
  });
  return 0;
}
