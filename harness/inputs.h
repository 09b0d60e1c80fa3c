// Seeded input tensors for benchmarks and tests.
#pragma once

#include <cstdint>
#include <string>

#include "attention/tensor.h"

namespace attnbench {

struct Inputs {
  attn::Tensor q, k, v;
};

// i.i.d. N(0,1) entries from a counter-based generator: element e of stream `stream` depends
// only on (seed, stream, e), so the values never depend on thread count or fill order.
void fill_gaussian(attn::Tensor& t, uint64_t seed, uint64_t stream);

// q, k, v for `shape` drawn from distribution `dist` (see `attnbench list`).
Inputs make_inputs(const attn::Shape& shape, const std::string& dist, uint64_t seed);

}  // namespace attnbench
