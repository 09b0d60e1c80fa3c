// Timing and memory measurement of one attention forward() through Google Benchmark.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace attnbench {

// Allocation counting through the harness's global operator new/delete replacement. Counts
// only while a MemoryManager run is active AND the counting gate is open (the gate wraps the
// timed loop, so Google Benchmark's own bookkeeping is not charged to the variant).
struct AllocStats {
  int64_t peak_bytes = 0;  // peak of (bytes allocated − bytes freed) since start
  int64_t allocs = 0;      // number of allocations since start
};
void alloc_tracking_start();
AllocStats alloc_tracking_stop();
void alloc_gate(bool open);

// Records, between Start() and Stop(), the peak bytes and the number of allocations made
// through operator new (attn::alloc_floats included).
class AllocMemoryManager : public benchmark::MemoryManager {
 public:
  void Start() override;
  void Stop(Result* result) override;  // the pure virtual of Google Benchmark 1.7.1
};

// Process peak resident set size (getrusage ru_maxrss), bytes.
double peak_rss_bytes();

// One measured case as Google Benchmark reports it.
struct Timing {
  bool ok = false;
  std::string error;
  std::vector<double> reps_ms;  // mean real time per iteration of each repetition
  // The load-robust pair the regression gate compares (docs/DESIGN.md, "The regression gate"):
  // process CPU time (all threads) per iteration of each repetition, and the control measured
  // right after that repetition: CPU ms per GFLOP of a fixed oneDNN sgemm.
  std::vector<double> cpu_ms_reps, control_ms_reps;
  double median_ms = 0, min_ms = 0, max_ms = 0, cv = 0;
  int64_t mem_peak_bytes = 0;  // peak bytes during forward() (memory run)
  int64_t mem_allocs = 0;      // allocations per forward()
};

// Google Benchmark's complexity fit of a family (class chosen on CPU time by GB 1.7.1).
struct GbComplexity {
  bool valid = false;
  std::string big_o;  // "N^2", "N", "NlgN", ...
  double rms = 0;     // normalized RMS of the fit (fraction)
};

struct BenchSettings {
  int reps = 3;
  double min_time = 0.05;  // seconds per repetition (GB MinTime)
  bool control = true;     // measure the sgemm control after every repetition
};

// The control probe: CPU milliseconds (all threads of the process) per GFLOP of a fixed
// 512x512x512 oneDNN sgemm, repeated `calls` times. Measured beside each repetition, it
// tracks what the machine's load does to compute-bound work at that moment (clock, shared
// cache, preemption), so the gate can divide it out.
double control_cpu_ms_per_gflop(int calls = 4);

// A family of cases measured over n (ascending). `prepare(i)` builds case i's inputs outside
// the timed region and returns false to skip it (with `skip_reason(i)`); `body()` is one
// forward(); `done(i, timing)` receives each case's result as soon as it is measured.
struct BenchFamily {
  std::string name;
  std::vector<int64_t> ns;
  std::function<bool(size_t)> prepare;
  std::function<std::string(size_t)> skip_reason;
  std::function<void()> body;
  std::function<void(size_t, const Timing&)> done;
};

// Registers the family (RegisterBenchmark, UseRealTime, Repetitions, MinTime, warm-up,
// SetComplexityN + Complexity(oAuto) when it has >= 2 n) and runs it with the allocation
// MemoryManager. Console output of Google Benchmark is suppressed.
GbComplexity run_family(const BenchFamily& family, const BenchSettings& settings);

// "N^2" etc. for Google Benchmark's BigO class.
std::string big_o_name(benchmark::BigO o);

}  // namespace attnbench
