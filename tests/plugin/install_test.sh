#!/bin/sh
# The installed package end to end (CTest plugin.install_and_build_example):
#   1. cmake --install BUILD into a temporary prefix: exactly the public headers, each of which
#      compiles on its own;
#   2. examples/plugin configured with find_package(attnbench) against that prefix and built;
#   3. the plugin loaded by the installed attnbench: listed, `apply` checked against the fp64
#      reference restricted to its pattern (NumPy), and run, sweep, compare and plot on it;
#   4. the installed Python package imports from the prefix and sees the plugin's variant.
# usage: install_test.sh BUILD_DIR SOURCE_DIR CXX
set -eu
build=$1 source=$2 cxx=$3
python=${ATTNBENCH_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"

headers=$(cd "$prefix/include/attnbench" && find . -type f | sort | tr '\n' ' ')
expected="./attention/attention.h ./attention/band.h ./attention/block_layout.h \
./attention/kernels/gemm.h ./attention/kernels/online_softmax.h ./attention/plan.h \
./attention/plugin.h ./attention/random.h ./attention/reference.h ./attention/registry.h \
./attention/tensor.h ./attention/version.h "
if [ "$headers" != "$expected" ]; then
  echo "installed headers: $headers"
  echo "expected:          $expected"
  exit 1
fi
for h in $headers; do
  echo "#include <${h#./}>" | "$cxx" -std=c++20 -fopenmp -fsyntax-only -I "$prefix/include/attnbench" -x c++ - ||
    { echo "installed header ${h#./} does not compile on its own"; exit 1; }
done

cmake -S "$source/examples/plugin" -B "$tmp/strided" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_CXX_COMPILER="$cxx" >"$tmp/configure.log" || { cat "$tmp/configure.log"; exit 1; }
cmake --build "$tmp/strided" >"$tmp/build.log" || { cat "$tmp/build.log"; exit 1; }
plugin=$tmp/strided/libstrided.so
exe=$prefix/bin/attnbench

"$exe" --plugin "$plugin" list | grep -qx '  strided' || { echo "strided is not listed"; exit 1; }

# apply, causal and not, against NumPy's fp64 attention over the keys j = 0, 3, 6, ...
"$python" - "$exe" "$plugin" "$tmp" <<'PY'
import subprocess, sys
import numpy as np
exe, plugin, tmp = sys.argv[1:]
rng = np.random.default_rng(3)
q, k, v = (rng.standard_normal((2, 130, 16), dtype=np.float32) for _ in range(3))
for name, a in (("q", q), ("k", k), ("v", v)):
    np.save(f"{tmp}/{name}.npy", a)
for causal in (False, True):
    cmd = [exe, "--plugin", plugin, "apply", "--variant", "strided:stride=3", "--q", f"{tmp}/q.npy",
           "--k", f"{tmp}/k.npy", "--v", f"{tmp}/v.npy", "--out", f"{tmp}/o.npy"]
    subprocess.run(cmd + (["--causal"] if causal else []), check=True)
    out = np.load(f"{tmp}/o.npy")
    i, j = np.arange(130)[:, None], np.arange(130)[None, :]
    visible = (j % 3 == 0) & ((j <= i) if causal else True)
    s = np.einsum("hid,hjd->hij", q.astype(np.float64), k.astype(np.float64)) / np.sqrt(16)
    s = np.where(visible, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    ref = np.einsum("hij,hjd->hid", p / p.sum(axis=-1, keepdims=True), v.astype(np.float64))
    err = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert err < 1e-5, f"causal={causal}: relative error {err} against the masked reference"
PY

# Every command that takes variants, with the plugin given by --plugin or ATTNBENCH_PLUGINS.
"$exe" --plugin "$plugin" run --variant strided:stride=4 --variant full --seq 128 --heads 1 \
  --dim 16 --reps 2 --min-time 0.01 --threads 1 --out "$tmp/run" >"$tmp/run.log"
grep -q '"variant": "strided"' "$tmp/run/results.json" || { echo "no strided row"; exit 1; }
printf 'variant = strided:stride=4\nvariant = full\nseq = 64,128\ndim = 16\nheads = 1\nreps = 2\nmin_time = 0.01\nthreads = 1\n' >"$tmp/tiny.ini"
ATTNBENCH_PLUGINS=$plugin "$exe" sweep "$tmp/tiny.ini" --out "$tmp/sweep" --quiet
ATTNBENCH_PLUGINS=$plugin "$exe" compare "$tmp/sweep/results.json" "$tmp/sweep/results.json" >"$tmp/compare.log"
ATTNBENCH_PLUGINS=$plugin "$exe" plot "$tmp/sweep" >"$tmp/plot.log"
[ -f "$tmp/sweep/time_vs_n.png" ] || { echo "plot wrote no time_vs_n.png"; exit 1; }

# The installed Python package (its RPATH finds the installed library), when it is built.
# ATTN_PYTHON_ENV: the sanitizer runtime to preload in a sanitizer build (tests/CMakeLists.txt).
[ -d "$prefix/lib/python3/dist-packages/attnbench" ] && env ${ATTN_PYTHON_ENV:-} PYTHONPATH=$prefix/lib/python3/dist-packages "$python" -c "
import sys, attnbench
assert attnbench.__file__.startswith('$prefix'), attnbench.__file__
attnbench.load_plugin('$plugin')
assert 'strided' in [v['name'] for v in attnbench.variants()]
"
echo "install test: OK"
