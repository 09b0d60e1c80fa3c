#!/usr/bin/python3
"""Plots of an attnbench sweep directory; run by `attnbench plot DIR [--n N]`.

Reads DIR/results.json (and DIR/posenc.json when present; formats in results/README.md) and
writes PNG and SVG files into DIR:
  time_vs_n        median time vs n (log-log), one line per variant, O(n) and O(n^2) guides
  memory_vs_n      measured peak extra memory during forward() vs n (analytic dotted)
  error_vs_n       relative error vs the fp64 reference vs n, one panel per input distribution
  speed_vs_error   time vs error at one n, one point per variant, Pareto front marked
  posenc_memory    parameter memory vs n per positional encoding (only with posenc.json)
  recall_vs_gap    recall@1 vs the gap between query and planted key, one line per variant
                   (only with rows of the `recall` distribution)
  recall_heatmap   recall@1 over (n, needle depth), one panel per variant (recall rows)
Rows whose status is not "ok" (skipped cases) are ignored. Exit 1 with a message on error.
"""
import argparse
import json
import math
import os
import sys
from collections import Counter, defaultdict


def fail(message):
    print(f"attnbench plot: {message}", file=sys.stderr)
    sys.exit(1)


try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogFormatter, LogLocator, NullFormatter
except ImportError:
    fail(f"matplotlib is not available for {sys.executable}; run harness/setup.sh "
         "(it installs Debian's python3-matplotlib)")

FORMATS = ("png", "svg")
MARKERS = "osD^vP*Xhp<>"
REQUIRED = {"spec": str, "n": int, "dist": str, "causal": bool, "time_ms_median": (int, float)}


# ---------------------------------------------------------------- loading

def load_results(directory):
    path = os.path.join(directory, "results.json")
    if not os.path.isfile(path):
        fail(f"{path} not found: run `attnbench sweep CONFIG --out {directory}` first")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{path} is not valid JSON: {e}")
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        fail(f"{path} is malformed: expected an object with a \"rows\" array")
    rows = []
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or not isinstance(row.get("status"), str):
            fail(f"{path} is malformed: row {i} has no string \"status\"")
        if row["status"] != "ok":
            continue
        if isinstance(row.get("causal"), int):  # accept 0/1 as well as false/true
            row["causal"] = bool(row["causal"])
        for field, kind in REQUIRED.items():
            if not isinstance(row.get(field), kind):
                fail(f"{path} is malformed: row {i} ({row.get('key', '?')}) lacks {field} "
                     "(see results/README.md for the format)")
        rows.append(row)
    if not rows:
        fail(f"{path} has no rows with status \"ok\": nothing to plot")
    context = data.get("context") if isinstance(data.get("context"), dict) else {}
    scaling = [s for s in data.get("scaling") or [] if isinstance(s, dict)]
    context["time_note"] = merged_time_note(directory)
    return rows, context, scaling


def merged_time_note(directory):
    """How the times of `attnbench merge --allow-mixed-machines` compare (DIR/shards.json)."""
    try:
        with open(os.path.join(directory, "shards.json")) as f:
            shards = json.load(f)
    except (OSError, ValueError):
        return ""
    if not isinstance(shards, dict) or not shards.get("mixed_machines"):
        return ""
    return str(shards.get("time_note") or "mixed machines: times scaled by sgemm ceilings")


def load_posenc(directory):
    path = os.path.join(directory, "posenc.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            data = json.load(f)
        rows = data["rows"]
        for r in rows:
            r["kind"], r["n"], r["param_bytes"] = str(r["kind"]), int(r["n"]), float(r["param_bytes"])
        return rows
    except (OSError, ValueError, KeyError, TypeError) as e:
        fail(f"{path} is malformed ({type(e).__name__}: {e}); expected "
             "{\"rows\": [{\"kind\", \"n\", \"dim\", \"param_bytes\", ...}]}")


# ---------------------------------------------------------------- grouping and style

SHAPE_FIELDS = ("batch", "heads", "dim", "posenc")


def varying_fields(rows):
    """Shape fields that differ between rows: they must appear in line labels."""
    return [f for f in SHAPE_FIELDS if len({str(r.get(f)) for r in rows}) > 1]


def line_key(row, fields):
    return (row["spec"],) + tuple(str(row.get(f)) for f in fields)


def line_label(key, fields):
    names = {"batch": "B", "heads": "H", "dim": "D", "posenc": "posenc"}
    extra = [f"{names[f]}={v}" for f, v in zip(fields, key[1:]) if v not in ("", "None")]
    return key[0] + (f" ({', '.join(extra)})" if extra else "")


class Styles:
    """One colour and marker per variant spec, the same in every figure."""

    def __init__(self, specs):
        specs = sorted(specs)
        cmap = plt.get_cmap("tab10" if len(specs) <= 10 else "tab20")
        self.style = {s: (cmap(i % cmap.N), MARKERS[i % len(MARKERS)]) for i, s in enumerate(specs)}

    def __call__(self, spec):
        color, marker = self.style[spec]
        return {"color": color, "marker": marker, "markersize": 5}


def series(rows, value, fields):
    """{line key: sorted [(n, median over seeds of value)]}, positive finite values only."""
    by_line = defaultdict(lambda: defaultdict(list))
    for r in rows:
        v = r.get(value)
        if isinstance(v, (int, float)) and math.isfinite(v):
            by_line[line_key(r, fields)][r["n"]].append(float(v))
    out = {}
    for key, per_n in by_line.items():
        out[key] = sorted((n, sorted(vs)[len(vs) // 2]) for n, vs in per_n.items())
    return out


def main_dist(rows):
    dists = Counter(r["dist"] for r in rows)
    return "gaussian" if "gaussian" in dists else dists.most_common(1)[0][0]


# ---------------------------------------------------------------- axes helpers

def human_bytes(x, _pos=None):
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if x >= size:
            return f"{x / size:.4g} {unit}"
    return f"{x:g} B"


def human_n(x, _pos=None):
    return f"{x / 1024:g}k" if x >= 1024 else f"{x:g}"


def human_ms(x, _pos=None):
    if x >= 1000:
        return f"{x / 1000:g} s"
    if x >= 1:
        return f"{x:.3g} ms"
    return f"{x * 1000:.3g} µs"


def log_n_axis(ax, ns):
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ns))
    ax.xaxis.set_major_formatter(FuncFormatter(human_n))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("sequence length n (tokens)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="y", alpha=0.1)


def minor_labels(formatter):
    """Labels the minor ticks matplotlib would label (axes spanning about one decade or less),
    in the same units as the major ones."""

    class Human(LogFormatter):
        def __call__(self, x, pos=None):
            return formatter(x) if super().__call__(x, pos) else ""

    return Human(labelOnlyBase=False)


def log_y_axis(ax, formatter=None):
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=12))
    if formatter:
        ax.yaxis.set_major_formatter(FuncFormatter(formatter))
        ax.yaxis.set_minor_formatter(minor_labels(formatter))


def log_bytes_axis(ax):
    """Log axis with ticks at powers of 4 or 16 bytes, so labels read 4 KiB, 64 MiB, ..."""
    ax.set_yscale("log", base=2)
    lo, hi = ax.get_ylim()
    base = 4 if hi / max(lo, 1e-30) < 2 ** 14 else 16
    ax.yaxis.set_major_locator(LogLocator(base=base, numticks=12))
    ax.yaxis.set_minor_locator(LogLocator(base=2, subs=(1.0,), numticks=60))
    ax.yaxis.set_major_formatter(FuncFormatter(human_bytes))
    ax.yaxis.set_minor_formatter(NullFormatter())


def guide_lines(ax, lines, labels):
    """Dashed O(n^p) guides anchored at the geometric mean of the values at the smallest n."""
    points = [pts for pts in lines.values() if pts]
    if not points:
        return
    n0 = min(pts[0][0] for pts in points)
    n1 = max(pts[-1][0] for pts in points)
    at_n0 = [v for pts in points for n, v in pts if n == n0 and v > 0]
    if not at_n0 or n1 <= n0:
        return
    y0 = math.exp(sum(map(math.log, at_n0)) / len(at_n0))
    for power, text in labels:
        y1 = y0 * (n1 / n0) ** power
        ax.plot([n0, n1], [y0, y1], ls=(0, (4, 3)), lw=1, color="0.55", zorder=1)
        ax.annotate(text, (n1, y1), xytext=(3, 0), textcoords="offset points", color="0.4",
                    fontsize=8, va="center")


def context_line(context, rows, dist=None):
    parts = []
    if context.get("cpu_model"):
        parts.append(str(context["cpu_model"]))
    if context.get("threads"):
        parts.append(f"{context['threads']} threads")
    for field, name in (("batch", "B"), ("heads", "H"), ("dim", "D")):
        values = sorted({r.get(field) for r in rows if r.get(field) is not None})
        if len(values) == 1:
            parts.append(f"{name}={values[0]}")
    if dist:
        parts.append(f"inputs: {dist}")
    if context.get("time_note"):
        parts.append(context["time_note"])
    return " · ".join(parts)


def legend_outside(fig, axes):
    handles, labels = {}, []
    for ax in axes:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in handles:
                handles[l] = h
                labels.append(l)
    if labels:
        fig.legend([handles[l] for l in labels], labels, loc="center left",
                   bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def panel_legend(ax):
    """Legend under one panel: its labels (e.g. fitted exponents) are specific to it."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)


def save(fig, directory, name, written):
    for fmt in FORMATS:
        path = os.path.join(directory, f"{name}.{fmt}")
        tmp = path + ".tmp"
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(tmp, format=fmt, dpi=130, bbox_inches="tight", metadata=metadata)
        os.replace(tmp, path)
        written.append(path)
    plt.close(fig)


def causal_panels(rows):
    values = sorted({r["causal"] for r in rows})
    return [(c, "causal" if c else "non-causal") for c in values]


def make_panels(count, width=6.0, height=4.6, sharey=True):
    fig, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False,
                             sharey=sharey)
    return fig, list(axes[0])


# ---------------------------------------------------------------- (1) time vs n

def alpha_text(spec, dist, causal, scaling, points):
    """α from the sweep's own fit (with its CI) when one matches, else fitted here."""
    matches = [s for s in scaling if s.get("spec") == spec and s.get("dist", dist) == dist
               and bool(s.get("causal", causal)) == causal and isinstance(s.get("alpha"), (int, float))]
    if len(matches) == 1:
        s = matches[0]
        text = f"α={s['alpha']:.2f}"
        if isinstance(s.get("alpha_ci_lo"), (int, float)) and isinstance(s.get("alpha_ci_hi"), (int, float)):
            text += f" [{s['alpha_ci_lo']:.2f}, {s['alpha_ci_hi']:.2f}]"
        if isinstance(s.get("crossover_n"), (int, float)):
            text += f", faster than {s.get('crossover_baseline', 'full')} from n≈{round(s['crossover_n'])}"
        return text
    pts = [(math.log(n), math.log(t)) for n, t in points if t > 0]
    if len(pts) < 3:
        return ""
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return f"α≈{sum((x - mx) * (y - my) for x, y in pts) / sxx:.2f}" if sxx > 0 else ""


def plot_time(rows, context, scaling, styles, directory, written):
    dist = main_dist(rows)
    rows = [r for r in rows if r["dist"] == dist]
    fields = varying_fields(rows)
    panels = causal_panels(rows)
    fig, axes = make_panels(len(panels))
    for ax, (causal, title) in zip(axes, panels):
        sel = [r for r in rows if r["causal"] == causal]
        med = series(sel, "time_ms_median", fields)
        lo, hi = series(sel, "time_ms_min", fields), series(sel, "time_ms_max", fields)
        for key, pts in sorted(med.items()):
            ns, ts = zip(*pts)
            fit = alpha_text(key[0], dist, causal, scaling, pts)
            label = line_label(key, fields) + (f"  {fit}" if fit else "")
            st = styles(key[0])
            ax.plot(ns, ts, label=label, lw=1.6, **st)
            if key in lo and key in hi and len(lo[key]) == len(pts) == len(hi[key]):
                ax.fill_between(ns, [v for _, v in lo[key]], [v for _, v in hi[key]],
                                color=st["color"], alpha=0.15, lw=0)
        guide_lines(ax, med, [(1, "O(n)"), (2, "O(n²)")])
        log_n_axis(ax, {r["n"] for r in sel})
        log_y_axis(ax, human_ms)
        ax.set_title(title)
        ax.set_ylabel("median forward time (wall clock)")
        panel_legend(ax)
    fig.suptitle("Forward time vs sequence length (band: min–max over repetitions; α: fitted "
                 "exponent of time ∝ n^α, 95% CI)\n" + context_line(context, rows, dist),
                 fontsize=10)
    fig.tight_layout()
    save(fig, directory, "time_vs_n", written)


# ---------------------------------------------------------------- (2) memory vs n

def plot_memory(rows, context, styles, directory, written):
    dist = main_dist(rows)
    rows = [r for r in rows if r["dist"] == dist]
    fields = varying_fields(rows)
    panels = causal_panels(rows)
    fig, axes = make_panels(len(panels))
    zero = set()
    for ax, (causal, title) in zip(axes, panels):
        sel = [r for r in rows if r["causal"] == causal]
        measured = series(sel, "mem_peak_bytes", fields)
        analytic = series(sel, "extra_bytes", fields)
        for key, pts in sorted(measured.items()):
            positive = [(n, v) for n, v in pts if v > 0]
            if len(positive) < len(pts):
                zero.add(line_label(key, fields))
            st = styles(key[0])
            if positive:
                ax.plot(*zip(*positive), label=line_label(key, fields), lw=1.6, **st)
            est = [(n, v) for n, v in analytic.get(key, []) if v > 0]
            if est:
                ax.plot(*zip(*est), ls=":", lw=1.2, color=st["color"])
        guide_lines(ax, {k: [(n, v) for n, v in p if v > 0] for k, p in measured.items()},
                    [(1, "O(n)"), (2, "O(n²)")])
        log_n_axis(ax, {r["n"] for r in sel})
        log_bytes_axis(ax)
        ax.set_title(title)
        ax.set_ylabel("peak extra memory during forward()")
    note = "solid: measured peak bytes allocated; dotted: analytic extra_bytes()"
    if zero:
        note += f"\nnot shown where 0 B allocated: {', '.join(sorted(zero))}"
    fig.suptitle("Extra memory vs sequence length\n" + context_line(context, rows, dist),
                 fontsize=10)
    fig.text(0.5, -0.02, note, ha="center", va="top", fontsize=8, color="0.3")
    legend_outside(fig, axes)
    fig.tight_layout()
    save(fig, directory, "memory_vs_n", written)


# ---------------------------------------------------------------- (3) error vs n

def dist_order(rows):
    order = ["gaussian", "clustered", "local", "peaked"]
    dists = sorted({r["dist"] for r in rows},
                   key=lambda d: (next((i for i, o in enumerate(order) if d.startswith(o)), 99), d))
    return dists


def grid(count, width=5.2, height=4.2, sharey=False):
    cols = min(3, math.ceil(math.sqrt(count)))
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             sharey=sharey)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def plot_error(rows, context, styles, directory, written):
    fields = varying_fields(rows)
    dists = dist_order(rows)
    both_masks = len({r["causal"] for r in rows}) > 1
    fig, axes = grid(len(dists), sharey=True)
    exact = set()
    for ax, dist in zip(axes, dists):
        sel = [r for r in rows if r["dist"] == dist]
        for causal in sorted({r["causal"] for r in sel}):
            errs = series([r for r in sel if r["causal"] == causal], "rel_err", fields)
            for key, pts in sorted(errs.items()):
                label = line_label(key, fields)  # causal rows share it: dashed, same colour
                positive = [(n, e) for n, e in pts if e > 0]
                if len(positive) < len(pts):
                    exact.add(label + (" (causal)" if causal and both_masks else ""))
                if positive:
                    ax.plot(*zip(*positive), label=label, lw=1.5, ls="--" if causal else "-",
                            **styles(key[0]))
        log_n_axis(ax, {r["n"] for r in sel})
        log_y_axis(ax)
        ax.set_title(f"inputs: {dist}")
        ax.tick_params(labelleft=True)
        ax.set_ylabel("relative error ‖O − O_ref‖_F / ‖O_ref‖_F")
    note = "error against the fp64 reference (sampled query rows at large n; see ref_rows)"
    if both_masks:
        note += "; dashed: causal"
    if exact:
        note += f"\nexactly 0 (not shown on the log axis): {', '.join(sorted(exact))}"
    fig.suptitle("Accuracy vs sequence length, per input distribution\n"
                 + context_line(context, rows), fontsize=10)
    fig.text(0.5, -0.02, note, ha="center", va="top", fontsize=8, color="0.3")
    legend_outside(fig, axes)
    fig.tight_layout()
    save(fig, directory, "error_vs_n", written)


# ---------------------------------------------------------------- (4) speed vs error

def default_n(rows):
    """The largest n at which at least half of all variant specs have ok rows."""
    specs = {r["spec"] for r in rows}
    per_n = defaultdict(set)
    for r in rows:
        per_n[r["n"]].add(r["spec"])
    good = [n for n, s in per_n.items() if 2 * len(s) >= len(specs)]
    return max(good) if good else max(per_n)


def pareto_front(points):
    """Indices of points no other point beats in both time and error."""
    front = []
    for i, (e, t) in enumerate(points):
        dominated = any((e2 <= e and t2 <= t) and (e2 < e or t2 < t)
                        for j, (e2, t2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def label_points(ax, fig, points, labels):
    """Annotates points, nudging a label down when it would overlap one already placed."""
    fig.canvas.draw()  # fixes the axis limits so data → pixel positions are final
    px = fig.dpi / 72.0
    placed = []
    order = sorted(range(len(points)), key=lambda i: -points[i][1])
    for i in order:
        x, y = ax.transData.transform(points[i])
        width, height = 4.2 * px * len(labels[i]), 9 * px
        dx, dy = 6 * px, 3 * px
        for _ in range(12):
            box = (x + dx, y + dy, x + dx + width, y + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                       for b in placed):
                break
            dy -= height
        placed.append(box)
        ax.annotate(labels[i], points[i], xytext=(dx / px, dy / px), textcoords="offset points",
                    fontsize=7, color="0.2",
                    arrowprops=None if dy == 3 * px else dict(arrowstyle="-", color="0.6", lw=0.5))


def plot_pareto(rows, context, styles, directory, written, n):
    """(4): time vs error of every variant at one n, the Pareto front circled."""
    rows = [r for r in rows if r["n"] == n]
    # Causal and non-causal are different problems (about half the work): one front, one kind.
    causal = all(r["causal"] for r in rows)
    rows = [r for r in rows if r["causal"] == causal]
    fields = varying_fields(rows)
    dists = dist_order(rows)
    fig, axes = grid(len(dists), width=5.6, height=4.6)
    for ax, dist in zip(axes, dists):
        sel = [r for r in rows if r["dist"] == dist]
        errs = series(sel, "rel_err", fields)
        times = series(sel, "time_ms_median", fields)
        keys = sorted(set(errs) & set(times))
        pts = [(errs[k][0][1], times[k][0][1]) for k in keys]
        positive = [e for e, _ in pts if e > 0]
        floor = min(positive) / 10 if positive else 1e-12
        shown = [(max(e, floor), t) for e, t in pts]
        for key, point in zip(keys, shown):
            ax.plot(*point, ls="none", label=line_label(key, fields),
                    **{**styles(key[0]), "markersize": 8})
        front = pareto_front(pts)
        if front:
            fe, ft = zip(*[shown[i] for i in front])
            ax.step(fe, ft, where="post", color="black", lw=1, ls="--", zorder=0,
                    label="Pareto front")
            ax.plot(fe, ft, ls="none", marker="o", markersize=14, markerfacecolor="none",
                    markeredgecolor="black", markeredgewidth=1.0, zorder=0)
        ax.set_xscale("log")
        log_y_axis(ax, human_ms)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_xlabel("relative error vs fp64 reference (lower is better)")
        ax.set_ylabel("median forward time (lower is better)")
        ax.set_title(f"inputs: {dist}")
        ax.margins(x=0.3, y=0.2)
        labels = [line_label(k, fields) + (" (error 0)" if p[0] <= 0 else "")
                  for k, p in zip(keys, pts)]
        label_points(ax, fig, shown, labels)
    mask = "causal" if causal else "non-causal"
    fig.suptitle(f"Speed vs error at n = {n}, {mask} (circled: Pareto front — no other variant "
                 "is both faster and more accurate)\n" + context_line(context, rows), fontsize=10)
    legend_outside(fig, axes)
    fig.tight_layout()
    save(fig, directory, "speed_vs_error", written)


# ---------------------------------------------------------------- (5) positional encodings

def plot_posenc(prows, directory, written):
    dims = sorted({r.get("dim") for r in prows if r.get("dim") is not None})
    lines = defaultdict(list)
    for r in prows:
        lines[(r["kind"], r.get("dim"))].append((r["n"], r["param_bytes"]))
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    cmap = plt.get_cmap("tab10")
    parameterless = []
    for i, (key, pts) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
        pts = sorted(p for p in pts if p[1] > 0)
        if not pts:
            parameterless.append(key[0])
            continue
        label = key[0] + (f" (D={key[1]})" if len(dims) > 1 else "")
        ax.plot(*zip(*pts), label=label, lw=1.6, marker=MARKERS[i % len(MARKERS)],
                color=cmap(i % 10))
    guide_lines(ax, {k: sorted(p for p in v if p[1] > 0) for k, v in lines.items()},
                [(0.5, "O(√n·D)"), (1, "O(n·D)")])
    log_n_axis(ax, {r["n"] for r in prows})
    log_bytes_axis(ax)
    ax.set_ylabel("parameter memory")
    title = "Positional-encoding parameters vs sequence length"
    if len(dims) == 1:
        title += f" (D={dims[0]})"
    ax.set_title(title + "\naxial factorizes the n×D table: O(√n·D) instead of O(n·D)",
                 fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    if parameterless:
        ax.text(0.99, 0.02, "no parameters (computed on the fly): " + ", ".join(sorted(set(parameterless))),
                transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="0.3")
    fig.tight_layout()
    save(fig, directory, "posenc_memory", written)


# ---------------------------------------------------------------- (6) recall

def recall_rows(rows):
    return [r for r in rows if str(r["dist"]).startswith("recall")
            and isinstance(r.get("recall"), (int, float))]


def pooled_bins(rows, field):
    """{(lo, hi): recall} pooled over rows (weighted by their query rows)."""
    hits, count = defaultdict(float), defaultdict(float)
    for r in rows:
        for b in r.get(field) or []:
            if isinstance(b, list) and len(b) == 4 and b[2] > 0:
                hits[(b[0], b[1])] += b[2] * b[3]
                count[(b[0], b[1])] += b[2]
    return {k: hits[k] / count[k] for k in sorted(count)}


def plot_recall_gap(rows, context, styles, directory, written):
    """(6a): recall@1 vs gap, pooled over n and seeds; depth-grid inputs left out when others
    exist (their gaps are all large)."""
    sel = [r for r in rows if "gap=depth" not in r["dist"]] or rows
    fields = varying_fields(sel)
    panels = causal_panels(sel)
    fig, axes = make_panels(len(panels))
    for ax, (causal, title) in zip(axes, panels):
        lines = defaultdict(list)
        for r in sel:
            if r["causal"] == causal:
                lines[line_key(r, fields)].append(r)
        for key, group in sorted(lines.items()):
            bins = pooled_bins(group, "recall_by_gap")
            if not bins:
                continue
            xs = [math.sqrt(lo * hi) for lo, hi in bins]
            ax.plot(xs, list(bins.values()), label=line_label(key, fields), lw=1.6,
                    **styles(key[0]))
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(human_n))
        ax.set_ylim(-0.03, 1.03)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("gap between query and planted key (tokens, log2 bins)")
        ax.set_ylabel("recall@1 (nearest codebook value is the planted one)")
        ax.set_title(title)
    dists = sorted({r["dist"] for r in sel})
    fig.suptitle("Associative recall vs gap (pooled over n and seeds; chance = 1/pairs)\n"
                 + context_line(context, sel, ", ".join(dists)), fontsize=10)
    legend_outside(fig, axes)
    fig.tight_layout()
    save(fig, directory, "recall_vs_gap", written)


def plot_recall_heatmap(rows, context, directory, written):
    """(6b): recall@1 per (n, depth bin), one panel per variant spec (and mask)."""
    sel = [r for r in rows if "gap=depth" in r["dist"]] or rows
    panels = sorted({(r["spec"], r["causal"]) for r in sel})
    fig, axes = grid(len(panels), width=4.4, height=3.9)
    fig.subplots_adjust(hspace=0.55, wspace=0.4)
    image = None
    for ax, (spec, causal) in zip(axes, panels):
        group = [r for r in sel if r["spec"] == spec and r["causal"] == causal]
        ns = sorted({r["n"] for r in group})
        depths = sorted({(b[0], b[1]) for r in group for b in r.get("recall_by_depth") or []})
        cells = [[math.nan] * len(ns) for _ in depths]
        for j, n in enumerate(ns):
            bins = pooled_bins([r for r in group if r["n"] == n], "recall_by_depth")
            for i, d in enumerate(depths):
                cells[i][j] = bins.get(d, math.nan)
        image = ax.imshow(cells, origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(ns)), [human_n(n) for n in ns])
        ax.set_yticks(range(len(depths)), [f"{lo:.1f}" for lo, _ in depths])
        for i in range(len(depths)):
            for j in range(len(ns)):
                if not math.isnan(cells[i][j]):
                    ax.text(j, i, f"{cells[i][j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if cells[i][j] < 0.6 else "black")
        ax.set_xlabel("sequence length n")
        ax.set_ylabel("needle depth (0 = first token)")
        ax.set_title(spec + (" (causal)" if causal else ""), fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="recall@1")
    fig.suptitle("Needle in a haystack: recall@1 over (n, depth of the planted key)\n"
                 + context_line(context, sel), fontsize=10)
    save(fig, directory, "recall_heatmap", written)


# ---------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description="Plots of an attnbench results directory.")
    parser.add_argument("dir")
    parser.add_argument("--n", type=int, default=None,
                        help="sequence length of the speed-vs-error plot (default: the largest "
                             "n where at least half of the variants have results)")
    args = parser.parse_args()
    if not os.path.isdir(args.dir):
        fail(f"{args.dir} is not a directory")
    rows, context, scaling = load_results(args.dir)
    posenc = load_posenc(args.dir)
    plt.rcParams.update({"svg.hashsalt": "attnbench", "axes.spines.top": False,
                         "axes.spines.right": False, "font.size": 9})
    ns = sorted({r["n"] for r in rows})
    if args.n is None:
        args.n = default_n(rows)
    elif args.n not in ns:
        fail(f"--n {args.n}: no ok rows at that n; measured n: {', '.join(map(str, ns))}")
    styles = Styles({r["spec"] for r in rows})
    written = []
    plot_time(rows, context, scaling, styles, args.dir, written)
    plot_memory(rows, context, styles, args.dir, written)
    plot_error(rows, context, styles, args.dir, written)
    plot_pareto(rows, context, styles, args.dir, written, args.n)
    if posenc:
        plot_posenc(posenc, args.dir, written)
    recall = recall_rows(rows)
    if recall:
        plot_recall_gap(recall, context, styles, args.dir, written)
        plot_recall_heatmap(recall, context, args.dir, written)
    for path in written:
        print(f"wrote {path}")
    print(f"(speed_vs_error at n = {args.n})")


if __name__ == "__main__":
    main()
