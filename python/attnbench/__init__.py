"""attnbench from Python: the registered attention variants, and the fp64 reference, on NumPy
arrays (README.md, "Use it from Python"; docs/DESIGN.md §Python module).

q, k and v are shaped [B,H,N,D], [H,N,D] or [N,D], as `attnbench apply` reads them. Float32
C-contiguous arrays are used in place (no copy); anything else is converted to such a copy
first, with a ConversionWarning. Bad input raises ValueError (TypeError for a non-numeric array)
with the one-line messages of the CLI. Kernels run with the GIL released.

Plugins named in ATTNBENCH_PLUGINS (paths separated by ':') are loaded on import, as the CLI
loads them; load_plugin(path) loads one more.
"""

import json
import os
import warnings

import numpy as np

from . import _core

__version__ = _core.VERSION
ABI_VERSION = _core.ABI_VERSION
__all__ = ["ConversionWarning", "apply", "load_plugin", "load_results", "reference", "variants"]


class ConversionWarning(UserWarning):
    """An input was copied to a float32 C-contiguous array before the kernel ran."""


def variants():
    """Every registered variant: a list of {name, doc, params}, each parameter a dict with key,
    kind (int, float, bool, choice, text), default, doc, min and max (None when unbounded),
    choices and describe (the line `attnbench list` prints)."""
    return _core.variants()


def load_plugin(path):
    """Loads a variant plugin (a .so built against the installed attnbench, README "Add your own
    variant") and registers its variants. Loading the same file again does nothing."""
    _core.load_plugin(os.fspath(path))


def _describe(a):
    order = "C-contiguous" if a.flags.c_contiguous else "non-contiguous"
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        order = "Fortran-order"
    aligned = "" if a.flags.aligned else " unaligned"
    return f"{a.dtype}{aligned} {order} array"


def _as_input(x, name):
    """x as an aligned float32 C-contiguous array: x itself when it is one, else a copy."""
    a = x if isinstance(x, np.ndarray) else np.asarray(x)
    if a.dtype == np.float32 and a.flags.c_contiguous and a.flags.aligned:
        return a
    if a.dtype.kind not in "fiu":
        raise TypeError(
            f"{name}: dtype {a.dtype} is not a real number type; expected float32 "
            "(float64 and integer arrays are converted)"
        )
    if a.dtype.kind == "f" and a.dtype.itemsize == 8:
        # Range-checked as `attnbench apply` checks float64 .npy files.
        converted = _core.to_float32(np.ascontiguousarray(a, dtype=np.float64), name)
    else:
        converted = np.ascontiguousarray(a, dtype=np.float32)
    warnings.warn(
        f"{name}: {_describe(a)} copied to float32 C order; pass float32 C-contiguous "
        "arrays to run without a copy",
        ConversionWarning,
        stacklevel=3,
    )
    return converted


def _scale(scale):
    return 0.0 if scale is None else float(scale)


def _check_flag(causal):
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be True or False, got {type(causal).__name__}")
    return bool(causal)


def apply(spec, q, k, v, causal=False, scale=None, dout=None):
    """The output of variant `spec` ("name:key=value,...", see variants()) on q, k, v: a float32
    array of q's shape. causal: the mask j <= i. scale: the logit scale (None = 1/sqrt(D)).
    dout (dL/d output, q's shape): returns (out, dq, dk, dv) instead, the gradients of the
    variant's backward (ValueError for a variant without one; `attnbench list` marks them)."""
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str such as 'full', got {type(spec).__name__}")
    causal = _check_flag(causal)
    q, k, v = (_as_input(a, n) for a, n in ((q, "q"), (k, "k"), (v, "v")))
    if dout is not None:
        return _core.apply_with_gradients(spec, q, k, v, _as_input(dout, "dout"), causal,
                                          _scale(scale))
    return _core.apply(spec, q, k, v, causal, _scale(scale))


def reference(q, k, v, causal=False, scale=None):
    """Exact dense attention of q, k, v (as float32, the inputs every variant sees) computed in
    float64: the ground truth of every accuracy figure. A float64 array of q's shape."""
    causal = _check_flag(causal)
    q, k, v = (_as_input(a, n) for a, n in ((q, "q"), (k, "k"), (v, "v")))
    return _core.reference(q, k, v, causal, _scale(scale))


def load_results(directory):
    """The rows of DIR/results.json written by `attnbench sweep` or `attnbench run --out DIR`
    (columns: results/README.md), as a pandas DataFrame when pandas is installed, else as a list
    of dicts."""
    path = os.path.join(os.fspath(directory), "results.json")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ValueError(
            f"{path}: no such file; write one with `attnbench sweep CONFIG --out DIR` or "
            "`attnbench run ... --out DIR`"
        ) from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: not a results file: invalid JSON ({e})") from None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: not a results file: expected an object with a list of row objects under 'rows'")
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows)


_core.load_plugins_from_env()
