#!/usr/bin/env bash
# Whole-process cost of `attnbench apply --variant full` against the kernel time `run` reports,
# and apply's peak RSS against its four [1,8,n,64] float32 tensors (q, k, v, out).
#
#   harness/bench_apply.sh [-r REPS] [-n "1024 2048 ..."] [-d DIR] BINARY [BINARY...]
#
# Several binaries (e.g. a copy of the old one and the new one) are run interleaved in every
# repetition, in alternating order, so that they see the same machine load; the kernel is
# timed once per repetition by `run` from the last binary. Prints one markdown row per
# (binary, n) with medians over the repetitions; raw samples go to DIR/raw.tsv.
# Inputs are written once to DIR with /usr/bin/python3 + numpy (Debian's python3-numpy).
set -euo pipefail

reps=3
sizes="1024 2048 4096 8192 16384"
dir=/tmp/attn_bench_apply
while getopts "r:n:d:" opt; do
  case $opt in
    r) reps=$OPTARG ;;
    n) sizes=$OPTARG ;;
    d) dir=$OPTARG ;;
    *) echo "usage: $0 [-r REPS] [-n \"SIZES\"] [-d DIR] BINARY [BINARY...]" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-r REPS] [-n \"SIZES\"] [-d DIR] BINARY [BINARY...]" >&2; exit 2; }
bins=("$@")
for b in "${bins[@]}"; do [ -x "$b" ] || { echo "$b: not an executable" >&2; exit 2; }; done
mkdir -p "$dir"

/usr/bin/python3 - "$dir" $sizes <<'EOF'
import os, sys
import numpy as np
d = sys.argv[1]
for n in map(int, sys.argv[2:]):
    rng = np.random.default_rng(n)
    for name in "qkv":
        p = os.path.join(d, f"{name}{n}.npy")
        if not os.path.exists(p):
            np.save(p, rng.standard_normal((1, 8, n, 64), dtype=np.float32))
EOF

raw="$dir/raw.tsv"
echo -e "rep\tbinary\tn\twall_ms\tcpu_ms\tpeak_kib\tminor_faults\tkernel_ms" >"$raw"
now_ns() { date +%s%N; }

for ((r = 1; r <= reps; r++)); do
  # Kernel time: median of `run`'s repetitions (warm process), all sizes in one call.
  declare -A kernel=()
  while read -r variant n median _; do
    [ "$variant" = full ] && kernel[$n]=$median
  done < <("${bins[-1]}" run --variant full --seq "$(echo $sizes | tr ' ' ,)" --heads 8 --reps 5)
  order=("${bins[@]}")
  if ((r % 2 == 0)); then  # alternate which binary goes first
    order=()
    for ((i = ${#bins[@]} - 1; i >= 0; i--)); do order+=("${bins[i]}"); done
  fi
  for n in $sizes; do
    for b in "${order[@]}"; do
      rm -f "$dir/out.npy"  # a fresh file: replacing one costs ext4's rename flush (see BENCHMARKS)
      t0=$(now_ns)
      /usr/bin/time -f "%M %R %U %S" -o "$dir/time.txt" "$b" apply --variant full --q "$dir/q$n.npy" \
        --k "$dir/k$n.npy" --v "$dir/v$n.npy" --out "$dir/out.npy"
      t1=$(now_ns)
      read -r kib faults user sys <"$dir/time.txt"
      cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { print (u + s) * 1000 }')
      echo -e "$r\t$b\t$n\t$(((t1 - t0) / 1000000))\t$cpu\t$kib\t$faults\t${kernel[$n]}" >>"$raw"
    done
  done
done

/usr/bin/python3 - "$raw" <<'EOF'
import csv, os, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = lambda xs: statistics.median(float(x) for x in xs)
print("| binary | n | apply ms | kernel ms | ratio | apply CPU ms | peak RSS MiB | 4 tensors MiB | RSS − tensors MiB | minor faults |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for b in dict.fromkeys(r["binary"] for r in rows):
    for n in dict.fromkeys(r["n"] for r in rows):
        sel = [r for r in rows if r["binary"] == b and r["n"] == n]
        wall, kern = med(r["wall_ms"] for r in sel), med(r["kernel_ms"] for r in sel)
        rss = med(r["peak_kib"] for r in sel) / 1024
        tensors = 4 * 8 * int(n) * 64 * 4 / 2**20
        faults, cpu = med(r["minor_faults"] for r in sel), med(r["cpu_ms"] for r in sel)
        print(f"| {os.path.basename(b)} | {n} | {wall:.0f} | {kern:.1f} | {wall / kern:.2f} | {cpu:.0f} | {rss:.1f} | "
              f"{tensors:.0f} | {rss - tensors:.1f} | {faults:.0f} |")
EOF
