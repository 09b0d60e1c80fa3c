#include "harness/merge.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "attention/npy.h"
#include "attention/tensor.h"
#include "harness/outdir.h"
#include "harness/shard.h"
#include "harness/sweep.h"

namespace attnbench {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct ShardDir {
  std::string dir;
  ShardManifest manifest;
  bool has_results = false;
  RunContext context;
  std::vector<Row> rows;
  std::vector<std::pair<std::string, GbFit>> gb;  // Google Benchmark fits of its families
};

void require(bool ok, const std::string& msg) {
  if (!ok) throw attn::UsageError(msg);
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw attn::RuntimeError(path + ": cannot read");
  std::ostringstream text;
  text << f.rdbuf();
  return text.str();
}

// The Google Benchmark fit of each scaling entry, keyed like compute_scaling's groups.
std::vector<std::pair<std::string, GbFit>> gb_fits(const json& scaling) {
  std::vector<std::pair<std::string, GbFit>> out;
  if (!scaling.is_array()) return out;
  for (const json& s : scaling) {
    if (!s.is_object() || !s.value("gb_big_o", json("")).is_string()) continue;
    const std::string big_o = s.value("gb_big_o", "");
    if (big_o.empty()) continue;
    Row r;
    r.spec = s.value("spec", ""), r.batch = s.value("batch", int64_t(1));
    r.heads = s.value("heads", int64_t(1)), r.dim = s.value("dim", int64_t(0));
    r.causal = s.value("causal", false), r.dist = s.value("dist", "");
    r.posenc = s.value("posenc", "");
    out.push_back({scaling_group_key(r), GbFit{big_o, s.value("gb_rms", 0.0)}});
  }
  return out;
}

ShardDir load_shard(const std::string& dir) {
  ShardDir s;
  s.dir = dir;
  std::error_code ec;
  require(fs::is_directory(dir, ec), "shard directory " + dir + " does not exist");
  s.manifest = read_manifest(dir);
  require(s.manifest.shard.active(),
          dir +
              " has no shard.json: not a shard directory (written by `attnbench sweep CONFIG "
              "--shard i/N --out DIR`)");
  const std::string path = dir + "/results.json";
  if (!fs::exists(path, ec)) return s;  // killed before its first case: every case is missing
  const std::string text = read_text(path);
  s.rows = parse_rows(text, path);
  const json j = json::parse(text);  // parse_rows has checked it is JSON
  try {
    s.context = context_from_json(j.at("context"));
  } catch (const std::exception& e) {
    throw attn::UsageError(path + ": " + e.what());
  }
  s.gb = gb_fits(j.value("scaling", json::array()));
  s.has_results = true;
  return s;
}

// "a, b, c and 12 more": the first `limit` items of a list too long for one line.
std::string listing(const std::vector<std::string>& items, size_t limit = 20) {
  std::string out;
  for (size_t i = 0; i < items.size() && i < limit; ++i) out += (i ? ", " : "") + items[i];
  if (items.size() > limit) out += " and " + std::to_string(items.size() - limit) + " more";
  return out;
}

// One config, one partition, one code version, each shard given once.
void check_same_sweep(const std::vector<ShardDir>& shards) {
  const ShardDir& a = shards.front();
  std::map<int, std::string> seen;
  for (const ShardDir& s : shards) {
    const ShardManifest& m = s.manifest;
    require(m.fingerprint == a.manifest.fingerprint,
            "shards of different configs: " + a.dir + " is shard " + a.manifest.shard.text() +
                " of " + a.manifest.config_path + " (config " + a.manifest.fingerprint + "), " +
                s.dir + " is shard " + m.shard.text() + " of " + m.config_path + " (config " +
                m.fingerprint + ")");
    require(m.shard.count == a.manifest.shard.count,
            "shards of different partitions: " + a.dir + " is shard " + a.manifest.shard.text() +
                ", " + s.dir + " is shard " + m.shard.text());
    require(m.git_commit == a.manifest.git_commit,
            "shards of different code versions: " + a.dir + " was run by attnbench at commit " +
                a.manifest.git_commit + ", " + s.dir + " at " + m.git_commit +
                "; run every shard with one build");
    const auto [it, fresh] = seen.emplace(m.shard.index, s.dir);
    require(fresh, "shard " + m.shard.text() + " is given twice: " + it->second + " and " + s.dir);
  }
}

// Every shard on one CPU model with one thread count, unless mixing was allowed.
bool check_machines(const std::vector<ShardDir>& shards, bool allow_mixed) {
  const ShardDir* first = nullptr;
  bool mixed = false;
  std::string describe;
  for (const ShardDir& s : shards) {
    if (!s.has_results) continue;
    describe += (describe.empty() ? "" : "; ") + s.dir + ": '" + s.context.cpu_model + "', " +
                std::to_string(s.context.threads) + " threads";
    if (!first) first = &s;
    mixed |= s.context.cpu_model != first->context.cpu_model ||
             s.context.threads != first->context.threads;
  }
  require(!mixed || allow_mixed,
          "shards ran on different machines (" + describe +
              "): their times do not compare; pass --allow-mixed-machines to keep each "
              "shard's times as ratios to its own sgemm ceiling");
  return mixed;
}

std::string now_utc() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

// Times measured on a machine with sgemm ceiling c, expressed on one with ceiling c_ref.
void scale_times(Row& r, double factor) {
  if (!r.ok()) return;
  r.time_ms_median *= factor, r.time_ms_min *= factor, r.time_ms_max *= factor;
  for (double& t : r.time_ms_reps) t *= factor;
  r.gflops /= factor;  // pct_ceiling is already a ratio to the shard's own ceiling
}

// The config's cases and their shards, recomputed from a manifest's config.
struct Partition {
  std::vector<Case> cases;
  std::vector<std::vector<std::string>> keys_of;  // [shard index]: its case keys, in order
  std::map<std::string, int> shard_of_key;
};

Partition recompute_partition(const ShardManifest& m) {
  std::istringstream text(m.config);
  const SweepConfig cfg = parse_sweep_config(text, m.config_path + " (in shard.json)");
  Partition p;
  p.cases = expand_cases(cfg);
  const std::vector<int> shard_of = assign_shards(cfg, p.cases, m.shard.count);
  p.keys_of.resize(size_t(m.shard.count) + 1);
  for (size_t i = 0; i < p.cases.size(); ++i) {
    p.keys_of[size_t(shard_of[i])].push_back(p.cases[i].key());
    p.shard_of_key[p.cases[i].key()] = shard_of[i];
  }
  return p;
}

void check_manifests(const std::vector<ShardDir>& shards, const Partition& p) {
  for (const ShardDir& s : shards)
    require(p.keys_of[size_t(s.manifest.shard.index)] == s.manifest.keys,
            s.dir + "/shard.json lists other cases than shard " + s.manifest.shard.text() +
                " of its config has here; was it written by another partition?");
}

using Found = std::map<std::string, std::pair<const ShardDir*, const Row*>>;

// Each row with the shard it came from; refuses a case in two shards and rows that are not
// their shard's.
Found rows_by_key(const std::vector<ShardDir>& shards, const Partition& p,
                  const std::string& config_path) {
  std::map<std::string, std::vector<const ShardDir*>> holders;
  Found found;
  for (const ShardDir& s : shards)
    for (const Row& r : s.rows) holders[r.key].push_back(&s), found[r.key] = {&s, &r};
  std::vector<std::string> duplicated, foreign;
  for (const auto& [key, h] : holders) {
    std::string dirs;
    for (const ShardDir* s : h) dirs += (dirs.empty() ? "" : " and ") + s->dir;
    const auto e = p.shard_of_key.find(key);
    if (h.size() > 1)
      duplicated.push_back(key + " (in " + dirs + ")");
    else if (e == p.shard_of_key.end() || e->second != h[0]->manifest.shard.index)
      foreign.push_back(key + " (in " + dirs + ")");
  }
  require(duplicated.empty(), std::to_string(duplicated.size()) +
                                  " cases are in more than one shard: " + listing(duplicated));
  require(foreign.empty(), std::to_string(foreign.size()) +
                               " rows are not cases of their shard of " + config_path + ": " +
                               listing(foreign));
  return found;
}

// Every case of every shard has its row; else the missing ones, shard by shard.
void check_complete(const std::vector<ShardDir>& shards, const Partition& p, const Found& found,
                    const ShardManifest& first) {
  std::map<int, const ShardDir*> by_index;
  for (const ShardDir& s : shards) by_index[s.manifest.shard.index] = &s;
  std::vector<std::string> missing;
  std::string where;
  for (int i = 1; i <= first.shard.count; ++i) {
    size_t n = 0;
    for (const std::string& key : p.keys_of[size_t(i)])
      if (!found.count(key)) missing.push_back(key), ++n;
    if (n == 0) continue;
    const auto s = by_index.find(i);
    where += (where.empty() ? "" : ", ") + std::string("shard ") + std::to_string(i) + "/" +
             std::to_string(first.shard.count) + " (" +
             (s == by_index.end() ? std::string("not given") : s->second->dir) +
             "): " + std::to_string(n);
  }
  require(missing.empty(), std::to_string(missing.size()) + " of " +
                               std::to_string(p.cases.size()) + " cases are missing [" + where +
                               "]: " + listing(missing) + "; finish those shards with `attnbench " +
                               "sweep " + first.config_path +
                               " --shard i/N --out DIR --resume`, then merge again");
}

// Google Benchmark's fit is kept where one shard measured the whole group; a split group has
// only the power-law fit, recomputed over the union.
std::vector<std::pair<std::string, GbFit>> whole_group_fits(
    const std::map<std::string, std::set<const ShardDir*>>& owners) {
  std::vector<std::pair<std::string, GbFit>> gb;
  for (const auto& [key, shards] : owners)
    if (shards.size() == 1)
      for (const auto& [k, fit] : (*shards.begin())->gb)
        if (k == key) gb.push_back({k, fit});
  return gb;
}

json shards_json(const std::vector<ShardDir>& shards, const ShardDir& ref, bool mixed) {
  const ShardManifest& first = shards.front().manifest;
  const double c_ref = ref.context.sgemm_ceiling_gflops;
  json j = {{"config", first.config_path},
            {"config_fingerprint", first.fingerprint},
            {"mixed_machines", mixed},
            {"shards", json::array()}};
  if (mixed) {
    char note[160];
    std::snprintf(note, sizeof note,
                  "mixed machines: times scaled to shard %s's sgemm ceiling (%.1f GFLOP/s)",
                  ref.manifest.shard.text().c_str(), c_ref);
    j["time_note"] = note;
  }
  for (const ShardDir& s : shards)
    j["shards"].push_back(json{{"shard", s.manifest.shard.text()},
                               {"dir", s.dir},
                               {"context", to_json(s.context)},
                               {"time_scale", mixed ? s.context.sgemm_ceiling_gflops / c_ref : 1.0},
                               {"cases", s.manifest.keys}});
  return j;
}

}  // namespace

MergeResult merge_shards(const std::vector<std::string>& dirs, bool allow_mixed,
                         const std::string& command) {
  require(!dirs.empty(), "no shard directories given");
  std::vector<ShardDir> shards;
  for (const auto& d : dirs) shards.push_back(load_shard(d));
  std::sort(shards.begin(), shards.end(), [](const ShardDir& a, const ShardDir& b) {
    return a.manifest.shard.index < b.manifest.shard.index;
  });
  check_same_sweep(shards);
  const ShardManifest& first = shards.front().manifest;
  const Partition p = recompute_partition(first);
  check_manifests(shards, p);
  const Found found = rows_by_key(shards, p, first.config_path);
  check_complete(shards, p, found, first);

  MergeResult m;
  m.mixed_machines = check_machines(shards, allow_mixed);
  // The reference machine: the first shard that measured anything (a shard can hold no case).
  const ShardDir& ref =
      *std::find_if(shards.begin(), shards.end(), [](const ShardDir& s) { return s.has_results; });
  m.context = ref.context;
  m.context.date_utc = now_utc(), m.context.command = command;
  m.context.config = first.config_path;
  if (m.mixed_machines) {
    std::set<std::string> models;
    for (const ShardDir& s : shards)
      if (s.has_results) models.insert(s.context.cpu_model);
    m.context.cpu_model = "mixed machines: ";
    for (const auto& c : models) m.context.cpu_model += (c == *models.begin() ? "" : " | ") + c;
  }
  std::map<std::string, std::set<const ShardDir*>> owners;  // scaling group -> its shards
  for (const Case& c : p.cases) {
    const auto& [s, r] = found.at(c.key());
    Row row = *r;
    if (m.mixed_machines)
      scale_times(row, s->context.sgemm_ceiling_gflops / ref.context.sgemm_ceiling_gflops);
    owners[scaling_group_key(row)].insert(s);
    m.rows.push_back(std::move(row));
  }
  m.scaling = compute_scaling(m.rows, whole_group_fits(owners));
  m.shards = shards_json(shards, ref, m.mixed_machines);
  return m;
}

void write_merge(const std::string& out_dir, const MergeResult& m, bool overwrite) {
  OutputDirLock lock(out_dir);
  check_may_write_results(out_dir, false, overwrite);
  // shards.json first: results.json, written last, is what the plots and the gate trust.
  attn::write_file_atomic(out_dir + "/shards.json", m.shards.dump(1) + "\n");
  write_results(out_dir, m.context, m.rows, m.scaling);
}

}  // namespace attnbench
