#!/usr/bin/python3
"""attnbench.apply("full", ...) called from Python against the kernel median `attnbench run`
reports for the same problem (issue 15's target: within 1.1x; the difference is the call's
overhead: input checks, output allocation, the spec parse).

  PYTHONPATH=build/release/python /usr/bin/python3 harness/bench_python.py \\
      build/release/harness/attnbench [-r REPS] [-n N]

B=1, H=8, D=64, all cores for both (set OMP_NUM_THREADS before starting to use fewer: it is
read once, when the OpenMP runtime starts). Interleaved: every repetition runs `attnbench run` once (its median over 5
Google Benchmark repetitions) and then times 5 Python calls, so both see the same machine
load. Prints the medians over repetitions and their ratio.
"""
import argparse
import json
import statistics
import subprocess
import tempfile
import time

import numpy as np

import attnbench


def cli_kernel_ms(exe, n, out):
    subprocess.run([exe, "run", "--variant", "full", "--seq", str(n), "--heads", "8", "--dim",
                    "64", "--out", out, "--overwrite"],
                   check=True, capture_output=True)
    with open(f"{out}/results.json") as f:
        return json.load(f)["rows"][0]["time_ms_median"]


def python_call_ms(q, k, v, calls=5):
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        attnbench.apply("full", q, k, v)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("exe")
    p.add_argument("-r", "--reps", type=int, default=5)
    p.add_argument("-n", type=int, default=4096)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 8, a.n, 64), dtype=np.float32) for _ in range(3))
    cli, py = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(a.reps):
            cli.append(cli_kernel_ms(a.exe, a.n, out))
            py.append(python_call_ms(q, k, v))
    c, m = statistics.median(cli), statistics.median(py)
    print(f"n={a.n} B=1 H=8 D=64: CLI kernel median {c:.1f} ms, Python apply median {m:.1f} ms, "
          f"ratio {m / c:.3f} (medians over {a.reps} interleaved repetitions)")


if __name__ == "__main__":
    main()
