#!/bin/sh
# Bounded fuzz run (the CTest entry fuzz.bounded_run; tests/fuzz/README.md):
#   sh tests/fuzz/run.sh SOURCE_DIR [SECONDS_PER_TARGET] [TARGET...]
# Configures and builds the `fuzz` preset (clang, libFuzzer, ASan + UBSan) when needed, then
# runs each target for SECONDS on a scratch copy of its committed seed corpus (the committed
# corpus is never modified). Fails on any crash, leak, sanitizer report, timeout or OOM.
set -eu
src=$1
secs=${2:-30}
shift 2 2>/dev/null || shift $#
targets=${*:-npy config spec results layout}
cd "$src"
log=$(mktemp -d "${TMPDIR:-/tmp}/attn_fuzz.XXXXXX")
trap 'rm -rf "$log"' EXIT
if [ ! -f build/fuzz/CMakeCache.txt ]; then
  cmake --preset fuzz >"$log/configure.log" 2>&1 || { cat "$log/configure.log"; exit 1; }
fi
build_start=$(date +%s)
set --
for t in $targets; do set -- "$@" "fuzz_$t"; done
cmake --build --preset fuzz -j2 --target "$@" >"$log/build.log" 2>&1 ||
  { tail -40 "$log/build.log"; exit 1; }
echo "fuzz build: $(($(date +%s) - build_start)) s"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
status=0
for t in $targets; do
  mkdir -p "$log/$t"
  cp tests/fuzz/corpus/"$t"/* "$log/$t/"
  seeds=$(ls "$log/$t" | wc -l)
  if build/fuzz/tests/fuzz/fuzz_"$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=512 -max_len=4096 -print_final_stats=1 -seed="${ATTN_FUZZ_SEED:-1}" \
      -artifact_prefix="$log/$t-" "$log/$t" >"$log/$t.log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log/$t.log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log/$t.log")
    echo "fuzz_$t: ok, $execs executions in $secs s ($rate/s), corpus $seeds -> $(ls "$log/$t" | wc -l) inputs"
  else
    status=1
    echo "fuzz_$t: FAILED"
    grep -E "ERROR|SUMMARY|fuzz target failed|terminate|runtime error|Test unit written" \
      "$log/$t.log" | head -20
    for a in "$log/$t"-*; do
      [ -f "$a" ] || continue
      mkdir -p build/fuzz/artifacts
      cp "$a" build/fuzz/artifacts/
      echo "  reproducer kept in build/fuzz/artifacts/$(basename "$a")"
    done
    tail -30 "$log/$t.log"
  fi
done
exit $status
