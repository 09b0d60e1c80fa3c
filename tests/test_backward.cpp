// Backward passes (Attention::forward_train / backward): every variant that has one, driven by
// the registry, against fp64 central finite differences of its own forward (an oracle that
// shares no code with any backward), against the fp64 reference gradient restricted to the
// variant's pattern, bit-identical for 1 and 2 threads; bad dO and mismatched saved state
// rejected; memory within 2x of the analytic figures; `apply --dout --grads-out` end to end.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "attention/npy.h"
#include "attention/plan.h"
#include "harness/bench.h"
#include "test_util.h"

namespace attn::test {
namespace {

// Variants listed as having no backward yet (`attnbench list` says so too).
const std::set<std::string> kNoBackwardYet = {"lsh", "performer", "linformer", "nystrom", "linear"};

// Specs with small parameters, so that the patterns are not dense at the tiny test lengths;
// a variant with a backward that is not listed here is tested in its default spec.
const std::map<std::string, std::vector<std::string>> kSpecs = {
    {"sliding_window", {"sliding_window:radius=9,dilation=3", "sliding_window:radius=20"}},
    {"longformer",
     {"longformer:radius=20,dilation=2,global_idx=3;40;69", "longformer:radius=7,global=70"}},
    {"bigbird",
     {"bigbird:block=32,window=1,global=1,random=2,seed=4",
      "bigbird:block=7,window=5,global=3,random=0"}},
    {"sink_window", {"sink_window:window=10,sinks=70", "sink_window:window=9,sinks=3"}},
    {"block_sparse", {"block_sparse:block=32,density=0.3,seed=2"}},
    {"sparse_transformer",
     {"sparse_transformer:pattern=strided,stride=20",
      "sparse_transformer:pattern=strided,stride=30,causal=false",
      "sparse_transformer:pattern=fixed,stride=16,summary=16",
      "sparse_transformer:pattern=fixed,stride=40,summary=7,causal=false"}},
};

std::vector<std::string> backward_specs() {
  std::vector<std::string> specs;
  for (const VariantInfo& v : variants()) {
    if (!make_attention(v.name)->has_backward()) continue;
    if (kSpecs.count(v.name))
      specs.insert(specs.end(), kSpecs.at(v.name).begin(), kSpecs.at(v.name).end());
    else
      specs.push_back(v.name);
  }
  return specs;
}

Tensor random_dout(const Shape& s, uint64_t seed) {
  Tensor t(s.batch, s.heads, s.nq, s.dim);
  attnbench::fill_gaussian(t, seed, 4);
  return t;
}

// The instance of `spec` if it accepts `s`, else null.
std::unique_ptr<Attention> accepting(const std::string& spec, const Shape& s) {
  auto a = make_attention(spec);
  try {
    a->validate(s);
  } catch (const UsageError&) {
    return nullptr;
  }
  return a;
}

bool plan_based(const std::string& spec) {
  return dynamic_cast<const PlanAttention*>(make_attention(spec).get()) != nullptr;
}

struct Result {
  Tensor out, dq, dk, dv;
};

Result train_step(Attention& a, const Shape& s, const attnbench::Inputs& in, const Tensor& dout) {
  Result r{Tensor(s.batch, s.heads, s.nq, s.dim), Tensor(s.batch, s.heads, s.nq, s.dim),
           Tensor(s.batch, s.heads, s.nk, s.dim), Tensor(s.batch, s.heads, s.nk, s.dim)};
  Saved saved;
  a.forward_train(s, in.q, in.k, in.v, r.out, saved);
  a.backward(s, in.q, in.k, in.v, r.out, saved, dout, {r.dq, r.dk, r.dv});
  return r;
}

// The variant's pattern as an element mask (its plan's row_keys), or none for dense variants.
struct PatternMask {
  ElementMask fn;
  const ElementMask* get() const { return fn ? &fn : nullptr; }
};

PatternMask pattern_mask(const Attention& a, const Shape& s) {
  const auto plan = a.plan(s);
  if (!plan) return {};
  using Rows = std::vector<std::vector<std::vector<int64_t>>>;  // [h][i] keys, ascending
  auto keys = std::make_shared<Rows>(s.heads, std::vector<std::vector<int64_t>>(s.nq));
  for (int64_t h = 0; h < s.heads; ++h)
    for (int64_t i = 0; i < s.nq; ++i) plan->row_keys(h, i, (*keys)[h][i]);
  return {[keys](int64_t, int64_t h, int64_t i, int64_t j) {
    return std::binary_search((*keys)[h][i].begin(), (*keys)[h][i].end(), j);
  }};
}

// L = Σ dO ∘ out in fp64.
double loss(const Tensor& out, const Tensor& dout) {
  double l = 0;
  for (int64_t e = 0; e < out.size(); ++e) l += double(out.data()[e]) * double(dout.data()[e]);
  return l;
}

// Central differences of L(x) = loss(f(x)) at `count` seeded elements of x, next to the
// analytic gradient's values there: {fd..., analytic...}. The step is the float difference
// actually applied, so that rounding x ± h to fp32 does not bias the quotient.
template <class Forward>
std::pair<std::vector<double>, std::vector<double>> finite_differences(Tensor& x,
                                                                       const Tensor& grad,
                                                                       int count, double h,
                                                                       uint64_t seed, Forward&& f) {
  std::mt19937_64 rng(seed);
  std::vector<double> fd, an;
  for (int c = 0; c < count; ++c) {
    const int64_t e = int64_t(rng() % uint64_t(x.size()));
    const float x0 = x.data()[e];
    const float xp = float(x0 + h), xm = float(x0 - h);
    x.data()[e] = xp;
    const double lp = f();
    x.data()[e] = xm;
    const double lm = f();
    x.data()[e] = x0;
    fd.push_back((lp - lm) / (double(xp) - double(xm)));
    an.push_back(grad.data()[e]);
  }
  return {fd, an};
}

double relative(const std::vector<double>& a, const std::vector<double>& ref) {
  double e = 0, r = 0;
  for (size_t i = 0; i < a.size(); ++i)
    e += (a[i] - ref[i]) * (a[i] - ref[i]), r += ref[i] * ref[i];
  return r > 0 ? std::sqrt(e / r) : std::sqrt(e);
}

std::vector<double> as_doubles(const Tensor& t) {
  return std::vector<double>(t.data(), t.data() + t.size());
}

TEST(Backward, EveryVariantHasOneOrIsListedWithout) {
  for (const VariantInfo& v : variants()) {
    const bool has = make_attention(v.name)->has_backward();
    EXPECT_NE(has, kNoBackwardYet.count(v.name) > 0)
        << v.name
        << (has ? " has a backward: remove it from kNoBackwardYet"
                : " has no backward and is not listed as such");
  }
  for (const std::string& name : kNoBackwardYet) {
    auto a = make_attention(name);
    Shape s{1, 1, 16, 16, 16};
    auto in = random_inputs(s, 1);
    Tensor out(1, 1, 16, 16);
    Saved saved;
    EXPECT_THROW(a->forward_train(s, in.q, in.k, in.v, out, saved), UsageError) << name;
  }
}

// The fp64 reference gradient against central differences of the fp64 reference forward, with
// a mask, causal and not, Nq ≠ Nk: the ground truth checked by an independent oracle.
TEST(Backward, ReferenceGradientMatchesFiniteDifferencesOfTheFp64Forward) {
  const ElementMask mask = [](int64_t, int64_t h, int64_t i, int64_t j) {
    return (i + j + h) % 3 != 0 || j == 0;
  };
  for (const Shape& s : {Shape{1, 2, 9, 9, 4, true}, Shape{2, 1, 7, 11, 4, false}}) {
    for (const ElementMask* m : {(const ElementMask*)nullptr, &mask}) {
      auto in = random_inputs(s, 3);
      const Tensor dout = random_dout(s, 4);
      const ReferenceGrads g = reference_gradients(s, in.q, in.k, in.v, dout, m);
      auto L = [&] {
        const std::vector<double> o = reference_attention(s, in.q, in.k, in.v, m);
        double l = 0;
        for (size_t e = 0; e < o.size(); ++e) l += o[e] * double(dout.data()[e]);
        return l;
      };
      const std::vector<std::pair<Tensor*, const std::vector<double>*>> xs = {
          {&in.q, &g.dq}, {&in.k, &g.dk}, {&in.v, &g.dv}};
      for (auto [x, grad] : xs) {
        std::vector<double> fd, an;
        for (int64_t e = 0; e < x->size(); ++e) {
          const float x0 = x->data()[e], xp = x0 + 1e-3f, xm = x0 - 1e-3f;
          x->data()[e] = xp;
          const double lp = L();
          x->data()[e] = xm;
          const double lm = L();
          x->data()[e] = x0;
          fd.push_back((lp - lm) / (double(xp) - double(xm)));
          an.push_back((*grad)[e]);
        }
        EXPECT_LT(relative(an, fd), 1e-5) << s.str() << (m ? " masked" : "");
      }
    }
  }
}

// Every backward against central differences of its own fp32 forward at sampled elements.
TEST(Backward, EveryBackwardMatchesFiniteDifferencesOfItsOwnForward) {
  uint64_t seed = 100;
  for (const std::string& spec : backward_specs()) {
    std::vector<Shape> shapes = {Shape{1, 2, 70, 70, 8, false}, Shape{1, 2, 70, 70, 8, true}};
    if (!plan_based(spec)) shapes.push_back(Shape{1, 2, 37, 70, 8, false});  // dense: Nq ≠ Nk
    int ran = 0;
    for (const Shape& s : shapes) {
      auto a = accepting(spec, s);
      if (!a) continue;
      ++ran;
      auto in = random_inputs(s, seed++);
      const Tensor dout = random_dout(s, seed++);
      const Result r = train_step(*a, s, in, dout);
      Tensor out(s.batch, s.heads, s.nq, s.dim);
      auto L = [&] {
        a->forward(s, in.q, in.k, in.v, out);
        return loss(out, dout);
      };
      const std::vector<std::pair<Tensor*, const Tensor*>> xs = {
          {&in.q, &r.dq}, {&in.k, &r.dk}, {&in.v, &r.dv}};
      const char* names[] = {"dQ", "dK", "dV"};
      for (int x = 0; x < 3; ++x) {
        const auto [fd, an] = finite_differences(*xs[x].first, *xs[x].second, 24, 2e-2, seed++, L);
        EXPECT_LT(relative(an, fd), 1e-2) << spec << " " << s.str() << " " << names[x];
      }
    }
    EXPECT_GE(ran, 1) << spec << ": no shape validated";
  }
}

// Shapes around the 64-row blocks and 128-key tiles, B·H above the thread count.
Shape random_shape(std::mt19937& rng) {
  const int64_t lengths[] = {1, 7, 63, 65, 130, 200, 257, 300};
  const int64_t n = lengths[rng() % 8];
  return Shape{1 + int64_t(rng() % 2),       2 + int64_t(rng() % 2), n, n,
               16 + 16 * int64_t(rng() % 2), bool(rng() % 2)};
}

// Every backward against the fp64 reference gradient of exact attention over the variant's
// own pattern (< 1e-5 relative: these variants are exact), and bit-identical for 1 and 2
// threads. Dense variants also at Nq ≠ Nk.
TEST(Backward, EveryBackwardMatchesTheMaskedReferenceAndIsThreadCountIndependent) {
  std::mt19937 rng(5);
  uint64_t seed = 1;
  for (const std::string& spec : backward_specs()) {
    std::vector<Shape> shapes = {Shape{2, 2, 450, 450, 16, false}, Shape{2, 2, 450, 450, 16, true}};
    for (int c = 0; c < 4; ++c) shapes.push_back(random_shape(rng));
    if (!plan_based(spec))
      for (const Shape& s : {Shape{1, 2, 100, 150, 16}, Shape{1, 3, 300, 77, 32}})
        shapes.push_back(s);
    int ran = 0;
    for (const Shape& s : shapes) {
      auto a = accepting(spec, s);
      if (!a) continue;
      ++ran;
      const std::string where = spec + " " + s.str();
      auto in = random_inputs(s, seed++);
      const Tensor dout = random_dout(s, seed++);
      const Result one = with_threads(1, [&] { return train_step(*a, s, in, dout); });
      const Result two = with_threads(2, [&] { return train_step(*a, s, in, dout); });
      EXPECT_TRUE(bit_identical(one.dq, two.dq)) << where << ": dQ differs for 1 and 2 threads";
      EXPECT_TRUE(bit_identical(one.dk, two.dk)) << where << ": dK differs for 1 and 2 threads";
      EXPECT_TRUE(bit_identical(one.dv, two.dv)) << where << ": dV differs for 1 and 2 threads";
      const PatternMask m = pattern_mask(*a, s);
      const ReferenceGrads g = reference_gradients(s, in.q, in.k, in.v, dout, m.get());
      EXPECT_LT(relative(as_doubles(two.dq), g.dq), 1e-5) << where << " dQ";
      EXPECT_LT(relative(as_doubles(two.dk), g.dk), 1e-5) << where << " dK";
      EXPECT_LT(relative(as_doubles(two.dv), g.dv), 1e-5) << where << " dV";
    }
    EXPECT_GE(ran, 2) << spec << ": too few shapes validated";
  }
}

std::string usage_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

TEST(Backward, BadGradientOutputAndMismatchedSavedStateAreUsageErrors) {
  const Shape s{1, 2, 40, 40, 16, true};
  auto in = random_inputs(s, 9);
  for (const std::string& spec : backward_specs()) {
    auto a = accepting(spec, s);
    if (!a) continue;
    Tensor out(1, 2, 40, 16), dq(1, 2, 40, 16), dk(1, 2, 40, 16), dv(1, 2, 40, 16);
    Saved saved;
    EXPECT_NE(usage_message([&] {
                a->backward(s, in.q, in.k, in.v, out, saved, random_dout(s, 1), {dq, dk, dv});
              }).find("no forward_train"),
              std::string::npos)
        << spec;
    a->forward_train(s, in.q, in.k, in.v, out, saved);
    Tensor wrong(1, 2, 39, 16);
    EXPECT_NE(usage_message([&] {
                a->backward(s, in.q, in.k, in.v, out, saved, wrong, {dq, dk, dv});
              }).find("dO has shape [1,2,39,16]"),
              std::string::npos)
        << spec;
    Tensor nan = random_dout(s, 2);
    nan.data()[77] = std::nanf("");
    EXPECT_NE(usage_message([&] {
                a->backward(s, in.q, in.k, in.v, out, saved, nan, {dq, dk, dv});
              }).find("non-finite"),
              std::string::npos)
        << spec;
    Shape other = s;
    other.causal = false;
    EXPECT_NE(usage_message([&] {
                a->backward(other, in.q, in.k, in.v, out, saved, random_dout(s, 1), {dq, dk, dv});
              }).find("the saved state comes from"),
              std::string::npos)
        << spec;
  }
}

// What forward_train keeps is what saved_bytes() declares; the backward's measured peak is
// within 2x of backward_extra_bytes() (as test_memory.cpp checks the forward's).
TEST(Backward, SavedAndScratchMemoryMatchTheAnalyticFigures) {
  const Shape s{1, 2, 1024, 1024, 64, true};
  with_threads(2, [&] {
    for (const std::string& spec : backward_specs()) {
      if (spec == "reference") continue;  // fp64 loops: slow at this size, figures trivial
      auto a = accepting(spec, s);
      if (!a) continue;
      auto in = random_inputs(s, 5);
      const Tensor dout = random_dout(s, 6);
      Tensor out(1, 2, 1024, 64), dq(1, 2, 1024, 64), dk(1, 2, 1024, 64), dv(1, 2, 1024, 64);
      Saved saved;
      a->forward_train(s, in.q, in.k, in.v, out, saved);
      EXPECT_EQ(double(saved.floats.size() * sizeof(float)), a->saved_bytes(s)) << spec;
      attnbench::alloc_tracking_start();
      attnbench::alloc_gate(true);
      a->backward(s, in.q, in.k, in.v, out, saved, dout, {dq, dk, dv});
      attnbench::alloc_gate(false);
      const double measured = double(attnbench::alloc_tracking_stop().peak_bytes);
      const double analytic = a->backward_extra_bytes(s), floor = 64 * 1024;
      EXPECT_LE(std::max(measured, floor), 2 * std::max(analytic, floor))
          << spec << ": measured " << measured << " B vs analytic " << analytic << " B";
      EXPECT_GE(2 * std::max(measured, floor), std::max(analytic, floor))
          << spec << ": measured " << measured << " B vs analytic " << analytic << " B";
    }
    return 0;
  });
}

namespace fs = std::filesystem;

void save(const fs::path& p, const Tensor& t, int rank) {
  std::vector<int64_t> shape = {t.batch(), t.heads(), t.seq(), t.dim()};
  shape.erase(shape.begin(), shape.begin() + (4 - rank));
  write_npy(p.string(), shape, t.data());
}

bool equals(const NpyArray& a, const Tensor& t, std::vector<int64_t> shape) {
  return a.shape == shape && a.data.size() == size_t(t.size()) &&
         std::equal(a.data.begin(), a.data.end(), t.data());
}

TEST(Backward, ApplyWritesTheGradientsAndRejectsBadGradientOutputs) {
  const fs::path d = fs::temp_directory_path() / "attn_cli_backward";
  fs::remove_all(d);
  fs::create_directories(d);
  const Shape s{1, 2, 37, 50, 16, false};
  auto in = random_inputs(s, 21);
  const Tensor dout = random_dout(s, 22);
  save(d / "q.npy", in.q, 3), save(d / "k.npy", in.k, 3), save(d / "v.npy", in.v, 3);
  save(d / "do.npy", dout, 3);
  const std::string io = " --q " + (d / "q.npy").string() + " --k " + (d / "k.npy").string() +
                         " --v " + (d / "v.npy").string() + " --out " + (d / "o.npy").string();
  CliResult r = run_cli("apply --variant full" + io + " --dout " + (d / "do.npy").string() +
                        " --grads-out " + (d / "g").string());
  ASSERT_EQ(r.code, 0) << r.output;
  auto a = make_attention("full");
  const Result want = train_step(*a, s, in, dout);
  EXPECT_TRUE(equals(read_npy((d / "g/dq.npy").string()), want.dq, {2, 37, 16}));
  EXPECT_TRUE(equals(read_npy((d / "g/dk.npy").string()), want.dk, {2, 50, 16}));
  EXPECT_TRUE(equals(read_npy((d / "g/dv.npy").string()), want.dv, {2, 50, 16}));

  auto one_line_error = [&](const std::string& args, const std::string& says, int code) {
    const CliResult e = run_cli("apply " + args);
    EXPECT_EQ(e.code, code) << args << ": " << e.output;
    EXPECT_EQ(std::count(e.output.begin(), e.output.end(), '\n'), 1) << e.output;
    EXPECT_NE(e.output.find(says), std::string::npos) << e.output;
  };
  save(d / "bad.npy", in.k, 3);  // [2,50,16]: the keys' shape, not the output's
  one_line_error("--variant full" + io + " --dout " + (d / "bad.npy").string() + " --grads-out " +
                     (d / "g2").string(),
                 "must have the output's shape [1,2,37,16]", 2);
  Tensor nan = random_dout(s, 22);
  nan.data()[5] = std::nanf("");
  save(d / "nan.npy", nan, 3);
  one_line_error("--variant full" + io + " --dout " + (d / "nan.npy").string() + " --grads-out " +
                     (d / "g3").string(),
                 "contains NaN or Inf", 1);  // the .npy reader's rule for every input file
  one_line_error("--variant full" + io + " --dout " + (d / "do.npy").string(),
                 "--dout and --grads-out go together", 2);
  one_line_error("--variant lsh --q " + (d / "q.npy").string() + " --k " + (d / "q.npy").string() +
                     " --v " + (d / "q.npy").string() + " --out " + (d / "o.npy").string() +
                     " --dout " + (d / "do.npy").string() + " --grads-out " + (d / "g4").string(),
                 "no backward yet", 2);
  EXPECT_FALSE(fs::exists(d / "g2")) << "a rejected dO must not leave gradients behind";
  const CliResult list = run_cli("list");
  EXPECT_NE(list.output.find("backward: no backward yet"), std::string::npos) << list.output;
}

}  // namespace
}  // namespace attn::test
