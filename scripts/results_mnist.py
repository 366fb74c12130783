"""The MNIST-dev section of docs/results.md: Hinton et al. (2015) section 3, reproduced on MNIST-dev (issue 11).

Reads the run folders the shipped configs write (``darkknowledge train`` / ``darkknowledge run``), never runs
anything itself: the runs take hours on 2 CPU cores and are started by hand, in the background, with ``--resume``
for the teacher. ``scripts/make_results.py --stages mnist-dev`` calls :func:`render_mnist_section` and puts the
result between its markers in docs/results.md. A run that is missing or unfinished is reported as such.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

#: run folder (under the root) -> the config that writes it
RUNS = {
    "hinton": "configs/mnist-hinton.yaml",
    "consistent": "configs/mnist-consistent.yaml",
    "missing-3": "configs/mnist-missing-3.yaml",
    "7s-8s": "configs/mnist-7s-8s.yaml",
    "3-percent": "configs/mnist-3-percent.yaml",
    "3-percent-hard": "configs/mnist-3-percent-hard.yaml",
}
DATA = "../shared/data/mnist-dev.npz"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _role(results: dict[str, Any] | None, role: str) -> dict[str, Any] | None:
    if results is None:
        return None
    return next((m for m in results["models"] if m["role"] == role), None)


def _per_seed(row: dict[str, Any], key: str = "test_errors") -> list[Any]:
    if row.get("per_seed"):
        return [s.get(key) for s in row["per_seed"]]
    return [row.get(key)]


def _errors(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not run"
    seeds = _per_seed(row)
    mean = statistics.fmean(seeds)
    spread = f" ± {statistics.stdev(seeds):.1f}" if len(seeds) > 1 else ""
    return f"**{mean:.1f}**{spread} (seeds: {', '.join(str(s) for s in seeds)})"


def _minutes(results: dict[str, Any] | None, key: str) -> str:
    if results is None:
        return "—"
    return f"{results['timing'].get(key, 0.0) / 60:.1f} min"


def _recipe(results: dict[str, Any]) -> str:
    c = results["config"]
    st, d = c["student"]["train"], c["distill"]
    parts = [f"{st['epochs']} epochs", f"batch {st['batch_size']}", f"SGD momentum {st['momentum']}",
             f"{st['lr_schedule']} schedule"]
    if st.get("augment"):
        parts.append(f"shift ±{st['augment']['shift']} px")
    parts.append(f"T = {results['distillation']['temperature']:g}, α = {results['distillation']['alpha']:g}, "
                 f"lr {results['distillation']['lr']:g}, clip {d['max_grad_norm']}, teacher {d['teacher_mode']}")
    if d.get("transfer_fraction", 1.0) < 1.0:
        parts.append(f"transfer set {100 * d['transfer_fraction']:g} %")
    return ", ".join(parts)


def render_mnist_section(root: Path) -> str:
    """Markdown for the MNIST-dev section from the run folders under ``root`` (e.g. ``runs/mnist-dev``)."""
    runs = {name: _read(root / name / "results.json") for name in RUNS}
    teacher_summary = _read(root / "teacher" / "summary.json")
    teacher_config = _read(root / "teacher" / "config.json")
    teacher_log = []
    log_path = root / "teacher" / "log.jsonl"
    if log_path.exists():
        teacher_log = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]

    lines: list[str] = []
    w = lines.append
    w("## Hinton et al.'s MNIST table on MNIST-dev (issue 11)")
    w("")
    w("MNIST-dev (`../shared/data/mnist-dev.npz`): the first 50,000 official MNIST *training* images (45,000 train / "
      "5,000 validation, seeded split) and the last 10,000 training images standing in for the test set. Every "
      "choice (epochs, learning rates, T, α) was made on the validation split; the official MNIST test set was "
      "never used, so these are MNIST-dev figures, not MNIST test results. Hinton et al.'s column is their "
      "official-test figure, for orientation. Errors are out of 10,000.")
    w("")

    hinton = runs["hinton"]
    t_row = _role(hinton, "teacher")
    alone = _role(hinton, "student-alone")
    dist = _role(hinton, "student-distilled")
    cons = _role(runs["consistent"], "student-distilled")
    t_err = t_row["test_errors"] if t_row else (teacher_summary or {}).get("test", {}).get("test_errors")
    w("| model | Hinton et al. (MNIST test) | here (MNIST-dev test, mean of seeds) | target |")
    w("|---|---|---|---|")
    w(f"| teacher, 2x1200 ReLU, dropout, max-norm, ±2 px jitter | 67 | "
      f"{'not run' if t_err is None else f'**{t_err}**'} | ≤ 70 |")
    w(f"| student 2x800 alone, unregularised | 146 | {_errors(alone)} | — |")
    gap = None
    if t_err is not None and alone and dist:
        a, d = statistics.fmean(_per_seed(alone)), statistics.fmean(_per_seed(dist))
        gap = (a - d) / (a - t_err) if a > t_err else None
    gap_text = "" if gap is None else f"; {100 * gap:.0f} % of the gap closed"
    w(f"| student 2x800 distilled (T = 20, cached, un-jittered inputs) | 74 (91 % of the gap) | {_errors(dist)}{gap_text} "
      "| ≤ 80, ≥ 85 % |")
    w(f"| student 2x800, consistent teaching (jittered views, teacher online) | — | {_errors(cons)} | ≤ 70 |")
    w("")

    m3 = _role(runs["missing-3"], "student-distilled")
    s78 = _role(runs["7s-8s"], "student-distilled")
    w("| transfer set | Hinton et al. | here, before the bias shift | here, after | shift |")
    w("|---|---|---|---|---|")
    if m3:
        w(f"| no 3s | 206 errors → 109 after +3.5 (98.6 % of 3s recognised) | {m3['test_errors_before_bias_shift']} errors, "
          f"{100 * m3['missing_class_recall_before_bias_shift']:.1f} % of 3s | **{m3['test_errors']}** errors, "
          f"**{100 * m3['missing_class_recall']:.1f} %** of 3s | {m3['bias_shift']:g} |")
    else:
        w("| no 3s | 206 → 109 (98.6 % of 3s) | not run | not run | — |")
    if s78:
        n = s78["n_test"]
        w(f"| only 7s and 8s | 47.3 % errors → 13.2 % after +7.6 | {100 * s78['test_errors_before_bias_shift'] / n:.1f} % "
          f"errors | **{100 * s78['test_errors'] / n:.1f} %** errors | {s78['bias_shift']:g} |")
    else:
        w("| only 7s and 8s | 47.3 % → 13.2 % | not run | not run | — |")
    w("")

    soft = _role(runs["3-percent"], "student-distilled")
    hard = _role(runs["3-percent-hard"], "student-distilled")
    w("Soft targets as a regulariser (Hinton et al. section 5's point, here on images): the 2x800 student on a seeded "
      "3 % of the transfer set (1,350 images).")
    w("")
    w("| 3 % of the transfer set | test errors (MNIST-dev) |")
    w("|---|---|")
    w(f"| hard labels only | {_errors(hard)} |")
    w(f"| the teacher's soft targets (T = 20, α = 0.1) | {_errors(soft)} |")
    w("")

    w("Recipes and wall times (this shared 2-core machine, one core per job):")
    w("")
    if teacher_config:
        aug = teacher_config.get("augment") or {}
        spent = sum(h.get("seconds", 0.0) for h in teacher_log)
        w(f"- teacher: {teacher_config['num_parameters']:,} parameters, {len(teacher_log)} of {teacher_config['epochs']} "
          f"epochs, batch {teacher_config['batch_size']}, SGD lr {teacher_config['lr']} momentum "
          f"{teacher_config['momentum']}, {teacher_config['lr_schedule']}, max-norm {teacher_config['max_norm']}, "
          f"dropout {teacher_config['model_spec']['options'].get('dropout')} / input "
          f"{teacher_config['model_spec']['options'].get('input_dropout')}, shift ±{aug.get('shift', 0)} px; "
          f"{spent / 60:.0f} min of training; best validation epoch "
          f"{(teacher_summary or {}).get('best_epoch', '—')}.")
    for name, results in runs.items():
        if results is not None:
            w(f"- `{RUNS[name]}`: {_recipe(results)}; {_minutes(results, 'total_seconds')} in all.")
    missing = [RUNS[n] for n, r in runs.items() if r is None]
    if missing:
        w(f"- not run yet: {', '.join(f'`{m}`' for m in missing)}.")
    w("")
    w("Commands (MNIST-dev; the teacher is trained once and reused; `--resume` continues it):")
    w("")
    w("```")
    w(f"darkknowledge train configs/mnist-teacher.yaml --dataset {DATA} --out {root}/teacher --resume")
    for name, cfg in RUNS.items():
        w(f"darkknowledge run {cfg} --dataset {DATA} --teacher {root}/teacher --out {root}/{name}")
    w("python scripts/make_results.py --stages mnist-dev   # this section")
    w("```")
    return "\n".join(lines)
