"""The report's figures: one function per picture, each returning a matplotlib ``Figure``.

The figures are drawn with matplotlib's object-oriented API (``matplotlib.figure.Figure``,
rendered by the Agg canvas), never through ``pyplot``: no global figure registry, no
backend switch, nothing to leak between calls. :func:`figure_to_data_uri` turns a figure
into a ``data:image/png;base64,...`` URI that an ``<img>`` tag embeds, so the HTML page
is self-contained.

Every function reads the plain Python structures of ``results.json`` (lists and dicts of
numbers, see :mod:`darkknowledge.report.html`); ``None`` marks a missing number and is
drawn as a gap, never as a zero.

Colours follow the model's role throughout the report: teacher (dark blue), ensemble
member (grey), student alone (orange), distilled student (teal).

Example
-------
>>> fig = plot_size_accuracy([
...     {"name": "teacher", "role": "teacher", "params": 100_000, "accuracy": 0.97,
...      "latency_ms_per_sample": 0.02},
...     {"name": "student", "role": "student-distilled", "params": 3_000, "accuracy": 0.95,
...      "latency_ms_per_sample": 0.002}])
>>> figure_to_data_uri(fig)[:22]
'data:image/png;base64,'
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

__all__ = [
    "ROLE_COLORS",
    "figure_to_data_uri",
    "plot_confusion",
    "plot_dark_mass",
    "plot_learning_curves",
    "plot_reliability",
    "plot_size_accuracy",
    "plot_soft_targets",
    "plot_sweep",
]

#: Colour of each model role, shared by all figures and the HTML table.
ROLE_COLORS: dict[str, str] = {
    "teacher": "#1f4e79",
    "teacher-member": "#9aa5b1",
    "student-alone": "#d9822b",
    "student-distilled": "#1a9c8c",
}
_INK = "#222831"
_MUTED = "#6b7280"
_GRID = "#e5e7eb"
_DPI = 144  # PNGs are drawn at 1.5x their CSS size so they stay sharp on HiDPI screens


def _color(role: str) -> str:
    return ROLE_COLORS.get(role, _INK)


def _num(value: Any) -> float:
    """A JSON number, or NaN for ``None`` / anything non-numeric (drawn as a gap)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _new_figure(width: float, height: float) -> Figure:
    """A figure attached to the Agg canvas (no pyplot), with the report's typography."""
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _tidy(ax, *, grid_axis: str = "y") -> None:
    """Light styling: no top/right spines, a faint grid behind the data, muted ticks."""
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9ca3af")
    ax.tick_params(colors=_MUTED, labelsize=8, length=3)
    ax.xaxis.label.set_color(_INK)
    ax.yaxis.label.set_color(_INK)
    ax.xaxis.label.set_size(9)
    ax.yaxis.label.set_size(9)
    ax.title.set_color(_INK)
    ax.title.set_size(10)
    if grid_axis:
        ax.grid(True, axis=grid_axis, color=_GRID, linewidth=0.8)
    ax.set_axisbelow(True)


def figure_to_data_uri(fig: Figure) -> str:
    """Render ``fig`` as PNG and return it as a ``data:image/png;base64,...`` URI.

    The figure is cleared afterwards (its artists are released); do not reuse it.

    >>> fig = _new_figure(2, 1)
    >>> uri = figure_to_data_uri(fig)
    >>> base64.b64decode(uri.split(",", 1)[1])[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    fig.clear()
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plot_learning_curves(models: Sequence[Mapping[str, Any]]) -> Figure:
    """Training loss and validation accuracy per epoch, one line per model.

    ``models`` are results.json model entries; those without a ``history`` are skipped.
    Each history entry is ``{"epoch", "loss", "val_accuracy", ...}``. Ensemble members
    are drawn thin and grey. Loss is in nats per sample (for the distilled student it is
    the distillation objective, so its scale differs from plain cross-entropy); the loss
    axis is logarithmic.
    """
    fig = _new_figure(9.5, 3.4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    member_labelled = False
    for model in models:
        history = model.get("history") or []
        if not history:
            continue
        role = model.get("role", "")
        epochs = np.array([_num(h.get("epoch")) for h in history])  # (E,)
        loss = np.array([_num(h.get("loss")) for h in history])  # (E,) nats
        val_acc = 100.0 * np.array([_num(h.get("val_accuracy")) for h in history])  # (E,) %
        member = role == "teacher-member"
        label = str(model.get("name", role))
        if member:
            label = "ensemble members" if not member_labelled else None
            member_labelled = True
        style = {
            "color": _color(role),
            "linewidth": 0.9 if member else 2.0,
            "alpha": 0.7 if member else 1.0,
            "label": label,
        }
        if len(epochs) == 1:
            style["marker"] = "o"
        ax_loss.plot(epochs, loss, **style)
        ax_acc.plot(epochs, val_acc, **style)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss (nats)")
    if ax_loss.lines:
        ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax_loss.lines])
        ys = ys[np.isfinite(ys)]
        if ys.size and np.all(ys > 0):  # a log axis only when every loss is positive
            ax_loss.set_yscale("log")
    ax_loss.set_title("Training loss")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("validation accuracy (%)")
    ax_acc.set_title("Validation accuracy")
    for ax in (ax_loss, ax_acc):
        _tidy(ax, grid_axis="both")
        ax.xaxis.get_major_locator().set_params(integer=True)
    if ax_acc.lines:
        ax_acc.legend(fontsize=8, frameon=False, loc="lower right")
    return fig


def plot_sweep(
    sweep: Sequence[Mapping[str, Any]], best: Mapping[str, Any] | None = None
) -> Figure:
    """Validation accuracy (and NLL) over the temperature / α sweep.

    With at least two temperatures and two α values on a full grid, draws two heat maps
    (accuracy in %, NLL in nats) with the chosen ``best`` cell outlined; otherwise draws
    validation accuracy against temperature, one line per α (log-scaled T axis).
    ``sweep`` entries are ``{"temperature", "alpha", "val_accuracy", "val_nll"}``.
    """
    temps = sorted({_num(s["temperature"]) for s in sweep})
    alphas = sorted({_num(s["alpha"]) for s in sweep})
    cells = {(_num(s["temperature"]), _num(s["alpha"])): s for s in sweep}
    best_key = None
    if best:
        best_key = (_num(best.get("temperature")), _num(best.get("alpha")))
    full_grid = len(temps) >= 2 and len(alphas) >= 2 and len(cells) == len(temps) * len(alphas)
    if full_grid:
        fig = _new_figure(9.5, 0.9 + 0.42 * len(alphas) + 1.2)
        axes = fig.subplots(1, 2)
        for ax, key, title, scale, cmap, fmt in (
            (axes[0], "val_accuracy", "Validation accuracy (%)", 100.0, "YlGn", "{:.1f}"),
            (axes[1], "val_nll", "Validation NLL (nats)", 1.0, "YlGn_r", "{:.3f}"),
        ):
            grid = np.full((len(alphas), len(temps)), np.nan)  # (A, T) rows = alpha
            for (t, a), s in cells.items():
                grid[alphas.index(a), temps.index(t)] = scale * _num(s.get(key))
            finite = grid[np.isfinite(grid)]
            ax.imshow(grid, cmap=cmap, aspect="auto", origin="lower")
            mid = float(np.mean([finite.min(), finite.max()])) if finite.size else 0.0
            for i in range(len(alphas)):
                for j in range(len(temps)):
                    if np.isfinite(grid[i, j]):
                        dark = (grid[i, j] > mid) if key == "val_accuracy" else (grid[i, j] < mid)
                        ax.text(j, i, fmt.format(grid[i, j]), ha="center", va="center",
                                fontsize=7.5, color="white" if dark else _INK)
            if best_key in cells:
                j, i = temps.index(best_key[0]), alphas.index(best_key[1])
                ax.add_patch(_best_box(j, i))
            ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps])
            ax.set_yticks(range(len(alphas)), [f"{a:g}" for a in alphas])
            ax.set_xlabel("temperature T")
            ax.set_ylabel("α (hard-label weight)")
            ax.set_title(title)
            _tidy(ax, grid_axis="")
        return fig
    fig = _new_figure(7.0, 3.2)
    ax = fig.subplots()
    palette = ["#1a9c8c", "#1f4e79", "#d9822b", "#7b2cbf", "#c0392b", "#6b7280"]
    for k, a in enumerate(alphas):
        ts = [t for t in temps if (t, a) in cells]
        accs = [100.0 * _num(cells[(t, a)].get("val_accuracy")) for t in ts]
        ax.plot(ts, accs, marker="o", color=palette[k % len(palette)], linewidth=1.8,
                label=f"α = {a:g}")
    if best_key in cells:
        ax.plot([best_key[0]], [100.0 * _num(cells[best_key].get("val_accuracy"))], marker="*",
                markersize=14, color="#e0a800", markeredgecolor=_INK, linestyle="none",
                label="chosen")
    if all(t > 0 for t in temps):
        ax.set_xscale("log")
        ax.set_xticks(temps, [f"{t:g}" for t in temps])
        ax.minorticks_off()
    ax.set_xlabel("temperature T")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Temperature sweep")
    ax.legend(fontsize=8, frameon=False)
    _tidy(ax, grid_axis="both")
    return fig


def _best_box(j: int, i: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor="#f59e0b",
                     linewidth=2.6)


def plot_reliability(models: Sequence[Mapping[str, Any]]) -> Figure:
    """Reliability diagrams (calibration), one panel per model that has ``reliability``.

    Each bar is a confidence bin: its height is the accuracy of the predictions in the
    bin, the red sliver the gap to the bin's mean confidence; a calibrated model sits on
    the diagonal. Empty bins are left out. The panel title gives the model's ECE (%).
    """
    with_rel = [m for m in models if m.get("reliability")]
    n = len(with_rel)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = _new_figure(2.45 * cols + 0.4, 2.55 * rows + 0.2)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, model in zip(axes, with_rel):
        rel = model["reliability"]
        edges = np.array([_num(e) for e in rel.get("bin_edges", [])])  # (B+1,)
        conf = np.array([_num(c) for c in rel.get("bin_confidence", [])])  # (B,)
        acc = np.array([_num(a) for a in rel.get("bin_accuracy", [])])  # (B,)
        count = np.array([_num(c) for c in rel.get("bin_count", [])])  # (B,)
        if edges.size >= 2 and conf.size == acc.size == count.size == edges.size - 1:
            keep = np.isfinite(acc) & np.isfinite(conf) & (np.nan_to_num(count) > 0)
            left, width = edges[:-1][keep], np.diff(edges)[keep]
            color = _color(model.get("role", ""))
            ax.bar(left, acc[keep], width=width, align="edge", color=color, alpha=0.85,
                   edgecolor="white", linewidth=0.6, label="accuracy")
            gap_bottom = np.minimum(acc[keep], conf[keep])
            ax.bar(left, np.abs(conf[keep] - acc[keep]), bottom=gap_bottom, width=width,
                   align="edge", color="#e4572e", alpha=0.35, edgecolor="none", label="gap")
        ax.plot([0, 1], [0, 1], color=_MUTED, linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ece = _num(model.get("ece"))
        name = str(model.get("name", ""))
        title = name if len(name) <= 28 else name[:27] + "…"
        ax.set_title(title + (f"\nECE {100 * ece:.2f} %" if math.isfinite(ece) else ""),
                     fontsize=9)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        _tidy(ax, grid_axis="both")
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def plot_confusion(
    matrices: Sequence[tuple[str, Sequence[Sequence[int]]]], class_names: Sequence[str]
) -> Figure:
    """Confusion matrices side by side: rows are the true class, columns the predicted one.

    ``matrices`` is a list of ``(title, (C, C) counts)``. Because the diagonal dwarfs the
    errors, only the off-diagonal cells (the errors) are coloured, on one scale shared by
    all panels; the diagonal shows its count in grey. Every non-zero count is written.
    """
    n = len(matrices)
    c = len(class_names)
    side = min(5.2, max(3.4, 0.36 * c + 1.2))
    fig = _new_figure(side * n + 0.6, side)
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)).ravel()
    mats = [np.asarray(m, dtype=float) for _, m in matrices]  # each (C, C)
    off_max = max(
        (float((m * (1 - np.eye(m.shape[0]))).max()) for m in mats if m.size), default=1.0
    )
    cmap = LinearSegmentedColormap.from_list("errors", ["#ffffff", "#f4a261", "#c0392b"])
    small = c <= 20
    for ax, (title, _), mat in zip(axes, matrices, mats):
        off = np.where(np.eye(mat.shape[0], dtype=bool), np.nan, mat)  # (C, C) errors only
        ax.imshow(off, cmap=cmap, vmin=0, vmax=max(off_max, 1.0))
        ax.imshow(np.where(np.eye(mat.shape[0], dtype=bool), 1.0, np.nan), cmap="Greys",
                  vmin=0, vmax=8)
        if small:
            for i in range(mat.shape[0]):
                for j in range(mat.shape[1]):
                    if mat[i, j] > 0:
                        strong = i != j and mat[i, j] > 0.6 * off_max
                        ax.text(j, i, f"{int(mat[i, j])}", ha="center", va="center",
                                fontsize=7 if c > 12 else 8,
                                color="white" if strong else (_MUTED if i == j else _INK))
        ticks = range(c)
        labels = [str(name) for name in class_names] if small else None
        if labels is not None:
            ax.set_xticks(ticks, labels, fontsize=8)
            ax.set_yticks(ticks, labels, fontsize=8)
        errors = int(np.nansum(off))
        ax.set_title(f"{title}\n{errors} errors", fontsize=9.5, color=_INK)
        ax.set_xlabel("predicted class", fontsize=9)
        ax.set_ylabel("true class", fontsize=9)
        ax.tick_params(colors=_MUTED, length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    return fig


def _entropy_bits(p: np.ndarray) -> float:
    """Shannon entropy in bits, with the convention 0 log 0 = 0."""
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def plot_soft_targets(
    examples: Sequence[Mapping[str, Any]], class_names: Sequence[str], *, max_examples: int = 4
) -> Figure:
    """The teacher's softmax at several temperatures for a few test samples.

    One row per example, one column per temperature (sorted ascending); bars are the
    class probabilities, the true class in dark blue and the others ("dark knowledge")
    in teal, on a shared 0–1 axis so that the mass which raising T moves onto the wrong
    classes is visible. Each panel title gives T and the entropy H of the distribution
    in bits.
    """
    examples = list(examples)[:max_examples]
    temps = sorted({float(t) for ex in examples for t in ex.get("probs", {})})
    rows, cols = len(examples), max(len(temps), 1)
    fig = _new_figure(min(2.5 * cols + 0.8, 10.5), 1.75 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for r, ex in enumerate(examples):
        by_t = {float(t): np.array([_num(v) for v in p]) for t, p in ex.get("probs", {}).items()}
        label = ex.get("label")
        label_name = ex.get("label_name", label)
        for k, t in enumerate(temps):
            ax = axes[r, k]
            p = by_t.get(t)  # (C,) probabilities at temperature t
            if p is None:
                ax.set_visible(False)
                continue
            colors = [ROLE_COLORS["teacher"] if j == label else ROLE_COLORS["student-distilled"]
                      for j in range(p.size)]
            ax.bar(range(p.size), p, color=colors, width=0.78)
            ax.set_ylim(0, 1)
            ax.set_title(f"T = {t:g} · H = {_entropy_bits(p):.2f} bits", fontsize=8.5)
            if p.size <= 20:
                names = [str(class_names[j]) if j < len(class_names) else str(j)
                         for j in range(p.size)]
                ax.set_xticks(range(p.size), names, fontsize=7)
            if k == 0:
                ax.set_ylabel(f"#{ex.get('index', '?')} (true: {label_name})", fontsize=8.5)
            _tidy(ax)
    return fig


def plot_dark_mass(
    soft_targets: Mapping[str, Any], class_names: Sequence[str]
) -> Figure | None:
    """Per true class: the teacher's mass on the wrong classes and its entropy, per T.

    Left: mean probability on the non-target classes ("dark mass"), grouped bars per
    temperature. Right: mean entropy of the softened outputs in bits. Returns ``None``
    when neither ``dark_mass`` nor ``per_class_entropy_bits`` is present.
    """
    panels = [
        (key, title, ylabel)
        for key, title, ylabel in (
            ("dark_mass", "Dark mass: probability on wrong classes", "mean mass on non-target"),
            ("per_class_entropy_bits", "Entropy of the soft targets", "mean entropy (bits)"),
        )
        if soft_targets.get(key)
    ]
    if not panels:
        return None
    fig = _new_figure(9.5 if len(panels) == 2 else 5.5, 3.0)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    blues = ["#c6dbef", "#6baed6", "#2171b5", "#08306b", "#041a3a"]
    for ax, (key, title, ylabel) in zip(axes, panels):
        data = soft_targets[key]
        temps = sorted(data, key=float)
        n_t = len(temps)
        width = 0.8 / max(n_t, 1)
        for k, t in enumerate(temps):
            vals = np.array([_num(v) for v in data[t]])  # (C,) one value per true class
            xs = np.arange(vals.size) - 0.4 + width * (k + 0.5)
            ax.bar(xs, vals, width=width, color=blues[min(k, len(blues) - 1)] if n_t <= 5
                   else None, label=f"T = {float(t):g}")
        c = max(len(data[t]) for t in temps)
        if c <= 20:
            ax.set_xticks(range(c), [str(class_names[j]) if j < len(class_names) else str(j)
                                     for j in range(c)], fontsize=8)
        ax.set_xlabel("true class")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7.5, frameon=False, ncols=min(n_t, 4))
        _tidy(ax)
    return fig


def plot_size_accuracy(models: Sequence[Mapping[str, Any]]) -> Figure:
    """Size, latency and accuracy side by side.

    Left: parameters (log scale) against test accuracy, one labelled point per model.
    Right: inference latency per sample in microseconds (batched), one bar per model.
    """
    fig = _new_figure(9.5, 3.3)
    ax_size, ax_lat = fig.subplots(1, 2, width_ratios=[1.15, 1])
    for m in models:
        params, acc = _num(m.get("params")), 100.0 * _num(m.get("accuracy"))
        if not (math.isfinite(params) and params > 0 and math.isfinite(acc)):
            continue
        role = m.get("role", "")
        ax_size.scatter([params], [acc], s=70 if role != "teacher-member" else 30,
                        color=_color(role), edgecolor="white", linewidth=1, zorder=3)
        ax_size.annotate(_short(str(m.get("name", ""))), (params, acc), xytext=(6, 4),
                         textcoords="offset points", fontsize=7.5, color=_INK)
    ax_size.set_xscale("log")
    ax_size.set_xlabel("parameters (log scale)")
    ax_size.set_ylabel("test accuracy (%)")
    ax_size.set_title("Size vs accuracy")
    ax_size.margins(x=0.25, y=0.2)
    _tidy(ax_size, grid_axis="both")

    names, lats, colors = [], [], []
    for m in models:
        lat = _num(m.get("latency_ms_per_sample"))
        if math.isfinite(lat):
            names.append(_short(str(m.get("name", ""))))
            lats.append(1000.0 * lat)  # µs per sample
            colors.append(_color(m.get("role", "")))
    ys = np.arange(len(names))[::-1]
    ax_lat.barh(ys, lats, color=colors, height=0.6)
    for y, v in zip(ys, lats):
        ax_lat.text(v, y, f"  {v:.3g} µs", va="center", fontsize=7.5, color=_INK)
    ax_lat.set_yticks(ys, names, fontsize=7.5)
    ax_lat.set_xlabel("latency per sample (µs, batched)")
    ax_lat.set_title("Inference latency")
    ax_lat.margins(x=0.3)
    _tidy(ax_lat, grid_axis="x")
    return fig


def _short(name: str, limit: int = 30) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
