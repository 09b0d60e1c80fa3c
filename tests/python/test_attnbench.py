"""The attnbench Python module (python/, README "Use it from Python"), run by CTest python.pytest
with PYTHONPATH on the build tree's package, ATTNBENCH_EXE the CLI and ATTNBENCH_TEST_PLUGIN the
in-tree build of examples/plugin."""

import os
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

import attnbench

EXE = os.environ.get("ATTNBENCH_EXE", "")
PLUGIN = os.environ.get("ATTNBENCH_TEST_PLUGIN", "")


def dense(q, k, v, causal=False, visible=None, scale=None):
    """fp64 softmax(scale q k^T) v over the last two axes (scale 1/sqrt(D)), with a mask."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    i, j = np.arange(q.shape[-2])[:, None], np.arange(k.shape[-2])[None, :]
    mask = np.ones_like(s, dtype=bool) & ((j <= i) if causal else True)
    if visible is not None:
        mask &= visible
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def inputs(shape, seed=0, nk=None):
    rng = np.random.default_rng(seed)
    kshape = shape if nk is None else shape[:-2] + (nk, shape[-1])
    return (rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal(kshape, dtype=np.float32),
            rng.standard_normal(kshape, dtype=np.float32))


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def run_python(code, **env):
    """Runs `code` in a fresh interpreter (a process of its own: plugins, peak RSS)."""
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=e,
                          capture_output=True, text=True)


@pytest.mark.parametrize("shape", [(37, 16), (3, 37, 16), (2, 3, 37, 16)])
@pytest.mark.parametrize("causal", [False, True])
def test_apply_full_matches_numpy_dense_attention(shape, causal):
    q, k, v = inputs(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32 C-contiguous: no conversion
        out = attnbench.apply("full", q, k, v, causal=causal)
    assert out.shape == q.shape and out.dtype == np.float32 and out.flags.c_contiguous
    assert rel(out, dense(q, k, v, causal)) < 1e-5


def test_cross_attention_and_scale():
    q, k, v = inputs((2, 40, 8), nk=70)
    out = attnbench.apply("full", q, k, v, scale=0.5)
    expect = dense(q * np.float32(0.5 * np.sqrt(8)), k, v)  # logits 0.5 q.k
    assert out.shape == (2, 40, 8) and rel(out, expect) < 1e-5


@pytest.mark.parametrize("causal", [False, True])
def test_reference_is_float64_dense_attention(causal):
    q, k, v = inputs((2, 50, 8))
    ref = attnbench.reference(q, k, v, causal=causal)
    assert ref.dtype == np.float64 and ref.shape == q.shape
    # The logit scale is the float32 1/sqrt(D) every variant uses; all else is float64.
    assert rel(ref, dense(q, k, v, causal, scale=float(np.float32(1 / np.sqrt(8))))) < 1e-12


def test_variants_are_the_registry_the_cli_lists():
    names = [v["name"] for v in attnbench.variants()]
    listed = subprocess.run([EXE, "list"], capture_output=True, text=True, check=True).stdout
    section = listed.split("\n\nInput distributions")[0]
    cli = [line[2:] for line in section.splitlines() if line.startswith("  ") and line[2] != " "]
    assert names == cli
    window = next(v for v in attnbench.variants() if v["name"] == "sliding_window")
    radius = next(p for p in window["params"] if p["key"] == "radius")
    assert (radius["kind"], radius["default"], radius["min"], radius["max"]) == ("int", "256", 0, None)
    assert radius["describe"].startswith("radius=int >= 0 (default 256)")


# Variants whose papers define no causal form: asked for causal, they raise ValueError.
NON_CAUSAL_ONLY = {"linformer", "nystrom"}


# Every registered variant in its default spec runs on a 1024-long problem (long enough for
# every default pattern), causal and not, also on buffers that are only float-aligned.
@pytest.mark.parametrize("name", [v["name"] for v in attnbench.variants()])
def test_every_registered_variant_is_callable(name):
    n, d = 1024, 64
    for causal in (False, True):
        buf = np.random.default_rng(1).standard_normal(3 * n * d + 1, dtype=np.float32)
        q, k, v = (buf[1 + t * n * d: 1 + (t + 1) * n * d].reshape(n, d) for t in range(3))
        assert q.ctypes.data % 16 != 0
        if causal and name in NON_CAUSAL_ONLY:
            with pytest.raises(ValueError, match="not defined for causal"):
                attnbench.apply(name, q, k, v, causal=causal)
            continue
        out = attnbench.apply(name, q, k, v, causal=causal)
        assert out.shape == (n, d) and np.isfinite(out).all(), name


def cli_apply_error(tmp_path, arrays, spec="full"):
    """The message of `attnbench apply` on the arrays saved as q.npy, k.npy, v.npy."""
    paths = {}
    for name, a in arrays.items():
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], a)
    r = subprocess.run([EXE, "apply", "--variant", spec, "--q", paths["q"], "--k", paths["k"],
                        "--v", paths["v"], "--out", str(tmp_path / "o.npy")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
    return r.stderr.strip().removeprefix("attnbench apply: "), paths


def test_errors_are_value_errors_with_the_cli_messages(tmp_path):
    q, k, v = inputs((2, 16, 8))
    k_wrong_dim = np.zeros((2, 16, 4), dtype=np.float32)
    message, _ = cli_apply_error(tmp_path, {"q": q, "k": k_wrong_dim, "v": k_wrong_dim})
    with pytest.raises(ValueError) as e:
        attnbench.apply("full", q, k_wrong_dim, k_wrong_dim)
    assert str(e.value) == message and "must agree in batch, heads and head dim" in message

    message, _ = cli_apply_error(tmp_path, {"q": q, "k": k, "v": v}, spec="nope")
    with pytest.raises(ValueError) as e:
        attnbench.apply("nope", q, k, v)
    assert str(e.value) == message and message.startswith("unknown variant 'nope'; valid variants:")

    bad = q.copy()
    bad[1, 2, 3] = np.nan
    message, paths = cli_apply_error(tmp_path, {"q": bad, "k": k, "v": v})
    with pytest.raises(ValueError) as e:
        attnbench.apply("full", bad, k, v)
    assert str(e.value) == "q" + message.removeprefix(paths["q"])
    assert "contains NaN or Inf at flat index 147" in str(e.value)

    huge = q.astype(np.float64)
    huge[0, 0, 1] = 1e39
    message, paths = cli_apply_error(tmp_path, {"q": huge, "k": k, "v": v})
    with pytest.raises(ValueError) as e, pytest.warns(attnbench.ConversionWarning):
        attnbench.apply("full", huge, k, v)
    assert str(e.value) == "q" + message.removeprefix(paths["q"])

    for spec, text in [("full:radius=3", "unknown parameter 'radius'"),
                       ("sliding_window:radius=-1", "is out of range"), ("", "empty variant spec")]:
        with pytest.raises(ValueError, match=text):
            attnbench.apply(spec, q, k, v)
    for shape, text in [((16,), "got 1-D"), ((1, 1, 1, 16, 8), "got 5-D"),
                        ((0, 8), "zero-length dimension")]:
        a = np.zeros(shape, dtype=np.float32)
        with pytest.raises(ValueError, match=text):
            attnbench.apply("full", a, a, a)
    with pytest.raises(ValueError, match="causal attention needs equal query and key lengths"):
        attnbench.apply("full", *inputs((16, 8), nk=20), causal=True)
    with pytest.raises(ValueError, match="must have the same shape"):
        attnbench.apply("full", q, k, np.ascontiguousarray(v[:, :8]))
    with pytest.raises(ValueError, match="must have the same shape"):
        attnbench.reference(q, k, np.ascontiguousarray(v[:, :8]))


def test_non_numeric_input_and_bad_arguments_are_type_errors():
    q, k, v = inputs((8, 4))
    for bad in (q.astype(np.complex64), q.astype(object), np.array([["a"] * 4] * 8), q > 0):
        with pytest.raises(TypeError, match="q: dtype .* is not a real number type"):
            attnbench.apply("full", bad, k, v)
    with pytest.raises(TypeError, match="spec must be a str"):
        attnbench.apply(3, q, k, v)
    with pytest.raises(TypeError, match="causal must be True or False"):
        attnbench.apply("full", q, k, v, causal="yes")
    with pytest.raises(ValueError, match="performer has no backward yet"):
        attnbench.apply("performer", q, k, v, dout=q)
    with pytest.raises(ValueError, match="dO has shape .* it must have the output's shape"):
        attnbench.apply("full", q, k, v, dout=q[:3])


def numpy_attention_gradients(q, k, v, dout, causal):
    """fp64 gradients of softmax(q k^T / sqrt(D)) v for dout, by the chain rule written out."""
    q, k, v, dout = (a.astype(np.float64) for a in (q, k, v, dout))
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.tril(np.ones(s.shape[-2:], dtype=bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = dout @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True)) / np.sqrt(q.shape[-1])
    return p @ v, ds @ k, np.swapaxes(ds, -1, -2) @ q, np.swapaxes(p, -1, -2) @ dout


# Gradients from Python are the variant's backward: for `full`, those of exact attention.
def test_apply_with_dout_returns_the_gradients():
    q, k, v = inputs((2, 70, 16))
    dout = inputs((2, 70, 16), seed=5)[0]
    for causal in (False, True):
        got = attnbench.apply("full", q, k, v, causal=causal, dout=dout)
        want = numpy_attention_gradients(q, k, v, dout, causal)
        assert len(got) == 4
        for g, w in zip(got, want):
            assert g.shape == w.shape and g.dtype == np.float32
            assert np.linalg.norm(g - w) / np.linalg.norm(w) < 1e-5


def test_other_dtypes_and_orders_are_converted_with_a_warning():
    q, k, v = inputs((3, 20, 8))
    expect = attnbench.apply("full", q, k, v)
    for variant in (q.astype(np.float64), np.asfortranarray(q), q.astype(np.float16),
                    np.repeat(q, 2, axis=1)[:, ::2], q.astype(">f4")):
        with pytest.warns(attnbench.ConversionWarning, match="q: .* copied to float32 C order"):
            out = attnbench.apply("full", variant, k, v)
        assert rel(out, attnbench.apply("full", np.ascontiguousarray(variant, np.float32), k, v)) < 1e-6
    with pytest.warns(attnbench.ConversionWarning):
        assert rel(attnbench.apply("full", q.tolist(), k, v), expect) < 1e-6
    i = np.arange(8 * 4, dtype=np.int64).reshape(8, 4) % 5
    with pytest.warns(attnbench.ConversionWarning, match="int64"):
        attnbench.apply("full", i, i, i)


# Zero copy, measured: with q, k and v of 64 MiB each, the peak RSS of apply on a cheap variant
# grows by about the output (64 MiB), not by copies of the inputs (another 192 MiB).
def test_float32_inputs_are_not_copied():
    r = run_python("""
        import resource, numpy as np, attnbench
        n, d = 262144, 64
        q, k, v = (np.ones((n, d), dtype=np.float32) for _ in range(3))
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        before = peak()
        out = attnbench.apply("sliding_window:radius=1", q, k, v)
        print((peak() - before) / 2**20)
    """)
    assert r.returncode == 0, r.stderr
    grown_mib = float(r.stdout)
    assert grown_mib < 128, f"peak RSS grew by {grown_mib:.0f} MiB: inputs were copied"


def test_converted_inputs_are_copied_so_the_rss_check_can_fail():
    r = run_python("""
        import resource, warnings, numpy as np, attnbench
        warnings.simplefilter("ignore")
        n, d = 262144, 64
        q, k, v = (np.ones((n, d), dtype=np.float32) for _ in range(3))
        q, k, v = (np.asfortranarray(a.reshape(d, n).T) for a in (q, k, v))  # 64 MiB, F order
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        before = peak()
        out = attnbench.apply("sliding_window:radius=1", q, k, v)
        print((peak() - before) / 2**20)
    """)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) > 200


# With the GIL released, another Python thread keeps running while a kernel does.
@pytest.mark.parametrize("call", ["apply", "reference"])
def test_the_gil_is_released_while_a_kernel_runs(call):
    q, k, v = inputs((4, 1024, 64) if call == "reference" else (16, 2048, 64))
    run = (lambda: attnbench.reference(q, k, v)) if call == "reference" else (
        lambda: attnbench.apply("full", q, k, v))
    ticks, done = [], threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.002)

    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.02)
    start = time.perf_counter()
    run()
    end = time.perf_counter()
    done.set()
    t.join()
    during = [x for x in ticks if start < x < end]
    assert end - start > 0.05, "the kernel was too quick to tell"
    assert len(during) >= 5, f"{len(during)} ticks during a {end - start:.2f} s kernel"


def sweep(tmp_path):
    cfg = tmp_path / "tiny.ini"
    cfg.write_text("variant = full\nvariant = sliding_window:radius=8\nseq = 64,128\ndim = 16\n"
                   "heads = 1\nreps = 2\nmin_time = 0.001\nthreads = 1\n")
    subprocess.run([EXE, "sweep", str(cfg), "--out", str(tmp_path / "out"), "--quiet"],
                   check=True, capture_output=True)
    return tmp_path / "out"


def test_load_results_round_trip(tmp_path, monkeypatch):
    out = sweep(tmp_path)
    monkeypatch.setitem(sys.modules, "pandas", None)  # as without pandas: a list of dicts
    rows = attnbench.load_results(out)
    assert isinstance(rows, list) and len(rows) == 4
    assert {(r["spec"], r["n"]) for r in rows} == {
        (s, n) for s in ("full", "sliding_window:radius=8") for n in (64, 128)}
    csv = (out / "results.csv").read_text().splitlines()
    header = csv[0].split(",")
    assert set(header) <= set(rows[0]) and len(csv) == 1 + len(rows)
    assert all(r["status"] == "ok" and r["rel_err"] < 1e-5 for r in rows if r["spec"] == "full")

    class FakePandas:  # the pandas branch: DataFrame(rows)
        @staticmethod
        def DataFrame(rows):
            return ("frame", rows)

    monkeypatch.setitem(sys.modules, "pandas", FakePandas)
    assert attnbench.load_results(str(out)) == ("frame", rows)


def test_load_results_errors(tmp_path):
    with pytest.raises(ValueError, match="results.json: no such file"):
        attnbench.load_results(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a results file: invalid JSON"):
        attnbench.load_results(tmp_path)
    (tmp_path / "results.json").write_text('{"rows": 3}')
    with pytest.raises(ValueError, match="expected an object with a list of row objects"):
        attnbench.load_results(tmp_path)


def test_plugin_variant_is_visible_from_python():
    code = """
        import numpy as np, attnbench
        names = lambda: [v["name"] for v in attnbench.variants()]
        assert "strided" not in names()
        attnbench.load_plugin("%s")
        attnbench.load_plugin("%s")  # again: nothing happens
        assert names().count("strided") == 1
        rng = np.random.default_rng(2)
        q, k, v = (rng.standard_normal((2, 100, 16), dtype=np.float32) for _ in range(3))
        for causal in (False, True):
            out = attnbench.apply("strided:stride=5", q, k, v, causal=causal)
            print(out.tobytes().hex())
    """ % (PLUGIN, PLUGIN)
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 100, 16), dtype=np.float32) for _ in range(3))
    j = np.arange(100)[None, :]
    for causal, line in zip((False, True), r.stdout.split()):
        out = np.frombuffer(bytes.fromhex(line), dtype=np.float32).reshape(2, 100, 16)
        assert rel(out, dense(q, k, v, causal, visible=(j % 5 == 0))) < 1e-5


def test_plugins_from_the_environment_load_on_import():
    r = run_python("import attnbench; print([v['name'] for v in attnbench.variants()][-1])",
                   ATTNBENCH_PLUGINS=PLUGIN)
    assert r.returncode == 0 and r.stdout.strip() == "strided", r.stderr


def test_bad_plugin_is_a_value_error_with_the_cli_message(tmp_path):
    junk = tmp_path / "junk.so"
    junk.write_text("not a library")
    cli = subprocess.run([EXE, "--plugin", str(junk), "list"], capture_output=True, text=True)
    assert cli.returncode == 2
    with pytest.raises(ValueError) as e:
        attnbench.load_plugin(junk)
    assert "attnbench: " + str(e.value) == cli.stderr.strip()
    with pytest.raises(ValueError, match="no such file"):
        attnbench.load_plugin(tmp_path / "missing.so")
