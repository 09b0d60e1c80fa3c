// Accuracy of a variant's output against the fp64 reference on the same inputs.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "attention/attention.h"
#include "attention/reference.h"
#include "harness/inputs.h"

namespace attnbench {

// The fp64 reference for a set of query rows (all rows, or a seeded random sample when the
// exact reference over every row would be too expensive). Computed once per input.
struct ReferenceSample {
  std::vector<int64_t> rows;  // sorted query rows, the same for every head
  std::vector<double> out;    // [B, H, rows, D]
  std::vector<double> mean;   // [B, H, rows, D]: the mean of the values each row may see
  bool all_rows = false;
};

// All rows when nq <= all_rows_limit, else `sample` rows drawn with `seed`.
ReferenceSample compute_reference(const attn::Shape& s, const attn::Tensor& q,
                                  const attn::Tensor& k, const attn::Tensor& v,
                                  int64_t all_rows_limit = 4096, int64_t sample = 256,
                                  uint64_t seed = 0, const attn::ElementMask* mask = nullptr);

struct Accuracy {
  double rel_fro = 0;      // ‖out − ref‖_F / ‖ref‖_F over the sampled rows
  double max_abs = 0;      // max |out − ref|
  double mean_cosine = 0;  // mean over rows of cos(out_i, ref_i)
  // ‖out − ref‖_F / ‖ref − mean‖_F: the error in units of what attention adds to the plain
  // average of the visible values (1 = no better than averaging; docs/ALGORITHMS.md §Accuracy
  // metrics).
  double err_vs_mean = 0;
};

Accuracy measure_accuracy(const attn::Shape& s, const ReferenceSample& ref,
                          const attn::Tensor& out);

// Recall on a `recall` input (docs/ALGORITHMS.md §Recall metrics), over every query row of
// every head. Bins hold the query rows whose gap (or depth) falls in [lo, hi).
struct RecallBin {
  double lo = 0, hi = 0;
  int64_t rows = 0;
  double recall = 0;
};
struct RecallScore {
  int64_t rows = 0;
  double recall = 0;      // fraction whose output's nearest codebook value is the planted one
  double cosine = 0;      // mean cos(out_i, planted value)
  double mass_exact = 0;  // mean dense softmax probability of the planted key
  // Variants that report visited_keys: the mean of that probability renormalized over the
  // keys the variant visited (0 when it did not visit the planted key).
  std::optional<double> mass_variant;
  std::vector<RecallBin> by_gap;    // gap bins [2^k, 2^(k+1))
  std::vector<RecallBin> by_depth;  // depth bins [k/10, (k+1)/10), the last one closed
};
RecallScore measure_recall(const attn::Attention& a, const attn::Shape& s, const attn::Tensor& q,
                           const attn::Tensor& k, const attn::Tensor& out, const RecallProbe& probe,
                           const attn::ElementMask* mask = nullptr);

// Attention-mass coverage: the mean, over every head and every query row in `rows`, of the
// dense softmax probability mass on the union (over hash rounds) of the keys `a` visited in
// its last forward() on q, k. Empty when the variant reports no pattern (visited_keys false).
std::optional<double> attention_coverage(const attn::Attention& a, const attn::Shape& s,
                                         const attn::Tensor& q, const attn::Tensor& k,
                                         const std::vector<int64_t>& rows,
                                         const attn::ElementMask* mask = nullptr);

}  // namespace attnbench
