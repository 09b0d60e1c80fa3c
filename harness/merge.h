// `attnbench merge`: the shard directories of one sharded sweep united into one result, as if
// the sweep had run unsharded (docs/DESIGN.md, "Sharded sweeps").
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/results.h"

namespace attnbench {

struct MergeResult {
  RunContext context;            // shard 1's, with this merge's date and command
  std::vector<Row> rows;         // in the unsharded sweep's order
  std::vector<Scaling> scaling;  // recomputed over the union
  bool mixed_machines = false;
  nlohmann::json shards;  // shards.json: each shard's directory, context and case keys
};

// UsageError (one line) unless `dirs` are the complete shards of one config, built from one
// code version, on one CPU model with one thread count (or allow_mixed_machines: then each
// shard's times are scaled by its sgemm ceiling over shard 1's, so that they compare as
// fractions of each machine's own ceiling). Missing and duplicated cases are listed.
MergeResult merge_shards(const std::vector<std::string>& dirs, bool allow_mixed_machines,
                         const std::string& command);

// OUT/results.csv, results.json (the sweep's schema) and shards.json, each written atomically
// under OUT's lock; UsageError when OUT holds results and !overwrite.
void write_merge(const std::string& out_dir, const MergeResult& m, bool overwrite);

}  // namespace attnbench
