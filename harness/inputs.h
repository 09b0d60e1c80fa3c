// Seeded input tensors for benchmarks and tests.
#pragma once

#include <cstdint>
#include <optional>
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

// The answer key of a `recall` input (docs/ALGORITHMS.md §Recall inputs): per (batch, head),
// which query rows re-occur which planted key, and the value codebook.
struct RecallQuery {
  int64_t row = 0;   // query row i
  int64_t key = 0;   // position of its planted key (< row)
  int64_t pair = 0;  // index of the planted pair: its value is codebook row `pair`
  double depth = 0;  // where the planted key sits, in [0, 1] (0 = first token)
};
struct RecallProbe {
  int64_t pairs = 0;                              // P pairs per head
  double beta = 0;                                // the planted query–key logit
  std::vector<std::vector<RecallQuery>> queries;  // [B·H] lists, sorted by row
  std::vector<float> codebook;                    // [B·H, P, D] unit value vectors
};
// The probe of `dist` if it is a recall distribution (nullopt otherwise): a pure function of
// (shape, dist, seed), the same one make_inputs plants. UsageError on bad parameters.
std::optional<RecallProbe> recall_probe(const attn::Shape& shape, const std::string& dist,
                                        uint64_t seed);

// One documented input distribution, for `attnbench list` and error messages.
struct DistInfo {
  const char* name;
  const char* syntax;    // e.g. "clustered[:clusters=8,noise=0.1]"
  const char* doc;       // how q, k, v are built
  const char* stresses;  // what kind of attention it produces and which variants it favours
};
const std::vector<DistInfo>& distributions();

}  // namespace attnbench
