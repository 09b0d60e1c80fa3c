// Variant plugins (attention/plugin.h, docs/DESIGN.md §Plugins): the in-tree build of
// examples/plugin loaded by the CLI, the loader's one-line errors, and the registry's run-time
// registration. The plugin paths come from tests/CMakeLists.txt.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "attention/npy.h"
#include "attention/plugin.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;

// ATTNBENCH_PLUGINS works in this binary as in the CLI, so that the registry-driven suites can
// be run on a plugin's variants (CTest plugin.registry_suites).
[[maybe_unused]] const bool kEnvPluginsLoaded = [] {
  try {
    load_plugins_from_env();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "attn_tests: %s\n", e.what());
    std::exit(2);
  }
  return true;
}();

std::string plugin(const std::string& name) {
  return std::string(ATTN_PLUGIN_DIR) + "/libplugin_" + name + ".so";
}

bool one_line(const std::string& s) {
  return !s.empty() && s.back() == '\n' && std::count(s.begin(), s.end(), '\n') == 1;
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

TEST(Plugin, ExampleVariantIsListed) {
  for (const std::string& how : {"--plugin " + std::string(ATTN_PLUGIN_STRIDED) + " list",
                                 "--plugin=" + std::string(ATTN_PLUGIN_STRIDED) + " list"}) {
    CliResult r = run_cli(how);
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_TRUE(contains(r.output, "\n  strided\n")) << r.output;
  }
  CliResult r = run_cli("list");
  EXPECT_FALSE(contains(r.output, "\n  strided\n")) << "listed without being loaded";
}

// The environment list may hold empty entries and name a plugin that --plugin names again:
// loading the same file twice is not a duplicate registration.
TEST(Plugin, EnvironmentListAndRepeatsLoadOnce) {
  const std::string p = ATTN_PLUGIN_STRIDED;
  CliResult r = run_shell("ATTNBENCH_PLUGINS=:" + p + "::" + p + " " + ATTNBENCH_EXE +
                          " --plugin " + p + " list");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "\n  strided\n")) << r.output;
}

// The example's output through `attnbench apply` against the fp64 reference restricted to its
// pattern: keys j = 0, s, 2s, ... (causal: j <= i).
TEST(Plugin, ExampleVariantMatchesMaskedReference) {
  const fs::path d = fs::temp_directory_path() / "attn_plugin_apply";
  fs::remove_all(d);
  fs::create_directories(d);
  const int64_t stride = 3;
  for (bool causal : {false, true}) {
    Shape s{1, 2, 150, 150, 16, causal};
    auto in = random_inputs(s, 5);
    const std::vector<std::pair<std::string, const Tensor*>> files = {
        {"q", &in.q}, {"k", &in.k}, {"v", &in.v}};
    for (const auto& [name, t] : files)
      write_npy((d / (name + ".npy")).string(), {2, 150, 16}, t->data());
    CliResult r = run_cli("--plugin " + std::string(ATTN_PLUGIN_STRIDED) +
                          " apply --variant strided:stride=" + std::to_string(stride) + " --q " +
                          (d / "q.npy").string() + " --k " + (d / "k.npy").string() + " --v " +
                          (d / "v.npy").string() + " --out " + (d / "o.npy").string() +
                          (causal ? " --causal" : ""));
    ASSERT_EQ(r.code, 0) << r.output;
    NpyArray o = read_npy((d / "o.npy").string());
    Tensor out(1, 2, 150, 16);
    std::copy(o.data.begin(), o.data.end(), out.data());
    const ElementMask mask = [&](int64_t, int64_t, int64_t, int64_t j) { return j % stride == 0; };
    EXPECT_LT(relative_error(out, reference_attention(s, in.q, in.k, in.v, &mask)), 1e-5)
        << "causal=" << causal;
  }
}

struct BadPlugin {
  std::string path, expected;
};

TEST(Plugin, BadPluginsAreOneLineUsageErrors) {
  const fs::path junk = fs::temp_directory_path() / "attn_plugin_junk.so";
  { std::ofstream(junk) << "not a shared library"; }
  const std::vector<BadPlugin> cases = {
      {"/nonexistent/libnothing.so", "plugin /nonexistent/libnothing.so: no such file"},
      {fs::temp_directory_path().string(), "is not a regular file"},
      {junk.string(), "plugin " + junk.string() + ": cannot be loaded: "},
      {plugin("unresolved"), "undefined symbol: attnbench_symbol_nobody_defines"},
      {plugin("no_entry"), "not an attnbench plugin: it exports no attnbench_plugin_register"},
      {plugin("wrong_abi"),
       "built against attnbench ABI version " + std::to_string(ATTNBENCH_ABI_VERSION + 1) +
           ", this attnbench has ABI version " + std::to_string(ATTNBENCH_ABI_VERSION)},
      {plugin("duplicate"),
       "plugin " + plugin("duplicate") + ": variant 'full' is already registered"},
  };
  for (const auto& c : cases) {
    for (const std::string& how : {"--plugin " + c.path + " list",
                                   "ATTNBENCH_PLUGINS=" + c.path + " " + ATTNBENCH_EXE + " list"}) {
      CliResult r = how[0] == '-' ? run_cli(how) : run_shell(how);
      EXPECT_EQ(r.code, 2) << how << "\n" << r.output;
      EXPECT_TRUE(one_line(r.output)) << how << "\n" << r.output;
      EXPECT_TRUE(contains(r.output, "attnbench: plugin ")) << r.output;
      EXPECT_TRUE(contains(r.output, c.expected)) << "expected: " << c.expected << "\n" << r.output;
    }
  }
  CliResult r = run_cli("--plugin");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(one_line(r.output) && contains(r.output, "--plugin needs")) << r.output;
}

// A failed plugin registers none of its variants, and a failed load can be retried.
TEST(Plugin, FailedLoadLeavesTheRegistryAsItWas) {
  const size_t before = variants().size();
  for (int attempt = 0; attempt < 2; ++attempt) {
    EXPECT_THROW(load_plugin(plugin("duplicate")), UsageError);
    EXPECT_EQ(variants().size(), before);
    EXPECT_THROW(find_variant("plugin_first_of_two"), UsageError);
  }
}

TEST(Registry, RunTimeRegistrationIsChecked) {
  const size_t before = variants().size();
  VariantInfo ok = find_variant("full");
  auto error = [&](VariantInfo info) -> std::string {
    try {
      register_variant(std::move(info));
    } catch (const UsageError& e) {
      return e.what();
    }
    return "";
  };
  auto named = [&](const std::string& name) {
    VariantInfo v = ok;
    v.name = name;
    return v;
  };
  EXPECT_TRUE(contains(error(named("full")), "variant 'full' is already registered"));
  for (const char* bad : {"", "Strided", "a:b", "a b", "x=1", "a,b"})
    EXPECT_TRUE(contains(error(named(bad)), "is invalid; expected lower-case")) << bad;
  VariantInfo no_factory = named("toy_a");
  no_factory.make = nullptr;
  EXPECT_TRUE(contains(error(no_factory), "has no factory"));
  VariantInfo bad_default = named("toy_b");
  bad_default.params = {{"n", ParamSpec::Kind::Int, "0", "count", 1, 10}};
  EXPECT_TRUE(contains(error(bad_default), "parameter n=0 is out of range"));
  VariantInfo twice = named("toy_c");
  twice.params = {{"n", ParamSpec::Kind::Int, "1", "count", 1},
                  {"n", ParamSpec::Kind::Int, "1", "c", 1}};
  EXPECT_TRUE(contains(error(twice), "declares parameter n twice"));
  EXPECT_EQ(variants().size(), before);

  EXPECT_EQ(error(named("toy_registered")), "");
  EXPECT_EQ(variants().back().name, "toy_registered");
  EXPECT_EQ(make_attention("toy_registered")->name(), "full");  // full's factory
  truncate_variants(before);
  EXPECT_THROW(find_variant("toy_registered"), UsageError);
}

}  // namespace
}  // namespace attn::test
