// The sweep config parser on arbitrary text: a clean UsageError, or a config whose cases
// expand (within the case limit) and whose values passed the range checks.
#include <cstdint>
#include <sstream>

#include "fuzz_util.h"
#include "harness/sweep.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  attn::fuzz::expect_clean_errors([&] {
    std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
    const attnbench::SweepConfig c = attnbench::parse_sweep_config(in, "fuzz.ini");
    if (c.variants.empty() || c.seqs.empty() || c.reps < 1 || c.dim < 1 || c.threads < 0 ||
        c.threads > 1024)
      attn::fuzz::fail("config accepted with an out-of-range value");
    const auto cases = attnbench::expand_cases(c);
    if (int64_t(cases.size()) != attnbench::case_count(c)) attn::fuzz::fail("case count");
    for (const auto& k : cases) k.shape.check();
  });
  return 0;
}
