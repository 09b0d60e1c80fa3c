// Measured memory: the allocation hook behind the Google Benchmark MemoryManager against each
// variant's analytic extra_bytes(), and the hook's own bookkeeping.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "harness/bench.h"
#include "test_util.h"

namespace attn::test {
namespace {

struct Measured {
  int64_t peak = 0, allocs = 0;
};

// One forward() with tracking on (what AllocMemoryManager::Start/Stop do) and the counting
// gate open only around it, as in a sweep's memory run. (The Google Benchmark path itself is
// checked end to end in test_sweep.cpp: full_materialized's n x n buffer measured exactly.)
Measured measure_forward(Attention& a, const Shape& s, const attnbench::Inputs& in, Tensor& out) {
  attnbench::alloc_tracking_start();
  attnbench::alloc_gate(true);
  a.forward(s, in.q, in.k, in.v, out);
  attnbench::alloc_gate(false);
  const attnbench::AllocStats r = attnbench::alloc_tracking_stop();
  return {r.peak_bytes, r.allocs};
}

TEST(MemoryHook, CountsPeakNotTotalAndOnlyInsideTheGate) {
  std::vector<char> before(1 << 20);  // allocated before the start: never counted
  attnbench::alloc_tracking_start();
  {
    FloatBuffer outside(1000);  // gate closed: not counted
    attnbench::alloc_gate(true);
    {
      FloatBuffer a(1 << 16);          // 256 KiB
      std::vector<double> b(1 << 14);  // 128 KiB
    }
    auto c = std::make_unique<char[]>(100000);
    before = std::vector<char>();  // freeing an uncounted block must not lower the total...
    auto d = std::make_unique<char[]>(50000);
    auto e = std::make_unique<char[]>(300000);  // ...which this block takes to a new peak
    attnbench::alloc_gate(false);
  }
  attnbench::AllocStats r = attnbench::alloc_tracking_stop();
  EXPECT_EQ(r.allocs, 5);
  // 256 KiB + 128 KiB live together, freed; then 100000 + 50000 + 300000 bytes live together:
  // the peak is the larger live set, not the 843216 bytes allocated in total.
  EXPECT_EQ(r.peak_bytes, 100000 + 50000 + 300000);
  // A new start forgets everything.
  attnbench::alloc_tracking_start();
  r = attnbench::alloc_tracking_stop();
  EXPECT_EQ(r.allocs, 0);
  EXPECT_EQ(r.peak_bytes, 0);
}

TEST(MemoryHook, AlignedAllocationsKeepTheirAlignment) {
  for (size_t align : {16, 64, 256, 4096}) {
    void* p = ::operator new(1000, std::align_val_t(align));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % align, 0u) << align;
    ::operator delete(p, std::align_val_t(align));
  }
  float* f = alloc_floats(33);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f) % 64, 0u);
  free_floats(f);
}

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM"; the kernel reports kB).
double proc_status_bytes(const std::string& field) {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind(field + ":", 0) == 0) return 1024.0 * std::stod(line.substr(field.size() + 1));
  ADD_FAILURE() << field << " not in /proc/self/status";
  return 0;
}

// Touching a block that takes the resident set 64 MiB past its previous high-water mark
// raises the reported peak by at least that much, to the kernel's own VmHWM.
TEST(MemoryHook, PeakRssIsReported) {
  const double peak_before = attnbench::peak_rss_bytes();
  const double rss = proc_status_bytes("VmRSS");
  const size_t grow = size_t(std::max(0.0, peak_before - rss)) + (size_t(64) << 20);
  std::unique_ptr<char[]> block(new char[grow]);
  volatile char* p = block.get();
  for (size_t i = 0; i < grow; i += 4096) p[i] = char(i);  // every page resident
  const double peak_after = attnbench::peak_rss_bytes();
  const double hwm = proc_status_bytes("VmHWM");
  EXPECT_GE(peak_after, peak_before + 60.0 * (1 << 20))
      << "before " << peak_before << " B, after touching " << grow << " B: " << peak_after;
  EXPECT_NEAR(peak_after, hwm, 4.0 * (1 << 20));
}

// Below this, analytic formulas and real allocations differ by small constant buffers (a few
// per-thread vectors, allocator rounding) that do not matter for how memory grows with n;
// the factor-of-2 test is about the n- and D-dependent buffers, which at the shapes below are
// well above it for every variant that keeps one (an n x n matrix is 4 MiB at n = 1024).
constexpr double kFloorBytes = 64 * 1024;

// Every registered variant, in its default spec, at two shapes: measured peak within a factor
// of 2 of extra_bytes() in both directions. New variants are covered automatically.
TEST(MemoryHook, MeasuredPeakWithinFactorTwoOfAnalyticForEveryVariant) {
  const std::vector<Shape> shapes = {Shape{1, 2, 1024, 1024, 64}, Shape{2, 2, 2048, 2048, 32}};
  with_threads(2, [&] {
    for (const VariantInfo& v : variants()) {
      for (const Shape& s : shapes) {
        auto a = make_attention(v.name);
        try {
          a->validate(s);
        } catch (const UsageError& e) {
          ADD_FAILURE() << v.name << " rejects " << s.str() << " in its default spec: " << e.what();
          continue;
        }
        auto in = random_inputs(s, 5);
        Tensor out(s.batch, s.heads, s.nq, s.dim);
        a->forward(s, in.q, in.k, in.v, out);  // first call may set up lasting state
        const Measured m = measure_forward(*a, s, in, out);
        const double analytic = a->extra_bytes(s);
        const double mm = std::max(double(m.peak), kFloorBytes);
        const double aa = std::max(analytic, kFloorBytes);
        EXPECT_LE(mm, 2 * aa) << v.name << " " << s.str() << ": measured " << m.peak
                              << " B vs analytic " << analytic << " B";
        EXPECT_GE(2 * mm, aa) << v.name << " " << s.str() << ": measured " << m.peak
                              << " B vs analytic " << analytic << " B";
        RecordProperty(v.name + "_" + std::to_string(s.nq),
                       std::to_string(m.peak) + " measured / " + std::to_string(int64_t(analytic)) +
                           " analytic bytes");
      }
    }
    return 0;
  });
}

}  // namespace
}  // namespace attn::test
