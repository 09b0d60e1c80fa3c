// The attnbench executable end to end: exit codes and `apply` against the fp64 reference.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "attention/npy.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("attn_cli_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void save(const fs::path& p, const Tensor& t, int rank) {
  std::vector<int64_t> shape = {t.batch(), t.heads(), t.seq(), t.dim()};
  shape.erase(shape.begin(), shape.begin() + (4 - rank));
  write_npy(p.string(), shape, t.data());
}

TEST(Cli, ApplyMatchesReference) {
  fs::path d = scratch("apply");
  for (bool causal : {false, true}) {
    Shape s{1, 2, 37, 37, 16, causal};
    auto in = random_inputs(s, 11);
    save(d / "q.npy", in.q, 3), save(d / "k.npy", in.k, 3), save(d / "v.npy", in.v, 3);
    CliResult r = run_cli("apply --variant full --q " + (d / "q.npy").string() + " --k " +
                          (d / "k.npy").string() + " --v " + (d / "v.npy").string() + " --out " +
                          (d / "o.npy").string() + (causal ? " --causal" : ""));
    ASSERT_EQ(r.code, 0) << r.output;
    NpyArray o = read_npy((d / "o.npy").string());
    EXPECT_EQ(o.shape, (std::vector<int64_t>{2, 37, 16}));
    Tensor out(1, 2, 37, 16);
    std::copy(o.data.begin(), o.data.end(), out.data());
    EXPECT_LT(relative_error(out, reference_attention(s, in.q, in.k, in.v)), 1e-5);
  }
}

TEST(Cli, ApplyRejectsBadFilesWithExitOne) {
  fs::path d = scratch("apply_bad");
  Shape s{1, 1, 8, 8, 4};
  auto in = random_inputs(s, 1);
  save(d / "q.npy", in.q, 2), save(d / "k.npy", in.k, 2);
  Tensor v5(1, 1, 5, 4);
  v5.fill(1.0f);
  save(d / "v5.npy", v5, 2);
  { std::ofstream(d / "junk.npy") << "not numpy"; }
  auto apply = [&](const std::string& v) {
    return run_cli("apply --variant full --q " + (d / "q.npy").string() + " --k " +
                   (d / "k.npy").string() + " --v " + (d / v).string() + " --out " +
                   (d / "o.npy").string());
  };
  CliResult junk = apply("junk.npy");
  EXPECT_EQ(junk.code, 1);
  EXPECT_NE(junk.output.find("bad magic"), std::string::npos) << junk.output;
  CliResult mismatch = apply("v5.npy");
  EXPECT_EQ(mismatch.code, 1);
  EXPECT_NE(mismatch.output.find("same shape"), std::string::npos) << mismatch.output;
  EXPECT_FALSE(fs::exists(d / "o.npy"));
  EXPECT_EQ(apply("missing.npy").code, 1);
}

TEST(Cli, UsageErrorsExitTwo) {
  CliResult r = run_cli("run --variant nope --seq 64");
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.output.find("valid variants"), std::string::npos) << r.output;
  EXPECT_EQ(run_cli("run --variant full --seq 64,abc").code, 2);
  EXPECT_EQ(run_cli("run --variant full --seq 64 --bogus").code, 2);
  EXPECT_EQ(run_cli("frobnicate").code, 2);
  EXPECT_EQ(run_cli("run --variant full:radius=2 --seq 64").code, 2);
}

TEST(Cli, RunRefusesSizesThatDoNotFit) {
  CliResult r = run_cli("run --variant full_materialized --seq 4000000 --heads 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("GiB"), std::string::npos) << r.output;
}

// The names under "Variants" in `attnbench list`: each entry is a line holding only the name,
// indented by two spaces (its doc and parameters are indented further).
std::vector<std::string> listed_variants(const std::string& output) {
  std::istringstream in(output);
  std::vector<std::string> names;
  bool in_variants = false;
  for (std::string line; std::getline(in, line);) {
    const bool section_title = !line.empty() && line[0] != ' ';
    if (section_title && in_variants) break;  // the next section
    if (section_title) in_variants = line.rfind("Variants", 0) == 0;
    const bool entry = line.size() > 2 && line.rfind("  ", 0) == 0 && line[2] != ' ';
    if (in_variants && entry) names.push_back(line.substr(2));
  }
  return names;
}

TEST(Cli, ListShowsEveryVariant) {
  CliResult r = run_cli("list");
  ASSERT_EQ(r.code, 0) << r.output;
  std::vector<std::string> registered;
  for (const auto& v : variants()) registered.push_back(v.name);
  // Whole names, each once, in registry order: "full" inside "full_materialized" is not "full".
  EXPECT_EQ(listed_variants(r.output), registered) << r.output;
}

// The rows of the table `attnbench run` prints: (spec, n) of every line between the header
// (which starts with "variant") and the first blank line.
std::vector<std::pair<std::string, int64_t>> printed_rows(const std::string& output) {
  std::istringstream in(output);
  std::vector<std::pair<std::string, int64_t>> rows;
  bool in_table = false;
  for (std::string line; std::getline(in, line);) {
    if (!in_table) {
      in_table = line.rfind("variant ", 0) == 0;
      continue;
    }
    if (line.empty()) break;
    std::istringstream fields(line);
    std::string spec;
    int64_t n = -1;
    fields >> spec >> n;
    rows.emplace_back(spec, n);
  }
  return rows;
}

TEST(Cli, RunPrintsOneRowPerVariantAndSize) {
  CliResult r =
      run_cli("run --variant full --variant full_materialized --seq 64,100 --heads 2 --reps 1");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("sgemm ceiling"), std::string::npos);
  // Each (variant, n) exactly once, in whatever order the sweep runs them.
  using Rows = std::multiset<std::pair<std::string, int64_t>>;
  const Rows expect = {
      {"full", 64}, {"full", 100}, {"full_materialized", 64}, {"full_materialized", 100}};
  const auto rows = printed_rows(r.output);
  EXPECT_EQ(Rows(rows.begin(), rows.end()), expect) << r.output;
}

}  // namespace
}  // namespace attn::test
