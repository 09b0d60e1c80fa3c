// Seeded input tensors for benchmarks and tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attention/tensor.h"

namespace attnbench {

struct Inputs {
  attn::Tensor q, k, v;
};

// i.i.d. N(0,1) entries from a counter-based generator: element e of stream `stream` depends
// only on (seed, stream, e), so the values never depend on thread count or fill order.
void fill_gaussian(attn::Tensor& t, uint64_t seed, uint64_t stream);

// q, k, v for `shape` drawn from distribution `dist` ("name[:key=value,...]", or "npy:DIR").
// Deterministic in (shape, dist, seed) for any thread count. UsageError for an unknown
// distribution, a bad parameter, or .npy files whose shape differs from `shape`.
Inputs make_inputs(const attn::Shape& shape, const std::string& dist, uint64_t seed);

// One documented input distribution, for `attnbench list` and error messages.
struct DistInfo {
  const char* name;
  const char* syntax;    // e.g. "clustered[:clusters=8,noise=0.1]"
  const char* doc;       // how q, k, v are built
  const char* stresses;  // what kind of attention it produces and which variants it favours
};
const std::vector<DistInfo>& distributions();

}  // namespace attnbench
