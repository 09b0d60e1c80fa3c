#!/usr/bin/env bash
# Measures the regression gate's false-alarm rate and power under load (results/BENCHMARKS.md,
# "Regression gate under load"): RUNS times, sweep configs/quick.ini and compare it with
# results/baseline-quick.json exactly as CTest does, while one busy loop per core competes for
# the CPU (LOOPS=K for K loops instead). With SLOWDOWN=VARIANT=FACTOR, that variant's timed forward() calls do FACTOR times
# the work (ATTNBENCH_TEST_SLOWDOWN), and the script counts the runs in which the gate flags it.
#
#   tests/bench/gate_under_load.sh build/release 20              # false alarms
#   tests/bench/gate_under_load.sh build/release 20 performer=1.5 # power
set -euo pipefail
cd "$(dirname "$0")/../.."
exe=$1/harness/attnbench runs=${2:-20} slowdown=${3:-}
slowed=${slowdown%%=*}
work=$(mktemp -d /tmp/gate-under-load.XXXXXX)
loops=()
cleanup() { for p in "${loops[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq "${LOOPS:-$(nproc)}"); do (while :; do :; done) & loops+=($!); done

alarm_runs=0 caught_runs=0
for i in $(seq "$runs"); do
  ATTNBENCH_TEST_SLOWDOWN=$slowdown "$exe" sweep configs/quick.ini --out "$work/r$i" --quiet >/dev/null
  "$exe" compare results/baseline-quick.json "$work/r$i" --require-every-variant >"$work/c$i" || true
  # Per case line (key ... time-x p verdict): SLOWER on the slowed variant counts as caught,
  # on any other case as a false alarm; any other failure (accuracy, missing) as well.
  read -r false_cases other caught total max_other min_slowed < <(awk -v s="${slowed:-NONE}" '
    BEGIN { m = 0; lo = 99 }
    NF > 5 && $1 ~ /\|B=/ {
      v = $NF; x = $(NF - 2); mine = index($1, s ":") == 1 || index($1, s "|") == 1
      if (v ~ /ACCURACY|MISSING|SKIPPED/) o++
      if (mine) { t++; if (v ~ /SLOWER/) c++; if (x < lo) lo = x }
      else { if (v ~ /SLOWER/) f++; if (x > m) m = x }
    }
    /^UNCOVERED/ { o++ }
    END { print f + 0, o + 0, c + 0, t + 0, m, (t ? lo : "-") }' "$work/c$i")
  [[ $false_cases -gt 0 || $other -gt 0 ]] && alarm_runs=$((alarm_runs + 1))
  [[ -n $slowed && $caught -gt 0 ]] && caught_runs=$((caught_runs + 1))
  echo "run $i: false-alarm cases $false_cases, other failures $other, max time x of the others $max_other${slowed:+; $slowed cases flagged $caught/$total, their min time x $min_slowed}"
done
echo "load: ${LOOPS:-$(nproc)} busy loops; $(uptime)"
echo "runs $runs: runs with a false alarm $alarm_runs${slowed:+, runs in which the $slowdown slowdown was flagged $caught_runs}"
