#include "harness/bench.h"

#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <vector>

#include "attention/kernels/gemm.h"
#include "harness/stats.h"

// ---------------------------------------------------------------------------------------------
// Global operator new/delete replacement. Every block carries a 16-byte header just before the
// returned pointer: the start of the underlying malloc block and (size << 1 | counted). Frees
// only subtract blocks that were counted, so memory allocated before a measurement and freed
// during it (a variant's cached state, say) cannot drive the running total below zero.
namespace {

struct Header {
  void* base;
  uint64_t size_counted;
};
static_assert(sizeof(Header) == 16);

std::atomic<bool> g_active{false};  // between MemoryManager Start() and Stop()
std::atomic<bool> g_gate{false};    // around the timed loop only
std::atomic<int64_t> g_current{0}, g_peak{0}, g_allocs{0};

// What the memory runs of the current case recorded. Google Benchmark 1.7.1 hands reporters a
// pointer into a vector it keeps growing (Run::memory_result can dangle), so the harness keeps
// its own copy: the peak over the case's memory runs, and allocations per forward().
struct CaseMemory {
  int64_t peak = 0, allocs = 0, forwards = 0;
} g_case_memory;
int64_t g_forwards_in_run = 0;

void note_alloc(int64_t size) {
  const int64_t now = g_current.fetch_add(size, std::memory_order_relaxed) + size;
  int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
  g_allocs.fetch_add(1, std::memory_order_relaxed);
}

void* allocate(size_t size, size_t align) {
  align = std::max<size_t>(align, alignof(std::max_align_t));
  const size_t offset = std::max<size_t>(align, sizeof(Header));
  void* base = nullptr;
  if (align <= alignof(std::max_align_t)) {
    base = std::malloc(size + offset);
  } else if (posix_memalign(&base, align, size + offset) != 0) {
    base = nullptr;
  }
  if (!base) return nullptr;
  char* user = static_cast<char*>(base) + offset;
  const bool counted =
      g_active.load(std::memory_order_relaxed) && g_gate.load(std::memory_order_relaxed);
  reinterpret_cast<Header*>(user)[-1] = {base, (uint64_t(size) << 1) | (counted ? 1u : 0u)};
  if (counted) note_alloc(int64_t(size));
  return user;
}

void* allocate_or_throw(size_t size, size_t align) {
  if (void* p = allocate(size, align)) return p;
  throw std::bad_alloc();
}

void release(void* p) noexcept {
  if (!p) return;
  const Header h = static_cast<Header*>(p)[-1];
  if ((h.size_counted & 1) && g_active.load(std::memory_order_relaxed))
    g_current.fetch_sub(int64_t(h.size_counted >> 1), std::memory_order_relaxed);
  std::free(h.base);
}

}  // namespace

void* operator new(size_t n) {
  return allocate_or_throw(n, 0);
}
void* operator new[](size_t n) {
  return allocate_or_throw(n, 0);
}
void* operator new(size_t n, const std::nothrow_t&) noexcept {
  return allocate(n, 0);
}
void* operator new[](size_t n, const std::nothrow_t&) noexcept {
  return allocate(n, 0);
}
void* operator new(size_t n, std::align_val_t a) {
  return allocate_or_throw(n, size_t(a));
}
void* operator new[](size_t n, std::align_val_t a) {
  return allocate_or_throw(n, size_t(a));
}
void* operator new(size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, size_t(a));
}
void* operator new[](size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, size_t(a));
}
void operator delete(void* p) noexcept {
  release(p);
}
void operator delete[](void* p) noexcept {
  release(p);
}
void operator delete(void* p, size_t) noexcept {
  release(p);
}
void operator delete[](void* p, size_t) noexcept {
  release(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  release(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  release(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  release(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  release(p);
}
void operator delete(void* p, size_t, std::align_val_t) noexcept {
  release(p);
}
void operator delete[](void* p, size_t, std::align_val_t) noexcept {
  release(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  release(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  release(p);
}

namespace attnbench {

void alloc_tracking_start() {
  g_active.store(false);
  g_current.store(0), g_peak.store(0), g_allocs.store(0);
  g_active.store(true);
}

AllocStats alloc_tracking_stop() {
  g_active.store(false);
  return {g_peak.load(), g_allocs.load()};
}

void alloc_gate(bool open) {
  g_gate.store(open);
}

void AllocMemoryManager::Start() {
  g_forwards_in_run = 0;
  alloc_tracking_start();
}

void AllocMemoryManager::Stop(Result* result) {
  const AllocStats s = alloc_tracking_stop();
  result->max_bytes_used = s.peak_bytes;
  result->num_allocs = s.allocs;
  g_case_memory.peak = std::max(g_case_memory.peak, s.peak_bytes);
  g_case_memory.allocs += s.allocs;
  g_case_memory.forwards += g_forwards_in_run;
}

double peak_rss_bytes() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) * 1024.0;  // Linux reports kilobytes
}

namespace {

double process_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) * 1e3 + double(ts.tv_nsec) * 1e-6;
}

}  // namespace

double control_cpu_ms_per_gflop(int calls) {
  // 512^3 is big enough for oneDNN to use both threads and small enough (~1 ms) that the
  // control adds little to a case; the buffers live for the process (allocated outside any
  // counted region: the harness calls this with the allocation gate closed).
  constexpr int64_t n = 512;
  static const std::vector<float> a(size_t(n) * n, 0.25f), b(size_t(n) * n, 0.5f);
  static std::vector<float> c(size_t(n) * n);
  const double t0 = process_cpu_ms();
  for (int i = 0; i < calls; ++i)
    attn::kernels::sgemm(false, false, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  const double gflop = 2.0 * n * n * n * calls / 1e9;
  return (process_cpu_ms() - t0) / gflop;
}

std::string big_o_name(benchmark::BigO o) {
  switch (o) {
    case benchmark::o1:
      return "1";
    case benchmark::oN:
      return "N";
    case benchmark::oNSquared:
      return "N^2";
    case benchmark::oNCubed:
      return "N^3";
    case benchmark::oLogN:
      return "lgN";
    case benchmark::oNLogN:
      return "NlgN";
    case benchmark::oLambda:
      return "f(N)";
    default:
      return "";
  }
}

namespace {

using Run = benchmark::BenchmarkReporter::Run;

Timing timing_from_runs(const std::vector<Run>& runs) {
  Timing t;
  for (const Run& r : runs) {
    if (r.error_occurred) {
      t.error = r.error_message.empty() ? "failed" : r.error_message;
      return t;
    }
    t.reps_ms.push_back(r.GetAdjustedRealTime());     // Unit(kMillisecond)
    t.cpu_ms_reps.push_back(r.GetAdjustedCPUTime());  // process CPU time (all threads)
    const auto control = r.counters.find("control");
    if (control != r.counters.end()) t.control_ms_reps.push_back(control->second.value);
  }
  t.mem_peak_bytes = g_case_memory.peak;
  if (g_case_memory.forwards > 0)
    t.mem_allocs = int64_t(std::llround(double(g_case_memory.allocs) / g_case_memory.forwards));
  if (t.reps_ms.empty()) return t.error = "no repetitions", t;
  const Summary sum = summarize(t.reps_ms);
  t.median_ms = sum.median, t.min_ms = sum.min, t.max_ms = sum.max, t.cv = sum.cv;
  t.ok = true;
  return t;
}

// Hands each case's per-repetition runs to the family as soon as Google Benchmark reports
// them, and keeps the family's complexity fit (appended to the last case's aggregates).
class Collector : public benchmark::BenchmarkReporter {
 public:
  explicit Collector(std::function<void(const std::vector<Run>&)> on_case)
      : on_case_(std::move(on_case)) {}
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>& runs) override {
    std::vector<Run> iterations;
    for (const Run& r : runs) {
      if (r.report_big_o) {
        complexity.valid = true;
        complexity.big_o = big_o_name(r.complexity);
      } else if (r.report_rms) {
        complexity.rms = r.GetAdjustedRealTime();
      } else if (r.run_type == Run::RT_Iteration) {
        iterations.push_back(r);
      }
    }
    if (!iterations.empty()) on_case_(iterations);
  }
  GbComplexity complexity;

 private:
  std::function<void(const std::vector<Run>&)> on_case_;
};

}  // namespace

GbComplexity run_family(const BenchFamily& f, const BenchSettings& settings) {
  static AllocMemoryManager memory_manager;
  if (f.ns.empty()) return {};
  size_t current = size_t(-1);
  std::string skip;  // why the current case is not measured ("" = measure it)
  benchmark::ClearRegisteredBenchmarks();
  auto* b = benchmark::RegisterBenchmark(f.name.c_str(), [&](benchmark::State& state) {
    const size_t i = size_t(state.range(1));
    if (i != current) {
      current = i;
      g_case_memory = {};
      try {
        skip = f.prepare(i) ? "" : f.skip_reason(i);
      } catch (const std::exception& e) {
        skip = e.what();
      }
    }
    if (!skip.empty()) return state.SkipWithError(skip.c_str());
    try {
      alloc_gate(true);
      for (auto _ : state) {
        const bool memory_run = g_active.load(std::memory_order_relaxed);
        // GB 1.7.1 repeats the (untimed) memory run after every repetition; forward()'s
        // allocations do not change between calls, so one memory run per case is enough.
        if (memory_run && g_case_memory.forwards > 0) continue;
        f.body();
        if (memory_run) ++g_forwards_in_run;
      }
      alloc_gate(false);
      // The control right after this repetition's timed loop (not after the untimed memory
      // runs): the gate divides each repetition's CPU time by its neighbouring control.
      if (settings.control && !g_active.load(std::memory_order_relaxed))
        state.counters["control"] = control_cpu_ms_per_gflop();
    } catch (const std::exception& e) {
      alloc_gate(false);
      skip = e.what();
      state.SkipWithError(skip.c_str());
    }
    state.SetComplexityN(state.range(0));
  });
  for (size_t i = 0; i < f.ns.size(); ++i) b->Args({f.ns[i], int64_t(i)});
  b->UseRealTime()
      ->MeasureProcessCPUTime()
      ->Unit(benchmark::kMillisecond)
      ->Repetitions(std::max(1, settings.reps))
      ->MinTime(settings.min_time)
      ->MinWarmUpTime(settings.min_time);
  if (f.ns.size() >= 2) b->Complexity(benchmark::oAuto);

  Collector collector(
      [&](const std::vector<Run>& runs) { f.done(current, timing_from_runs(runs)); });
  benchmark::RegisterMemoryManager(&memory_manager);
  benchmark::RunSpecifiedBenchmarks(&collector);
  benchmark::RegisterMemoryManager(nullptr);
  benchmark::ClearRegisteredBenchmarks();
  return collector.complexity;
}

}  // namespace attnbench
