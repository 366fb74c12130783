"""The HTML report: one self-contained page that shows what distillation kept and what it lost.

:func:`render_report` turns the run's ``results.json`` (a dict) into ``report.html``: a
headline sentence computed from the numbers, the results table, and the figures of
:mod:`darkknowledge.report.plots` embedded as base64 PNG ``data:`` URIs. The page loads
nothing from anywhere (no external CSS, JS, fonts or images; a Content-Security-Policy
forbids it), so it can be mailed, archived or opened offline. All text that comes from
the JSON is HTML-escaped. The file is written atomically (temporary file, then rename).

Required: ``results["models"]``, a non-empty list whose entries each have ``name``,
``role`` (one of :data:`ROLES`), ``params``, ``test_errors``, ``n_test`` and ``accuracy``.
Everything else is optional: a section whose data is missing (no sweep, no soft targets,
no histories...) is replaced by a one-line note, never a crash.

The headline compares the first ``teacher``, ``student-alone`` and ``student-distilled``
rows. The share of the gap closed is computed from their test errors,

.. math::  \\text{gap closed} = \\frac{e_\\text{alone} - e_\\text{distilled}}
                                      {e_\\text{alone} - e_\\text{teacher}},

so every number in the sentence can be checked against the table. Accuracy kept is
``accuracy_distilled / accuracy_teacher`` and "Nx smaller" is the ratio of parameter counts.

Example
-------
>>> import tempfile, pathlib
>>> results = {"models": [
...     {"name": "teacher", "role": "teacher", "params": 120_000, "test_errors": 11,
...      "n_test": 450, "accuracy": 439 / 450},
...     {"name": "student alone", "role": "student-alone", "params": 4_000,
...      "test_errors": 19, "n_test": 450, "accuracy": 431 / 450},
...     {"name": "student distilled", "role": "student-distilled", "params": 4_000,
...      "test_errors": 14, "n_test": 450, "accuracy": 436 / 450}]}
>>> headline(results)  # doctest: +NORMALIZE_WHITESPACE
"The distilled student (student distilled, 30x smaller) keeps 99.3 % of the teacher's
accuracy: 14 test errors vs 11 for the teacher and 19 alone; distillation closed 62 % of
the gap."
>>> out = render_report(results, pathlib.Path(tempfile.mkdtemp()) / "report.html")
>>> out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
True

References
----------
Hinton, Vinyals & Dean (2015), *Distilling the Knowledge in a Neural Network*.
Guo et al. (2017), *On Calibration of Modern Neural Networks* (reliability diagrams, ECE).
"""

from __future__ import annotations

import html
import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from darkknowledge._checks import check_in_range, check_one_of, check_positive_int
from darkknowledge.report import plots
from darkknowledge.errors import InputError, InputTypeError

__all__ = [
    "REQUIRED_MODEL_KEYS",
    "ROLES",
    "headline",
    "render_report",
    "render_report_from_file",
    "validate_results",
]

#: The roles a model row can have, in the order the pipeline lists them.
ROLES = ("teacher", "teacher-member", "student-alone", "student-distilled")
#: Keys every entry of ``results["models"]`` must have.
REQUIRED_MODEL_KEYS = ("name", "role", "params", "test_errors", "n_test", "accuracy")
_OPTIONAL_NUMBERS = (
    "nll", "ece", "agreement", "kl_to_teacher", "latency_ms_per_sample", "accuracy_std",
)
_ROLE_LABELS = {
    "teacher": "teacher",
    "teacher-member": "ensemble member",
    "student-alone": "student, alone",
    "student-distilled": "student, distilled",
}


# --------------------------------------------------------------------------- validation
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_results(results: Any) -> None:
    """Check that ``results`` has what the report needs; raise naming what is missing.

    Raises ``TypeError`` if ``results`` is not a dict, or a value has the wrong type;
    ``ValueError`` if ``models`` is missing or empty, a model lacks a required key
    (:data:`REQUIRED_MODEL_KEYS`), its role is unknown, or a number is out of range.

    >>> validate_results({"models": [{"name": "t", "role": "teacher"}]})
    Traceback (most recent call last):
    ...
    darkknowledge.errors.InputError: results['models'][0] is missing required key 'params'.
    """
    if not isinstance(results, Mapping):
        raise InputTypeError(f"results must be a dict, got {type(results).__name__} instead.")
    if "models" not in results:
        raise InputError("results is missing required key 'models'.")
    models = results["models"]
    if not isinstance(models, Sequence) or isinstance(models, (str, bytes)) or not models:
        raise InputError(
            f"results['models'] must be a non-empty list of model entries, got {models!r} instead."
        )
    for i, model in enumerate(models):
        where = f"results['models'][{i}]"
        if not isinstance(model, Mapping):
            raise InputTypeError(f"{where} must be a dict, got {type(model).__name__} instead.")
        for key in REQUIRED_MODEL_KEYS:
            if key not in model:
                raise InputError(f"{where} is missing required key {key!r}.")
        if not isinstance(model["name"], str):
            raise InputTypeError(
                f"{where}['name'] must be a string, got {type(model['name']).__name__} instead."
            )
        check_one_of(f"{where}['role']", model["role"], ROLES)
        check_positive_int(f"{where}['params']", model["params"], minimum=0)
        check_positive_int(f"{where}['n_test']", model["n_test"])
        if not _is_number(model["test_errors"]) or not (model["test_errors"] >= 0):
            raise InputError(
                f"{where}['test_errors'] must be a number >= 0 (a count, or its mean over seeds), "
                f"got {model['test_errors']!r} instead."
            )
        if model["test_errors"] > model["n_test"]:
            raise InputError(
                f"{where}['test_errors'] must be <= n_test ({model['n_test']}), "
                f"got {model['test_errors']!r} instead."
            )
        check_in_range(f"{where}['accuracy']", model["accuracy"], 0.0, 1.0)
        for key in _OPTIONAL_NUMBERS:
            value = model.get(key)
            if value is not None and not _is_number(value):
                raise InputTypeError(
                    f"{where}[{key!r}] must be a number or null, "
                    f"got {type(value).__name__} instead."
                )


# --------------------------------------------------------------------------- headline
def _first(models: Sequence[Mapping[str, Any]], role: str) -> Mapping[str, Any] | None:
    return next((m for m in models if m["role"] == role), None)


def _count(n: float) -> str:
    """An error count: an integer as is, a mean over seeds with one decimal."""
    return str(n) if isinstance(n, int) else f"{n:.1f}"


def _errors(n: float) -> str:
    return f"{_count(n)} test error" + ("" if n == 1 else "s")


def _size_ratio(teacher: Mapping[str, Any], student: Mapping[str, Any]) -> str | None:
    """'33x smaller' (ratio of parameter counts), or None if a count is zero."""
    if teacher["params"] <= 0 or student["params"] <= 0:
        return None
    ratio = teacher["params"] / student["params"]
    if ratio >= 1:
        return f"{ratio:.0f}x smaller" if ratio >= 9.95 else f"{ratio:.1f}x smaller"
    return f"{1 / ratio:.1f}x larger"


def gap_closed(teacher_errors: float, alone_errors: float, distilled_errors: float) -> float | None:
    """The share of the teacher–student gap that distillation closed; the one definition in darkknowledge.

    .. math::  \\frac{e_\\text{alone} - e_\\text{distilled}}{e_\\text{alone} - e_\\text{teacher}}

    with test errors ``e`` (counts or means over seeds). 1 means the distilled student matched the teacher,
    0 that it did no better than the same student alone, a negative value that distillation made it
    worse, above 1 that it beat the teacher. ``None`` when the student alone already matches or beats
    the teacher (``e_alone <= e_teacher``): there is no gap to close, and a ratio would be meaningless.

    >>> gap_closed(67, 146, 74)  # Hinton et al. (2015), MNIST
    0.9113924050632911
    >>> gap_closed(100, 90, 95) is None  # the student alone beat the teacher
    True
    """
    gap = alone_errors - teacher_errors
    if not gap > 0:
        return None
    return (alone_errors - distilled_errors) / gap


def _gap_closed(teacher, alone, distilled) -> float | None:
    return gap_closed(teacher["test_errors"], alone["test_errors"], distilled["test_errors"])


def headline(results: Mapping[str, Any]) -> str:
    """The one-sentence summary of the run, computed from the model rows (plain text).

    With a teacher and a distilled student: size ratio, accuracy kept, test errors of
    the distilled student, the teacher and (if present) the student alone, and the
    share of the teacher–student gap that distillation closed. Otherwise a sentence
    naming the most accurate model.
    """
    validate_results(results)
    models = results["models"]
    teacher = _first(models, "teacher")
    alone = _first(models, "student-alone")
    distilled = _first(models, "student-distilled")
    if teacher is None or distilled is None:
        best = max(models, key=lambda m: m["accuracy"])
        return (
            f"{len(models)} model{'s' if len(models) != 1 else ''} evaluated; the most "
            f"accurate is {best['name']} with {100 * best['accuracy']:.1f} % test accuracy "
            f"({_errors(best['test_errors'])} of {best['n_test']})."
        )
    details = [distilled["name"]]
    size = _size_ratio(teacher, distilled)
    if size:
        details.append(size)
    sentence = f"The distilled student ({', '.join(details)})"
    if teacher["accuracy"] > 0:
        kept = 100 * distilled["accuracy"] / teacher["accuracy"]
        sentence += f" keeps {kept:.1f} % of the teacher's accuracy: "
    else:
        sentence += ": "
    sentence += f"{_errors(distilled['test_errors'])} vs {_count(teacher['test_errors'])} for the teacher"
    if alone is None:
        return sentence + "."
    sentence += f" and {_count(alone['test_errors'])} alone"
    closed = _gap_closed(teacher, alone, distilled)
    if closed is None:
        if alone["test_errors"] == teacher["test_errors"]:
            return sentence + "; the student alone already matched the teacher."
        return sentence + "; the student alone already beat the teacher."
    if closed >= 0:
        return sentence + f"; distillation closed {100 * closed:.0f} % of the gap."
    return sentence + f"; distillation did not help: it widened the gap by {-100 * closed:.0f} %."


# --------------------------------------------------------------------------- formatting
def _pm(std: Any) -> str:
    """' ± 1.2' for a finite standard deviation over seeds, else nothing."""
    if _is_number(std) and math.isfinite(std):
        return f' <span class="pm">± {std:.1f}</span>'
    return ""


def _e(value: Any) -> str:
    """HTML-escape any value's text (quotes included)."""
    return html.escape(str(value), quote=True)


def _fmt(value: Any, spec: str, *, scale: float = 1.0, suffix: str = "") -> str:
    if not _is_number(value) or not math.isfinite(value):
        return "—"
    return format(scale * value, spec) + suffix


def _fmt_latency(ms: Any) -> str:
    if not _is_number(ms) or not math.isfinite(ms):
        return "—"
    if ms < 1.0:
        return f"{1000 * ms:.3g} µs"
    return f"{ms:.3g} ms"


def _fmt_seconds(s: Any) -> str:
    if not _is_number(s) or not math.isfinite(s):
        return "—"
    return f"{s:.2f} s" if s < 60 else f"{int(s // 60)} min {s % 60:04.1f} s"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _img(fig, alt: str, cls: str = "") -> str:
    """A figure as an ``<img>`` with a data: URI, at its CSS size (inches × 96 px)."""
    width_px = int(round(fig.get_size_inches()[0] * 96))
    uri = plots.figure_to_data_uri(fig)
    klass = f' class="{cls}"' if cls else ""
    return (
        f'<figure{klass}><img src="{uri}" alt="{_e(alt)}" width="{width_px}" '
        f'style="max-width:100%;height:auto"></figure>'
    )


def _section(title: str, body: str, *, lead: str = "", anchor: str = "") -> str:
    ident = f' id="{_e(anchor)}"' if anchor else ""
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f"<section{ident}><h2>{_e(title)}</h2>{lead_html}{body}</section>"


def _guarded(draw, what: str) -> str:
    """Run a section builder; a malformed optional part becomes a visible note, not a crash."""
    try:
        return draw()
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        return _note(f"The {what} could not be drawn from results.json "
                     f"({type(exc).__name__}: {exc}).")


# --------------------------------------------------------------------------- sections
def _kpis(models: Sequence[Mapping[str, Any]]) -> str:
    teacher = _first(models, "teacher")
    alone = _first(models, "student-alone")
    distilled = _first(models, "student-distilled")
    if teacher is None or distilled is None:
        return ""
    cards = []
    size = _size_ratio(teacher, distilled)
    if size:
        value, _, word = size.partition(" ")
        cards.append((value, f"{word} than the teacher"))
    if teacher["accuracy"] > 0:
        cards.append((f"{100 * distilled['accuracy'] / teacher['accuracy']:.1f} %",
                      "of the teacher's accuracy kept"))
    if alone is not None:
        closed = _gap_closed(teacher, alone, distilled)
        if closed is not None:
            cards.append((f"{100 * closed:.0f} %", "of the gap closed by distillation"))
    lat_t, lat_d = teacher.get("latency_ms_per_sample"), distilled.get("latency_ms_per_sample")
    if _is_number(lat_t) and _is_number(lat_d) and lat_t > 0 and lat_d > 0:
        ratio = lat_t / lat_d
        text = f"{ratio:.1f}x" if ratio < 9.95 else f"{ratio:.0f}x"
        cards.append((text, "faster inference per sample"))
    if not cards:
        return ""
    items = "".join(
        f'<div class="kpi"><div class="kpi-value">{_e(v)}</div>'
        f'<div class="kpi-label">{_e(label)}</div></div>'
        for v, label in cards
    )
    return f'<div class="kpis">{items}</div>'


def _results_table(models: Sequence[Mapping[str, Any]]) -> str:
    head = (
        "<thead><tr><th>model</th><th class=num>params</th><th class=num>test errors</th>"
        "<th class=num>accuracy</th><th class=num>NLL (nats)</th><th class=num>ECE</th>"
        "<th class=num>agreement with teacher</th><th class=num>KL to teacher (nats)</th>"
        "<th class=num>latency / sample</th></tr></thead>"
    )
    rows = []
    for m in models:
        role = m["role"]
        acc = _fmt(m["accuracy"], ".2f", scale=100, suffix=" %")
        std = m.get("accuracy_std")
        if _is_number(std) and math.isfinite(std):
            acc += f' <span class="pm">± {100 * std:.2f}</span>'
        seeds = m.get("seeds")
        seeds_note = ""
        if isinstance(seeds, Sequence) and not isinstance(seeds, str) and len(seeds) > 1:
            seeds_note = f" · mean of {len(seeds)} seeds"
        name = (
            f'<span class="dot" style="background:{plots.ROLE_COLORS[role]}"></span>'
            f'<span class="model-name">{_e(m["name"])}</span> '
            f'<span class="role">{_e(_ROLE_LABELS[role] + seeds_note)}</span>'
        )
        cells = [
            f"<td class=model>{name}</td>",
            f"<td class=num>{m['params']:,}</td>",
            f"<td class=num>{_count(m['test_errors'])}{_pm(m.get('test_errors_std'))}</td>",
            f"<td class=num>{acc}</td>",
            f"<td class=num>{_fmt(m.get('nll'), '.4f')}</td>",
            f"<td class=num>{_fmt(m.get('ece'), '.2f', scale=100, suffix=' %')}</td>",
            f"<td class=num>{_fmt(m.get('agreement'), '.2f', scale=100, suffix=' %')}</td>",
            f"<td class=num>{_fmt(m.get('kl_to_teacher'), '.4f')}</td>",
            f"<td class=num>{_fmt_latency(m.get('latency_ms_per_sample'))}</td>",
        ]
        rows.append(f'<tr class="{_e(role)}">{"".join(cells)}</tr>')
    n_test = models[0]["n_test"]
    caption = (
        f"<caption>Test set of {n_test:,} samples. NLL and KL in nats; ECE with 15 "
        "confidence bins; agreement = share of test samples whose predicted class equals "
        "the teacher's; KL(teacher ‖ model) at T = 1.</caption>"
    )
    return (f'<div class="table-wrap"><table class="results">{caption}{head}'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _class_names(results: Mapping[str, Any]) -> list[str]:
    dataset = results.get("dataset")
    names = dataset.get("class_names") if isinstance(dataset, Mapping) else None
    if isinstance(names, Sequence) and not isinstance(names, str) and names:
        return [str(n) for n in names]
    for m in results["models"]:
        conf = m.get("confusion")
        if conf:
            return [str(i) for i in range(len(conf))]
    return []


def _learning_section(models) -> str:
    with_history = [m for m in models if m.get("history")]
    if not with_history:
        return _note("No training histories in results.json; learning curves omitted.")
    return _img(plots.plot_learning_curves(with_history), "Learning curves")


def _sweep_section(results) -> str:
    sweep = results.get("sweep") or []
    if not sweep:
        return _note("No temperature/α sweep was run; the configured values were used as given.")
    best = results.get("sweep_best")
    text = ""
    if isinstance(best, Mapping) and _is_number(best.get("temperature")):
        chosen = f"<b>T = {best['temperature']:g}</b>"
        if _is_number(best.get("alpha")):
            chosen += f", <b>α = {best['alpha']:g}</b>"
        text = f"<p>Chosen on validation: {chosen} (marked).</p>"
    return text + _img(plots.plot_sweep(sweep, best if isinstance(best, Mapping) else None),
                       "Temperature and alpha sweep")


def _soft_targets_section(results, class_names) -> str:
    soft = results.get("soft_targets")
    if not isinstance(soft, Mapping) or not soft:
        return _note("No soft targets in results.json; this section is omitted.")
    parts = []
    examples = soft.get("examples") or []
    if examples:
        parts.append(
            "<p>The teacher's output for a few test samples at several temperatures. At "
            "T = 1 nearly all mass sits on one class; raising T reveals how the teacher "
            "ranks the wrong classes, which is what the student learns from.</p>"
        )
        parts.append(_guarded(lambda: _img(plots.plot_soft_targets(examples, class_names),
                                           "Soft targets at several temperatures"),
                              "soft-target examples"))
    else:
        parts.append(_note("No soft-target examples in results.json."))
    fig = _guarded(lambda: plots.plot_dark_mass(soft, class_names), "dark-mass figure")
    if isinstance(fig, str):
        parts.append(fig)
    elif fig is not None:
        parts.append("<h3>Per true class</h3>")
        parts.append(_img(fig, "Dark mass and entropy per class"))
    similar = soft.get("similar_classes") or []
    if similar:
        parts.append(_guarded(lambda: _similar_table(similar, class_names), "similar classes"))
    return "".join(parts)


def _similar_table(similar, class_names) -> str:
    def name(i: Any) -> str:
        return class_names[i] if isinstance(i, int) and 0 <= i < len(class_names) else str(i)

    items = "".join(
        f'<div class="sim"><span class="cls">{_e(name(cid))}</span><span class="arrow">→</span>'
        + "".join(f"<span class=chip>{_e(name(o))}</span>" for o in others)
        + "</div>"
        for cid, others in similar
    )
    return (
        "<h3>Which classes does the teacher find alike?</h3>"
        "<p>For each true class, the wrong classes on which the teacher puts the most mass "
        "(best first).</p>"
        f'<div class="similar">{items}</div>'
    )


def _calibration_section(models) -> str:
    with_rel = [m for m in models if m.get("reliability")]
    if not with_rel:
        return _note("No reliability data in results.json; calibration plots omitted.")
    return _img(plots.plot_reliability(with_rel), "Reliability diagrams")


def _confusion_section(models, class_names) -> str:
    picks = [(_first(models, "student-distilled"), "distilled student"),
             (_first(models, "teacher"), "teacher")]
    mats = [(f"{label}: {m['name']}", m["confusion"]) for m, label in picks
            if m is not None and m.get("confusion")]
    if not mats:
        mats = [(m["name"], m["confusion"]) for m in models if m.get("confusion")][:2]
    if not mats:
        return _note("No confusion matrices in results.json; this section is omitted.")
    c = len(mats[0][1])
    names = class_names if len(class_names) == c else [str(i) for i in range(c)]
    return _img(plots.plot_confusion(mats, names), "Confusion matrices")


def _timing_section(results) -> str:
    timing = results.get("timing")
    if not isinstance(timing, Mapping) or not timing:
        return _note("No timing in results.json.")
    rows = "".join(
        f"<tr><td>{_e(str(k).replace('_seconds', '').replace('_', ' '))}</td>"
        f"<td class=num>{_fmt_seconds(v)}</td></tr>"
        for k, v in timing.items()
    )
    return f'<table class="timing"><tbody>{rows}</tbody></table>'


def _subtitle(results) -> str:
    bits = []
    ds = results.get("dataset") or {}
    if isinstance(ds, Mapping) and ds:
        split = [f"{ds[k]:,} {label}" for k, label in
                 (("num_train", "train"), ("num_val", "validation"), ("num_test", "test"))
                 if _is_number(ds.get(k))]
        if split:
            bits.append(" / ".join(split) + " samples")
        if _is_number(ds.get("num_classes")):
            bits.append(f"{ds['num_classes']} classes")
        shape = ds.get("input_shape")
        if isinstance(shape, Sequence) and not isinstance(shape, str) and shape:
            bits.append("input " + "×".join(str(d) for d in shape))
    dist = results.get("distillation") or {}
    if isinstance(dist, Mapping) and dist:
        settings = []
        if _is_number(dist.get("temperature")):
            settings.append(f"T = {dist['temperature']:g}")
        if _is_number(dist.get("alpha")):
            settings.append(f"α = {dist['alpha']:g}")
        if dist.get("divergence"):
            settings.append(f"{dist['divergence']} divergence")
        if settings:
            bits.append("distilled at " + ", ".join(settings))
    return " · ".join(_e(b) for b in bits)


_CSS = """
:root{--ink:#1f2933;--muted:#6b7280;--line:#e5e7eb;--bg:#f7f8fa;--accent:#1a9c8c}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
 font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1020px;margin:0 auto;padding:32px 28px 56px;background:#fff;
 box-shadow:0 0 0 1px var(--line)}
header .eyebrow{text-transform:uppercase;letter-spacing:.08em;font-size:12px;color:var(--muted)}
h1{font-size:28px;margin:4px 0 2px;font-weight:650}
.subtitle{color:var(--muted);font-size:13.5px;margin:0 0 22px}
.headline{font-size:21px;line-height:1.45;font-weight:500;margin:10px 0 20px;
 border-left:4px solid var(--accent);padding:4px 0 4px 16px}
.kpis{display:flex;gap:14px;flex-wrap:wrap;margin:0 0 26px}
.kpi{flex:1 1 170px;border:1px solid var(--line);border-radius:10px;padding:12px 16px;
 background:#fbfcfd}
.kpi-value{font-size:26px;font-weight:650;color:var(--accent);font-variant-numeric:tabular-nums}
.kpi-label{font-size:12.5px;color:var(--muted)}
section{margin-top:38px}
h2{font-size:19px;margin:0 0 8px;padding-bottom:6px;border-bottom:1px solid var(--line);
 font-weight:620}
h3{font-size:15px;margin:22px 0 6px;font-weight:600}
p{margin:6px 0 10px}
.lead{color:#374151}
.note{color:var(--muted);font-style:italic;background:var(--bg);border-radius:6px;
 padding:8px 12px}
figure{margin:10px 0 4px}
figure img{display:block}
table{border-collapse:collapse;font-size:13.5px}
table.results{width:100%}
caption{caption-side:bottom;text-align:left;color:var(--muted);font-size:12px;padding-top:8px}
th,td{padding:7px 10px;border-bottom:1px solid var(--line);vertical-align:middle}
th{font-weight:600;font-size:12px;color:var(--muted);text-align:left;
 border-bottom:2px solid #d1d5db}
.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap}
.table-wrap{overflow-x:auto}
th{line-height:1.3}
tr.student-distilled td{background:#effaf8}
td.model{min-width:200px}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:8px;
 vertical-align:1px}
.model-name{font-weight:600}
.role{display:block;font-size:11.5px;color:var(--muted);margin-left:17px}
.pm{color:var(--muted);font-size:12px}
.similar{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:8px 14px;
 margin:8px 0}
.sim{border:1px solid var(--line);border-radius:8px;padding:6px 10px;font-size:13px}
.sim .cls{font-weight:650;display:inline-block;min-width:1.6em}
.sim .arrow{color:var(--muted);margin:0 6px}
.chip{display:inline-block;padding:0 8px;margin:1px 2px;border-radius:10px;background:#eef2f7;
 font-size:12.5px}
table.timing td:first-child{padding-right:32px}
details{margin-top:10px}
summary{cursor:pointer;color:var(--muted)}
pre{background:var(--bg);padding:12px;border-radius:6px;overflow:auto;font-size:12px}
footer{margin-top:44px;color:var(--muted);font-size:12px;border-top:1px solid var(--line);
 padding-top:10px}
"""

# After load, record how many images decoded, so a headless browser's DOM dump shows it.
_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; });
  document.body.dataset.imagesTotal = String(imgs.length);
  document.body.dataset.imagesLoaded = String(ok.length);
});
"""

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'")


def _page(results: Mapping[str, Any]) -> str:
    models = results["models"]
    class_names = _class_names(results)
    ds = results.get("dataset") or {}
    ds_name = ds.get("name") if isinstance(ds, Mapping) else None
    title = "Distillation report" + (f" — {ds_name}" if ds_name else "")
    meta = []
    if results.get("created"):
        meta.append(f"created {results['created']}")
    if results.get("darkknowledge_version"):
        meta.append(f"darkknowledge {results['darkknowledge_version']}")

    body = [
        '<header><div class="eyebrow">darkknowledge · knowledge distillation</div>',
        f"<h1>{_e(title)}</h1>",
        f'<p class="subtitle">{_subtitle(results)}</p></header>',
        f'<p class="headline">{_e(headline(results))}</p>',
        _kpis(models),
        _section("Results", _results_table(models), anchor="results"),
        _section("Size, speed and accuracy",
                 _guarded(lambda: _img(plots.plot_size_accuracy(models), "Size and latency"),
                          "size/latency figure"),
                 anchor="size"),
        _section("Learning curves", _guarded(lambda: _learning_section(models), "learning curves"),
                 lead="Training loss and validation accuracy per epoch. The distilled "
                      "student's loss is the distillation objective (hard-label CE + T²·KL), "
                      "so its level is not comparable with plain cross-entropy.",
                 anchor="learning"),
        _section("What the teacher knows: soft targets",
                 _soft_targets_section(results, class_names), anchor="soft-targets"),
        _section("Temperature and α", _guarded(lambda: _sweep_section(results), "sweep"),
                 anchor="sweep"),
        _section("Calibration", _guarded(lambda: _calibration_section(models), "reliability"),
                 lead="Reliability diagrams: accuracy per confidence bin against the diagonal "
                      "of perfect calibration; shaded red is the gap whose weighted mean is "
                      "the ECE.",
                 anchor="calibration"),
        _section("Where the errors are",
                 _guarded(lambda: _confusion_section(models, class_names), "confusion matrix"),
                 lead="Confusion matrices (rows: true class, columns: predicted). Only the "
                      "errors are coloured; the diagonal is grey.",
                 anchor="confusion"),
        _section("Timing", _timing_section(results), anchor="timing"),
    ]
    config = results.get("config")
    if config:
        dumped = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        body.append(
            _section("Configuration",
                     f"<details><summary>Resolved experiment configuration</summary>"
                     f"<pre>{_e(dumped)}</pre></details>", anchor="config")
        )
    body.append(
        f"<footer>{_e(' · '.join(meta))}{' · ' if meta else ''}Hinton, Vinyals &amp; Dean "
        "(2015), <i>Distilling the Knowledge in a Neural Network</i>.</footer>"
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(body)}</main><script>{_SCRIPT}</script></body></html>\n"
    )


# --------------------------------------------------------------------------- writing
def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same folder and a rename.

    The temporary file is opened with mode ``"x"`` (so it honours the umask, unlike
    ``mkstemp``'s 0600) under a name no other writer uses.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _as_path(name: str, value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise InputTypeError(f"{name} must be a str or path, got {type(value).__name__} instead.")
    return Path(value)


def render_report(results: Mapping[str, Any], out_path: str | os.PathLike) -> Path:
    """Render ``results`` (the dict of results.json) to a self-contained HTML file.

    Validates ``results`` first (:func:`validate_results`), draws every figure whose data
    is present, and writes ``out_path`` atomically (parent folders are created).
    Returns the path written.
    """
    out = _as_path("out_path", out_path)
    validate_results(results)
    page = _page(results)
    _write_atomic(out, page)
    return out


def render_report_from_file(
    results_json_path: str | os.PathLike, out_path: str | os.PathLike | None = None
) -> Path:
    """Read ``results.json`` and render it; by default to ``report.html`` beside it.

    Raises ``ValueError`` if the file is not valid JSON, plus whatever
    :func:`render_report` raises for its content.
    """
    src = _as_path("results_json_path", results_json_path)
    out = src.with_name("report.html") if out_path is None else _as_path("out_path", out_path)
    text = src.read_text(encoding="utf-8")
    try:
        results = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"results_json_path must point to a valid JSON file, got {str(src)!r} "
            f"({exc}) instead."
        ) from None
    return render_report(results, out)
