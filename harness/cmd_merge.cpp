// `attnbench merge OUT_DIR SHARD_DIR...`: the shards of a sharded sweep as one result.
#include <boost/program_options.hpp>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "attention/tensor.h"
#include "harness/cli.h"
#include "harness/merge.h"

namespace attnbench {

int cmd_merge(const Args& args) {
  namespace po = boost::program_options;
  std::string out;
  std::vector<std::string> dirs;
  bool allow_mixed = false, overwrite = false;
  po::options_description opts(
      "attnbench merge OUT_DIR SHARD_DIR... [options]: the shard directories of one sharded "
      "sweep (attnbench sweep CONFIG --shard i/N) as one results.csv/json in OUT_DIR, with the "
      "scaling fits and crossovers recomputed over the union; refuses incomplete or mixed sets");
  opts.add_options()("help,h", "this help")(
      "allow-mixed-machines", po::bool_switch(&allow_mixed),
      "merge shards run on different CPU models or thread counts: each shard's times are "
      "scaled by its sgemm ceiling relative to the first shard's")(
      "overwrite", po::bool_switch(&overwrite), "replace results already in OUT_DIR");
  po::options_description hidden;
  hidden.add_options()("out", po::value(&out)->required(), "")("shards", po::value(&dirs), "");
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("out", 1).add("shards", -1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(all).positional(pos).run(), vm);
  if (vm.count("help")) return std::cout << opts << "\n", 0;
  po::notify(vm);
  if (dirs.empty())
    throw attn::UsageError("no shard directories: attnbench merge OUT_DIR SHARD_DIR...");
  namespace fs = std::filesystem;
  for (const auto& d : dirs)
    if (fs::weakly_canonical(d) == fs::weakly_canonical(out))
      throw attn::UsageError("OUT_DIR " + out + " is also a shard directory; merge into another");

  std::string command = "attnbench merge";
  for (const auto& a : args) command += " " + a;
  const MergeResult m = merge_shards(dirs, allow_mixed, command);
  write_merge(out, m, overwrite);
  std::printf(
      "%zu rows from %zu shards in %s/results.csv and results.json%s\n", m.rows.size(), dirs.size(),
      out.c_str(),
      m.mixed_machines ? " (mixed machines: times scaled by each shard's sgemm ceiling)" : "");
  return 0;
}

}  // namespace attnbench
