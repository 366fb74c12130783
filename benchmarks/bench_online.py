"""What an online teacher costs: an epoch of ``distill(..., teacher_mode="online")`` against its parts.

The claim (issue "Bring your own teacher, student and data"): running the teacher on every student batch
costs the teacher's forward pass and nothing more. Measured side by side in one run, interleaved, on
Fashion-MNIST (2x1200 dropout MLP teacher -> 2x64 MLP student, batch 128, SGD, float32, CPU):

* ``cached``: an epoch of ``distill`` from cached teacher logits (the student's step alone);
* ``teacher forward``: the teacher's forward pass over the same batches, in ``eval()`` under ``no_grad``;
* ``online``: an epoch of ``distill(..., teacher_mode="online")``.

The ratio ``online / (cached + teacher forward)`` is 1.00 when the online path adds nothing of its own.

    python benchmarks/bench_online.py --threads 1 --repeats 7
    python benchmarks/bench_online.py --threads 1 --repeats 7 --write docs/performance-online.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine_load import LoadMonitor, check_write  # noqa: E402
from bench_distill import ALPHA, BATCH, LR, MOMENTUM, ROOT, T, get_data, get_teacher, machine, student  # noqa: E402

from darkknowledge.checkpoint import atomic_write_text  # noqa: E402
from darkknowledge.distill import distill  # noqa: E402
from darkknowledge.teachers import teacher_logits  # noqa: E402


def teacher_forward_seconds(teacher, X: torch.Tensor, *, batch: int, seed: int) -> float:
    """Seconds for the teacher's forward pass over one epoch of shuffled batches of ``X``."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(X), generator=g)
    teacher.eval()
    t0 = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, len(X), batch):
            teacher(X.index_select(0, order[lo:lo + batch]))
    return time.perf_counter() - t0


def run(data, teacher, logits, *, repeats: int) -> dict:
    common = dict(epochs=1, batch_size=BATCH, lr=LR, momentum=MOMENTUM, lr_schedule="constant", temperature=T,
                  alpha=ALPHA, max_grad_norm=None, progress=False)
    samples: dict[str, list[float]] = {"cached": [], "teacher forward": [], "online": []}
    distill(student(data), teacher, data, teacher_mode="online", **dict(common, epochs=1))  # warm-up
    for r in range(repeats):
        samples["cached"].append(distill(student(data), logits, data, seed=r, **common).fit.history[0]["seconds"])
        samples["teacher forward"].append(teacher_forward_seconds(teacher, data.X_train, batch=BATCH, seed=r))
        samples["online"].append(distill(student(data), teacher, data, seed=r, teacher_mode="online",
                                         **common).fit.history[0]["seconds"])
    med = {k: statistics.median(v) for k, v in samples.items()}
    paired = statistics.median(o / (c + t) for o, c, t in zip(samples["online"], samples["cached"],
                                                             samples["teacher forward"]))
    return {"median_seconds": med, "paired_ratio": paired, "repeats": repeats}


def markdown(res: dict, load: LoadMonitor, args) -> str:
    med = res["median_seconds"]
    return "\n".join([
        "# Performance: the online teacher (benchmarks/bench_online.py)",
        "",
        f"Written by `benchmarks/bench_online.py --threads {args.threads} --repeats {args.repeats} --write "
        f"docs/performance-online.md` on {datetime.date.today().isoformat()}, {machine()} ({os.cpu_count()} cores), "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); do not edit by hand.",
        "",
        load.page_header().rstrip("\n"),
        "",
        "Fashion-MNIST (54,000 training rows), 2x1200 dropout MLP teacher -> 2x64 MLP student, batch 128, "
        f"SGD lr {LR:g} / momentum {MOMENTUM:g}, T = {T:g}, alpha = {ALPHA:g}, no clipping; one epoch per sample, "
        f"{res['repeats']} interleaved repeats (each epoch includes the validation pass).",
        "",
        "| variant | s / epoch (median) |",
        "|---|---:|",
        *[f"| {k} | {v:.2f} |" for k, v in med.items()],
        "",
        f"Online epoch / (cached epoch + teacher forward), median of paired repeats: **{res['paired_ratio']:.3f}x** "
        "(1.00 = the online path costs the teacher's forward pass and nothing more).",
        "",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats of each variant")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--teacher-epochs", type=int, default=3, help="epochs of the 2x1200 teacher if it must be trained")
    ap.add_argument("--write", type=Path, help="also write the Markdown to this file (refused on a loaded machine)")
    ap.add_argument("--allow-loaded", action="store_true", help="write --write even on a loaded machine, with a warning")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    torch.set_num_threads(args.threads)
    data = get_data()
    teacher, _ = get_teacher(data, args.teacher_epochs)
    logits = teacher_logits(teacher, data.X_train)  # (N, C)
    with LoadMonitor() as load:
        res = run(data, teacher, logits, repeats=args.repeats)
    for k, v in res["median_seconds"].items():
        print(f"    {k:<16s} {v:7.2f} s / epoch")
    print(f"    online / (cached + teacher forward): {res['paired_ratio']:.3f}x")
    print(load.summary())
    if args.write:
        check_write(load, args.allow_loaded)
        atomic_write_text(args.write, markdown(res, load, args))
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
