// Positional encodings: the axial concatenation rule in both orders, prefixes, parameter
// counts, the sinusoidal closed form, add_to, weights round trips, errors and the CLI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "attention/npy.h"
#include "attention/positional/positional.h"
#include "harness/posenc_hook.h"
#include "test_util.h"

namespace attn::test {
namespace {

namespace fs = std::filesystem;
using positional::Encoding;
using positional::make_encoding;

fs::path scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("attn_posenc_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::unique_ptr<Encoding> make(const std::string& spec, int64_t n, int64_t dim, uint64_t seed = 0) {
  auto e = make_encoding(spec);
  e->init(n, dim, seed);
  return e;
}

std::vector<float> encode(const Encoding& e, int64_t n) {
  std::vector<float> out(size_t(n) * e.dim());
  e.encode(n, out.data());
  return out;
}

// Factor table i with entries that name their own position: T_i[r][c] = 1000·i + r + c/1000.
std::vector<float> labelled_table(int i, int64_t rows, int64_t cols) {
  std::vector<float> t(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) t[r * cols + c] = 1000.0f * i + r + c / 1000.0f;
  return t;
}

// Row of each factor for position j, written out independently of the implementation.
std::vector<int64_t> factor_rows(int64_t j, const std::vector<int64_t>& l, bool row_major) {
  if (l.size() == 2)
    return row_major ? std::vector<int64_t>{j / l[1], j % l[1]}
                     : std::vector<int64_t>{j % l[0], j / l[0]};
  // Three factors.
  return row_major ? std::vector<int64_t>{j / (l[1] * l[2]), (j / l[2]) % l[1], j % l[2]}
                   : std::vector<int64_t>{j % l[0], (j / l[0]) % l[1], j / (l[0] * l[1])};
}

void check_concatenation_rule(const std::vector<int64_t>& l, const std::vector<int64_t>& d,
                              bool row_major) {
  auto join = [](const std::vector<int64_t>& v) {
    std::string s;
    for (size_t i = 0; i < v.size(); ++i) {
      if (i) s += 'x';
      s += std::to_string(v[i]);
    }
    return s;
  };
  int64_t n = 1, dim = 0;
  for (size_t i = 0; i < l.size(); ++i) n *= l[i], dim += d[i];
  const std::string spec =
      "axial:shape=" + join(l) + ",dims=" + join(d) + ",order=" + (row_major ? "row" : "col");
  auto e = make(spec, n, dim);
  fs::path dir = scratch("rule");
  std::vector<std::vector<float>> tables;
  for (size_t i = 0; i < l.size(); ++i) {
    tables.push_back(labelled_table(int(i), l[i], d[i]));
    write_npy((dir / ("factor_" + std::to_string(i) + ".npy")).string(), {l[i], d[i]},
              tables[i].data());
  }
  e->load_weights(dir.string());
  const std::vector<float> out = encode(*e, n);
  for (int64_t j = 0; j < n; ++j) {
    const std::vector<int64_t> a = factor_rows(j, l, row_major);
    std::vector<float> expect;
    for (size_t i = 0; i < l.size(); ++i)
      expect.insert(expect.end(), tables[i].begin() + a[i] * d[i],
                    tables[i].begin() + (a[i] + 1) * d[i]);
    ASSERT_TRUE(std::equal(expect.begin(), expect.end(), out.begin() + j * dim))
        << spec << " row " << j;
  }
}

TEST(Axial, RowsFollowTheConcatenationRuleInBothOrders) {
  for (bool row_major : {true, false}) {
    check_concatenation_rule({8, 5}, {6, 10}, row_major);
    check_concatenation_rule({3, 7}, {1, 3}, row_major);
    check_concatenation_rule({4, 3, 5}, {2, 7, 3}, row_major);
  }
}

// Outputs of 32 MiB and more are written with streaming stores; odd widths make factor
// segments start at every alignment, and the output buffer is deliberately misaligned.
TEST(Axial, LargeStreamedOutputsFollowTheRule) {
  const int64_t dim = 128;
  for (const std::string spec :
       {"axial:shape=256x300,dims=37x91", "axial:shape=256x300,dims=37x91,order=col",
        "axial:shape=40x40x48,dims=5x64x59"}) {
    auto e = make(spec, 76800, dim, 8);
    fs::path dir = scratch("large");
    e->save_weights(dir.string());
    std::vector<NpyArray> t;
    for (int i = 0; fs::exists(dir / ("factor_" + std::to_string(i) + ".npy")); ++i)
      t.push_back(read_npy((dir / ("factor_" + std::to_string(i) + ".npy")).string()));
    std::vector<int64_t> l;
    for (const auto& f : t) l.push_back(f.shape[0]);
    std::vector<float> buf(76800 * dim + 1);
    float* out = buf.data() + 1;
    with_threads(2, [&] { return e->encode(76800, out), 0; });
    const bool row_major = spec.find("col") == std::string::npos;
    for (int64_t j = 0; j < 76800; ++j) {
      const std::vector<int64_t> a = factor_rows(j, l, row_major);
      int64_t off = 0;
      for (size_t i = 0; i < t.size(); ++i) {
        const int64_t w = t[i].shape[1];
        ASSERT_TRUE(
            std::equal(out + j * dim + off, out + j * dim + off + w, t[i].data.begin() + a[i] * w))
            << spec << " row " << j << " factor " << i;
        off += w;
      }
    }
  }
}

TEST(Axial, DefaultOrderIsTheReferenceCodesRowMajorLayout) {
  // Hugging Face / trax: E(j) = [E1[j div l2], E2[j mod l2]]; positions j and j + l2 share
  // the E2 part, positions in one run of l2 share the E1 part.
  auto e = make("axial:shape=16x8,dims=4x12", 128, 16);
  auto row = make("axial:shape=16x8,dims=4x12,order=row", 128, 16);
  const std::vector<float> out = encode(*e, 128);
  EXPECT_EQ(out, encode(*row, 128));
  for (int64_t j = 0; j + 8 < 128; ++j) {
    EXPECT_TRUE(std::equal(out.begin() + j * 16 + 4, out.begin() + j * 16 + 16,
                           out.begin() + (j + 8) * 16 + 4));
    if (j % 8 != 7) {
      EXPECT_TRUE(
          std::equal(out.begin() + j * 16, out.begin() + j * 16 + 4, out.begin() + (j + 1) * 16));
    }
  }
}

TEST(Axial, AllPositionsDistinctWithDistinctFactorRows) {
  auto e = make("axial:shape=32x32,dims=8x8", 1024, 16, 5);
  const std::vector<float> out = encode(*e, 1024);
  std::set<std::vector<float>> rows;
  for (int64_t j = 0; j < 1024; ++j) rows.emplace(out.begin() + j * 16, out.begin() + j * 16 + 16);
  EXPECT_EQ(rows.size(), 1024u);
}

TEST(Axial, ShortSequenceIsThePrefixOfTheFullTable) {
  for (const std::string order : {"row", "col"}) {
    const std::string spec = "axial:shape=16x12,dims=10x6,order=" + order;
    const std::vector<float> full = encode(*make(spec, 192, 16, 3), 192);
    for (int64_t n : {1, 11, 100, 191}) {
      const std::vector<float> part = encode(*make(spec, n, 16, 3), n);
      EXPECT_TRUE(std::equal(part.begin(), part.end(), full.begin())) << spec << " n=" << n;
    }
  }
}

TEST(Axial, ParameterCountIsSumOfFactorTables) {
  auto e = make("axial:shape=64x64,dims=64x192", 4096, 256);
  EXPECT_EQ(e->param_count(), 64 * 64 + 64 * 192);  // Hugging Face's default: 16,384
  EXPECT_DOUBLE_EQ(e->param_bytes(), 4.0 * (64 * 64 + 64 * 192));
  EXPECT_EQ(make("axial:shape=7x9x11,dims=3x4x5", 600, 12)->param_count(), 7 * 3 + 9 * 4 + 11 * 5);
  // shape=auto: the smallest square grid covering n; dims=auto: an even split of D.
  auto a = make("axial", 1000, 65);
  EXPECT_EQ(a->positions(), 32 * 32);
  EXPECT_EQ(a->param_count(), 32 * 33 + 32 * 32);
  EXPECT_EQ(make("axial:dims=4x4x4", 1000, 12)->positions(), 1000);
  EXPECT_EQ(make("learned", 300, 24)->param_count(), 300 * 24);
  EXPECT_EQ(make("sinusoidal", 300, 24)->param_count(), 0);
}

TEST(Sinusoidal, MatchesClosedFormInFp64) {
  for (auto [n, dim] : {std::pair<int64_t, int64_t>{4096, 64}, {70000, 7}}) {
    auto e = make("sinusoidal", n, dim);
    const std::vector<float> out = encode(*e, n);
    double worst = 0;
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < dim; ++c) {
        const double angle = double(j) / std::pow(10000.0, double(c - c % 2) / double(dim));
        const double expect = c % 2 ? std::cos(angle) : std::sin(angle);
        worst = std::max(worst, std::abs(double(out[j * dim + c]) - expect));
      }
    EXPECT_LT(worst, 1e-6) << "D=" << dim;
  }
  auto b = make("sinusoidal:base=100", 10, 4);
  EXPECT_NEAR(encode(*b, 10)[9 * 4 + 2], std::sin(9.0 / 10.0), 1e-7);
}

TEST(Encoding, AddToEqualsInputPlusEncodingBroadcastOverBatchAndHeads) {
  for (const std::string spec :
       {"axial:shape=8x8,dims=5x7", "axial:shape=4x4x4,order=col", "learned", "sinusoidal"}) {
    const int64_t n = 50, dim = 12;
    auto e = make(spec, 64, dim, 9);
    const std::vector<float> enc = encode(*e, n);
    Tensor x(2, 3, n, dim), before(2, 3, n, dim);
    attnbench::fill_gaussian(x, 4, 1);
    std::copy(x.data(), x.data() + x.size(), before.data());
    e->add_to(x);
    for (int64_t r = 0; r < 6; ++r)
      for (int64_t i = 0; i < n * dim; ++i)
        ASSERT_EQ(x.data()[r * n * dim + i], before.data()[r * n * dim + i] + enc[i])
            << spec << " slice " << r << " element " << i;
  }
}

TEST(Encoding, SameSeedSameTablesForAnyThreadCount) {
  for (const std::string spec :
       {"axial:shape=128x64", "axial:shape=16x16x32,order=col", "learned", "sinusoidal"}) {
    auto run = [&](int threads) {
      return with_threads(threads, [&] {
        auto e = make(spec, 8001, 48, 17);
        Tensor x(2, 1, 8001, 48);
        attnbench::fill_gaussian(x, 1, 1);
        e->add_to(x);
        Tensor enc(1, 1, 8001, 48);
        e->encode(8001, enc.data());
        return std::make_pair(std::move(x), std::move(enc));
      });
    };
    auto one = run(1), two = run(2);
    EXPECT_TRUE(bit_identical(one.first, two.first)) << spec;
    EXPECT_TRUE(bit_identical(one.second, two.second)) << spec;
  }
  EXPECT_NE(encode(*make("learned", 10, 4, 1), 10), encode(*make("learned", 10, 4, 2), 10));
}

TEST(Learned, EncodingIsThePrefixOfItsTableForAnySplitAcrossThreads) {
  for (auto [rows, n, dim] : {std::array<int64_t, 3>{33, 33, 1}, {100, 65, 1}, {50, 49, 3}}) {
    auto e = make("learned:positions=" + std::to_string(rows), n, dim, 2);
    fs::path dir = scratch("learned_prefix");
    e->save_weights(dir.string());
    const NpyArray t = read_npy((dir / "table.npy").string());
    for (int threads : {1, 2, 3}) {
      std::vector<float> out(n * dim, -1.0f);
      with_threads(threads, [&] { return e->encode(n, out.data()), 0; });
      EXPECT_TRUE(std::equal(out.begin(), out.end(), t.data.begin()))
          << "n=" << n << " D=" << dim << " threads=" << threads;
    }
  }
}

// Both kinds with trainable tables (axial factors, the learned table), 65536 entries each.
TEST(Encoding, InitialTablesAreStandardNormal) {
  for (auto [spec, n, dim] :
       {std::tuple<std::string, int64_t, int64_t>{"axial:shape=256x256,dims=128x128", 65536, 256},
        {"learned", 256, 256}}) {
    SCOPED_TRACE(spec);
    auto e = make(spec, n, dim, 3);
    fs::path dir = scratch("normal");
    e->save_weights(dir.string());
    double sum = 0, sq = 0, count = 0;
    for (const auto& f : fs::directory_iterator(dir))
      for (float v : read_npy(f.path().string()).data) sum += v, sq += double(v) * v, ++count;
    EXPECT_EQ(count, 65536);
    const double mean = sum / count, var = sq / count - mean * mean;
    EXPECT_NEAR(mean, 0.0, 0.03);  // standard errors 0.004 and 0.006
    EXPECT_NEAR(var, 1.0, 0.03);
  }
}

TEST(Encoding, BadParametersAreUsageErrors) {
  const std::vector<std::string> bad_specs = {
      "",
      "rotary",
      "axial:shape=0x64",
      "axial:shape=64x0",
      "axial:dims=32x0",
      "axial:shape=64x",
      "axial:shape=x64",
      "axial:shape=64xx64",
      "axial:shape=64xabc",
      "axial:shape=-4x4",
      "axial:shape=",
      "axial:shape=8x8,dims=4x4x4",
      "axial:order=diag",
      "axial:size=64x64",
      "axial:shape",
      "learned:positions=-1",
      "learned:positions=ten",
      "sinusoidal:base=0.5",
      "sinusoidal:base=nan",
  };
  for (const auto& spec : bad_specs) {
    try {
      make_encoding(spec);
      ADD_FAILURE() << "accepted '" << spec << "'";
    } catch (const UsageError& e) {
      EXPECT_GT(std::string(e.what()).size(), 20u) << spec;
    }
  }
  struct Case {
    std::string spec;
    int64_t n, dim;
    std::string says;
  };
  const std::vector<Case> bad_sizes = {
      {"axial:shape=10x10", 101, 16, "fewer than the sequence length"},   // l1·l2 < n
      {"axial:shape=8x8,dims=32x33", 64, 64, "sum to 65"},                // d1 + d2 ≠ D
      {"axial:shape=8x8,dims=32x32", 64, 128, "must sum to D"},           // ≠ head dim
      {"axial:shape=4x4x4", 64, 2, "cannot be split"},                    // D < factors
      {"learned:positions=10", 20, 8, "fewer than the sequence length"},  // table too short
      {"axial", 0, 8, "positive"},
      {"sinusoidal", 8, 0, "positive"},
  };
  for (const auto& c : bad_sizes) {
    auto e = make_encoding(c.spec);
    try {
      e->init(c.n, c.dim, 0);
      ADD_FAILURE() << "accepted " << c.spec << " n=" << c.n << " D=" << c.dim;
    } catch (const UsageError& err) {
      EXPECT_NE(std::string(err.what()).find(c.says), std::string::npos) << err.what();
    }
  }
  auto e = make("axial:shape=8x8", 64, 16);
  std::vector<float> out(65 * 16);
  EXPECT_THROW(e->encode(65, out.data()), UsageError);
  Tensor wrong_dim(1, 1, 8, 12);
  EXPECT_THROW(e->add_to(wrong_dim), UsageError);
  EXPECT_THROW(e->add_to(out.data(), 1, 65), UsageError);
  EXPECT_THROW(make("sinusoidal", 8, 8)->save_weights(scratch("none").string()), UsageError);
  // Used before init(), or after an init() that failed: a programming error, not a result.
  EXPECT_THROW(make_encoding("learned")->encode(1, out.data()), std::logic_error);
  EXPECT_THROW(make_encoding("axial")->save_weights(scratch("none").string()), std::logic_error);
  EXPECT_THROW(e->init(100, 16, 0), UsageError);
  EXPECT_THROW(e->encode(1, out.data()), std::logic_error);
}

TEST(Encoding, TablesTooLargeForMemoryAreRefusedBeforeAllocating) {
  auto expect_refused = [](const std::string& spec, int64_t n, int64_t dim) {
    try {
      make(spec, n, dim);
      ADD_FAILURE() << "accepted " << spec;
    } catch (const RuntimeError& e) {
      EXPECT_NE(std::string(e.what()).find("GiB"), std::string::npos) << e.what();
    }
  };
  expect_refused("axial:shape=100000000000x4,dims=128x128", 1000, 256);
  expect_refused("learned:positions=1000000000000", 10, 256);
  expect_refused("axial:shape=3000000000x3000000000x3000000000", 10, 6);  // Π l overflows int64
}

TEST(Weights, RoundTripThroughNpyReproducesTheEncoding) {
  for (const std::string spec :
       {"axial:shape=16x16,dims=24x8", "axial:shape=4x5x6,order=col", "learned"}) {
    fs::path dir = scratch("roundtrip");
    auto a = make(spec, 120, 32, 1);
    a->save_weights(dir.string());
    auto b = make(spec, 120, 32, 2);
    EXPECT_NE(encode(*a, 120), encode(*b, 120)) << spec;
    b->load_weights(dir.string());
    EXPECT_EQ(encode(*a, 120), encode(*b, 120)) << spec;
  }
}

TEST(Weights, HuggingFaceParameterLayoutLoads) {
  // AxialPositionEmbeddings stores weights[0] as (l1, 1, d1) and weights[1] as (1, l2, d2).
  fs::path dir = scratch("hf");
  const auto e1 = labelled_table(0, 4, 3), e2 = labelled_table(1, 5, 2);
  write_npy((dir / "factor_0.npy").string(), {4, 1, 3}, e1.data());
  write_npy((dir / "factor_1.npy").string(), {1, 5, 2}, e2.data());
  auto e = make("axial:shape=4x5,dims=3x2", 20, 5);
  e->load_weights(dir.string());
  const std::vector<float> out = encode(*e, 20);
  const int64_t j = 13;  // [E1[13 div 5], E2[13 mod 5]] = [E1[2], E2[3]]
  EXPECT_EQ(std::vector<float>(out.begin() + j * 5, out.begin() + j * 5 + 5),
            (std::vector<float>{e1[6], e1[7], e1[8], e2[6], e2[7]}));
}

TEST(Weights, MismatchedOrMissingTablesAreRuntimeErrors) {
  fs::path dir = scratch("bad_weights");
  make("axial:shape=8x8,dims=4x4", 64, 8)->save_weights(dir.string());
  auto expect_error = [&](const std::string& spec, int64_t n, int64_t dim,
                          const std::string& says) {
    auto e = make(spec, n, dim);
    try {
      e->load_weights(dir.string());
      ADD_FAILURE() << "loaded into " << spec;
    } catch (const RuntimeError& err) {
      EXPECT_NE(std::string(err.what()).find(says), std::string::npos) << err.what();
    }
  };
  expect_error("axial:shape=8x16,dims=4x4", 64, 8, "expected a [16,4] table");
  expect_error("axial:shape=8x8,dims=2x6", 64, 8, "expected a [8,2] table");
  expect_error("axial:shape=4x4x4,dims=4x2x2", 64, 8, "expected a [4,4] table");
  expect_error("axial:shape=8", 8, 8, "only 1 factors");
  expect_error("learned", 64, 8, "table.npy");
  make("learned", 64, 8)->save_weights(dir.string());
  expect_error("learned", 65, 8, "expected a [>=65,8] table");
  expect_error("learned:positions=100", 64, 8, "expected a [100,8] table");
  auto longer = make("learned", 32, 8);  // a longer trained table serves a shorter sequence
  longer->load_weights(dir.string());
  EXPECT_EQ(longer->positions(), 64);
}

TEST(Hook, ApplyPosencAddsToQueriesAndKeysOnly) {
  Shape s{2, 3, 40, 40, 16};
  auto in = random_inputs(s, 3), plain = random_inputs(s, 3);
  attnbench::apply_posenc("axial:shape=8x5,dims=8x8", in);
  const std::vector<float> enc = encode(*make("axial:shape=8x5,dims=8x8", 40, 16, 0), 40);
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t i = 0; i < 40 * 16; ++i) {
      ASSERT_EQ(in.q.data()[r * 640 + i], plain.q.data()[r * 640 + i] + enc[i]);
      ASSERT_EQ(in.k.data()[r * 640 + i], plain.k.data()[r * 640 + i] + enc[i]);
    }
  EXPECT_TRUE(bit_identical(in.v, plain.v));
  attnbench::apply_posenc("", in);  // no encoding: unchanged
  EXPECT_THROW(attnbench::apply_posenc("axial:shape=4x4", in), UsageError);
}

TEST(Cli, PosencWritesEncodingWeightsAndJson) {
  fs::path d = scratch("cli");
  const std::string spec = "axial:shape=16x16,dims=20x12";
  CliResult r = run_cli("posenc --kind " + spec + " --seq 200 --dim 32 --batch 2 --reps 2 --out " +
                        (d / "pe.npy").string() + " --weights-out " + (d / "w").string() +
                        " --json " + (d / "posenc.json").string() + " --seed 4");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("memcpy"), std::string::npos) << r.output;
  NpyArray pe = read_npy((d / "pe.npy").string());
  EXPECT_EQ(pe.shape, (std::vector<int64_t>{200, 32}));
  EXPECT_EQ(pe.data, encode(*make(spec, 200, 32, 4), 200));
  EXPECT_EQ(read_npy((d / "w/factor_0.npy").string()).shape, (std::vector<int64_t>{16, 20}));
  EXPECT_EQ(read_npy((d / "w/factor_1.npy").string()).shape, (std::vector<int64_t>{16, 12}));
  nlohmann::json j = nlohmann::json::parse(std::ifstream(d / "posenc.json"));
  ASSERT_EQ(j["rows"].size(), 1u);
  const auto& row = j["rows"][0];
  EXPECT_EQ(row["kind"], spec);
  EXPECT_EQ(row["n"], 200);
  EXPECT_EQ(row["dim"], 32);
  EXPECT_EQ(row["param_count"], 16 * 20 + 16 * 12);
  EXPECT_EQ(row["param_bytes"], 4.0 * (16 * 20 + 16 * 12));
  EXPECT_EQ(row["full_table_bytes"], 4.0 * 200 * 32);
  EXPECT_GT(row["materialize_ms"].get<double>(), 0.0);
  EXPECT_GT(row["add_ms"].get<double>(), 0.0);

  // Weights loaded back (with another seed) give the same encoding.
  r = run_cli("posenc --kind " + spec + " --seq 200 --dim 32 --reps 1 --seed 9 --weights-in " +
              (d / "w").string() + " --out " + (d / "pe2.npy").string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(read_npy((d / "pe2.npy").string()).data, pe.data);

  // Several kinds and lengths make one row each.
  r = run_cli(
      "posenc --kind axial --kind learned --kind sinusoidal --seq 64,256 --dim 16 --reps 1 "
      "--json " +
      (d / "many.json").string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(d / "many.json"))["rows"].size(), 6u);
}

TEST(Cli, PosencErrorsExitWithUsageOrRuntimeCodes) {
  fs::path d = scratch("cli_bad");
  EXPECT_EQ(run_cli("posenc --kind axial:shape=8x8 --seq 100 --dim 16").code, 2);
  EXPECT_EQ(run_cli("posenc --kind axial:dims=8x9 --seq 64 --dim 16").code, 2);
  EXPECT_EQ(run_cli("posenc --kind nope --seq 64 --dim 16").code, 2);
  EXPECT_EQ(run_cli("posenc --kind axial --seq 64").code, 2);
  EXPECT_EQ(run_cli("posenc --kind axial --kind learned --seq 64 --dim 8 --out x.npy").code, 2);
  ASSERT_EQ(run_cli("posenc --kind axial:shape=8x8 --seq 64 --dim 8 --reps 1 --weights-out " +
                    (d / "w").string())
                .code,
            0);
  CliResult r = run_cli("posenc --kind axial:shape=8x16 --seq 64 --dim 8 --reps 1 --weights-in " +
                        (d / "w").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("expected a [16,4] table"), std::string::npos) << r.output;
  r = run_cli("posenc --list");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.output.find("order=row|col"), std::string::npos) << r.output;
}

// Mean over heads and rows of the dense softmax mass within |i − j| <= radius: the coverage
// a sliding window of that radius reports, computed here directly from q and k.
double window_mass(const Shape& s, const Tensor& q, const Tensor& k, int64_t radius) {
  double total = 0;
  for (int64_t h = 0; h < s.heads; ++h)
    for (int64_t i = 0; i < s.nq; ++i) {
      std::vector<double> z(size_t(s.nk));
      for (int64_t j = 0; j < s.nk; ++j) {
        double dot = 0;
        for (int64_t d = 0; d < s.dim; ++d)
          dot += double(q.head(0, h)[i * s.dim + d]) * k.head(0, h)[j * s.dim + d];
        z[size_t(j)] = s.softmax_scale() * dot;
      }
      const double m = *std::max_element(z.begin(), z.end());
      double all = 0, near = 0;
      for (int64_t j = 0; j < s.nk; ++j) {
        const double p = std::exp(z[size_t(j)] - m);
        all += p;
        if (std::abs(i - j) <= radius) near += p;
      }
      total += near / all;
    }
  return total / double(s.heads * s.nq);
}

// What the variant attends over is q + E and k + E: a sliding window's coverage (the dense
// mass inside its window, measured on the q and k it ran on) is that of the encoded inputs,
// not of the plain ones, and the dense reference saw the same encoded inputs as the variant.
TEST(Cli, RunWithPosencEncodesBeforeAttention) {
  fs::path d = scratch("run_posenc");
  const std::string spec = "axial:shape=8x8,dims=8x8";
  CliResult r = run_cli(
      "run --variant sliding_window:radius=2 --variant full --seq 64 --heads 2 --dim 16 --reps 1 "
      "--min-time 0.001 --posenc " +
      spec + " --out " + d.string());
  ASSERT_EQ(r.code, 0) << r.output;
  const nlohmann::json j = nlohmann::json::parse(std::ifstream(d / "results.json"));
  ASSERT_EQ(j["rows"].size(), 2u);
  const auto& window = j["rows"][0];
  const auto& full = j["rows"][1];
  ASSERT_EQ(window["variant"], "sliding_window");
  ASSERT_EQ(full["variant"], "full");
  EXPECT_EQ(window["posenc"], spec);

  const Shape s{1, 2, 64, 64, 16};
  const auto plain = attnbench::make_inputs(s, "gaussian", 0);  // `run`'s default seed
  auto encoded = attnbench::make_inputs(s, "gaussian", 0);
  const std::vector<float> enc = encode(*make(spec, 64, 16, 0), 64);  // the hook's fixed seed
  for (Tensor* t : {&encoded.q, &encoded.k})
    for (int64_t e = 0; e < t->size(); ++e) t->data()[e] += enc[size_t(e % (64 * 16))];
  const double with = window_mass(s, encoded.q, encoded.k, 2);
  const double without = window_mass(s, plain.q, plain.k, 2);
  ASSERT_GT(std::abs(with - without), 1e-2);  // the encoding changes what the window covers
  EXPECT_NEAR(window["coverage"].get<double>(), with, 1e-6);
  EXPECT_LT(full["rel_err"].get<double>(), 1e-5);

  EXPECT_EQ(run_cli("run --variant full --seq 128 --heads 2 --dim 16 --reps 1 --posenc "
                    "axial:shape=10x10")
                .code,
            2);
}

}  // namespace
}  // namespace attn::test
