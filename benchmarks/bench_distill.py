"""What distillation costs: cached soft targets against plain training and against the tutorial loop.

Three measurements, printed side by side in one run (Fashion-MNIST, float32 on the CPU):

(a) An epoch of distillation from cached teacher logits (``darkknowledge.distill.distill`` with a
    precomputed ``(N, C)`` tensor) against an epoch of plain training of the same student on the
    same data (``darkknowledge.train.fit``), same epochs, interleaved, median of repeats.
(b) The whole pipeline -- the teacher's logits computed once, then the student trained from them --
    against the loop people copy from tutorials: a ``DataLoader`` over a ``TensorDataset``, the
    teacher's forward pass at every step, and the loss composed from ``F.kl_div``. Same student
    (same initial weights), epochs, batch size, optimizer (SGD lr 0.05, momentum 0.9, constant lr,
    no clipping); test accuracy of both students is printed beside the times.
(c) The job torchdistill's users run: a 2x1200 dropout MLP teacher -> a 2x64 MLP student,
    T = 4, alpha = 0.1, batch 128, SGD 0.05 / 0.9: our seconds per distillation epoch, to set beside
    torchdistill 1.1.5's ~13 s per epoch measured on these machines (not re-measured here: torchdistill
    is not a dependency).

The teacher is a 2x1200 MLP with dropout, trained here for ``--teacher-epochs`` epochs (cached under
``runs/bench/``; git-ignored), or taken from ``runs/results/fmnist-mlp1200-run`` when
``scripts/make_results.py`` has trained one.

    python benchmarks/bench_distill.py                                   # print the tables
    python benchmarks/bench_distill.py --write docs/performance-distill.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from darkknowledge.checkpoint import atomic_write_text, load_model, save_model
from darkknowledge.data import load_dataset, prepare_splits
from darkknowledge.distill import distill
from darkknowledge.models import build_model
from darkknowledge.teachers import teacher_logits
from darkknowledge.train import fit, predict_logits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine_load import LoadMonitor, check_write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
T, ALPHA, BATCH, LR, MOMENTUM = 4.0, 0.1, 128, 0.05, 0.9
TEACHER = {"hidden": [1200, 1200], "dropout": 0.5, "input_dropout": 0.2}
STUDENT = {"hidden": [64, 64]}
TORCHDISTILL_SECONDS_PER_EPOCH = 13.0  # torchdistill 1.1.5, same job, measured on these machines (issue 4)


def get_data():
    ds = load_dataset("fashion-mnist")
    return prepare_splits(ds, val_fraction=0.1, seed=0)


def get_teacher(data, epochs: int):
    """A trained 2x1200 dropout MLP: make_results.py's if present, else trained here once and cached."""
    for folder in (Path("runs/results/fmnist-mlp1200-run"), Path(f"runs/bench/teacher-mlp1200-e{epochs}")):
        if (folder / "model.safetensors").is_file() and (folder / "model.json").is_file():
            try:
                return load_model(folder), str(folder)
            except (ValueError, OSError):
                pass
    folder = Path(f"runs/bench/teacher-mlp1200-e{epochs}")
    print(f"training the 2x1200 teacher for {epochs} epoch(s) into {folder} (once) ...", flush=True)
    model = build_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes, seed=0, **TEACHER)
    fit(model, data, epochs=epochs, batch_size=BATCH, lr=LR, momentum=MOMENTUM, lr_schedule="cosine", progress=False)
    save_model(folder, model, spec=model.spec)
    return model.eval(), str(folder)


def student(data, seed: int = 0):
    return build_model("mlp", input_shape=data.input_shape, num_classes=data.num_classes, seed=seed, **STUDENT)


def accuracy(model, data) -> float:
    return float((predict_logits(model, data.X_test).argmax(-1) == data.y_test).float().mean())


# ---------------------------------------------------------------------------------------------
# (a) distill with cached logits vs plain fit
# ---------------------------------------------------------------------------------------------
def bench_epoch_cost(data, logits, *, epochs: int, repeats: int) -> dict:
    common = dict(epochs=epochs, batch_size=BATCH, lr=LR, momentum=MOMENTUM, lr_schedule="cosine", progress=False)
    variants = {
        "fit (plain cross-entropy)": lambda: fit(student(data), data, **common),
        "fit (plain cross-entropy), clipping 5.0": lambda: fit(student(data), data, max_grad_norm=5.0, **common),
        "distill, cached logits, no clipping": lambda: distill(
            student(data), logits, data, temperature=T, alpha=ALPHA, max_grad_norm=None, **common).fit,
        "distill, cached logits, default clipping (5.0)": lambda: distill(
            student(data), logits, data, temperature=T, alpha=ALPHA, **common).fit,
    }
    small = replace(data, X_train=data.X_train[:512], y_train=data.y_train[:512])  # warm-up: first-call imports,
    fit(student(small), small, epochs=1, progress=False)  # the compiled loss kernel
    distill(student(small), logits[:512], small, epochs=1, progress=False)
    samples: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():  # interleaved, so load changes hit every variant alike
            samples[name].extend(h["seconds"] for h in fn().history)
    base, base_clip = "fit (plain cross-entropy)", "fit (plain cross-entropy), clipping 5.0"
    med = {k: statistics.median(v) for k, v in samples.items()}
    fastest = {k: min(v) for k, v in samples.items()}
    # paired ratios: epoch i of a variant against epoch i of fit, run moments apart (cancels slow load drift)
    paired = {k: statistics.median(x / b for x, b in zip(v, samples[base])) for k, v in samples.items()}
    # the same against the fit with the same settings (clipping or not): the cost of the loss alone
    same = {k: base_clip if k.endswith(("clipping 5.0", "clipping (5.0)")) else base for k in samples}
    paired_same = {k: statistics.median(x / b for x, b in zip(v, samples[same[k]])) for k, v in samples.items()}
    return {"median_seconds": med, "min_seconds": fastest, "paired_ratio": paired,
            "min_ratio": {k: v / fastest[base] for k, v in fastest.items()},
            "paired_ratio_same": paired_same, "min_ratio_same": {k: v / fastest[same[k]] for k, v in fastest.items()},
            "n_epochs_timed": len(samples[base])}


# ---------------------------------------------------------------------------------------------
# (b) the whole pipeline vs the tutorial loop
# ---------------------------------------------------------------------------------------------
def tutorial_loop(teacher, model, data, *, epochs: int, seed: int = 0) -> float:
    """The distillation loop of the tutorials, written out faithfully; returns wall seconds."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    loader = DataLoader(TensorDataset(data.X_train, data.y_train), batch_size=BATCH, shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    teacher.eval()
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            with torch.no_grad():
                t_logits = teacher(x)  # the teacher's forward pass, every step
            s_logits = model(x)
            soft = F.kl_div(F.log_softmax(s_logits / T, dim=1), F.softmax(t_logits / T, dim=1),
                            reduction="batchmean") * (T * T)
            hard = F.cross_entropy(s_logits, y)
            loss = ALPHA * hard + (1.0 - ALPHA) * soft
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return time.perf_counter() - t0


def our_pipeline(teacher, model, data, *, epochs: int, seed: int = 0) -> tuple[float, float, list[float]]:
    """Teacher logits once, then ``distill`` from them; returns (total wall s, teacher-inference s, s per epoch)."""
    t0 = time.perf_counter()
    logits = teacher_logits(teacher, data.X_train)  # (N, C), once
    t_inf = time.perf_counter() - t0
    res = distill(model, logits, data, temperature=T, alpha=ALPHA, epochs=epochs, batch_size=BATCH, lr=LR,
                  momentum=MOMENTUM, lr_schedule="constant", max_grad_norm=None, seed=seed, progress=False)
    return time.perf_counter() - t0, t_inf, [h["seconds"] for h in res.history]


def bench_pipeline(teacher, data, *, epochs: int, seeds: list[int]) -> dict:
    """Both loops once per seed (student initialisation and shuffling), interleaved; times and accuracies per seed."""
    runs = []
    for seed in seeds:
        ours_model, tut_model = student(data, seed), student(data, seed)  # the same initial weights
        ours_s, t_inf, per_epoch = our_pipeline(teacher, ours_model, data, epochs=epochs, seed=seed)
        tut_s = tutorial_loop(teacher, tut_model, data, epochs=epochs, seed=seed)
        runs.append({"seed": seed, "ours_seconds": ours_s, "teacher_inference_seconds": t_inf,
                     "ours_seconds_per_epoch": per_epoch, "tutorial_seconds": tut_s,
                     "ours_accuracy": accuracy(ours_model, data), "tutorial_accuracy": accuracy(tut_model, data)})
        r = runs[-1]
        print(f"    seed {seed}: tutorial {tut_s:.1f} s ({100 * r['tutorial_accuracy']:.2f} %), "
              f"darkknowledge {ours_s:.1f} s ({100 * r['ours_accuracy']:.2f} %)", flush=True)
    mean = lambda key: statistics.fmean(r[key] for r in runs)  # noqa: E731
    std = lambda key: statistics.stdev(r[key] for r in runs) if len(runs) > 1 else 0.0  # noqa: E731
    return {"epochs": epochs, "seeds": seeds, "runs": runs,
            "speedup": statistics.median(r["tutorial_seconds"] / r["ours_seconds"] for r in runs),
            "ours_accuracy": mean("ours_accuracy"), "ours_accuracy_std": std("ours_accuracy"),
            "tutorial_accuracy": mean("tutorial_accuracy"), "tutorial_accuracy_std": std("tutorial_accuracy"),
            "teacher_inference_seconds": statistics.median(r["teacher_inference_seconds"] for r in runs),
            "ours_seconds_per_epoch": [x for r in runs for x in r["ours_seconds_per_epoch"]]}


# ---------------------------------------------------------------------------------------------
def machine() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(a: dict, b: dict, teacher_src: str, teacher_acc: float, args, load: LoadMonitor) -> str:
    per_epoch = statistics.median(b["ours_seconds_per_epoch"])
    lines = [
        "# Performance: distillation (benchmarks/bench_distill.py)",
        "",
        "Written by `benchmarks/bench_distill.py --write docs/performance-distill.md`; do not edit by hand. "
        f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()} "
        f"({os.cpu_count()} cores), torch {torch.__version__}, {torch.get_num_threads()} threads. "
        "Fashion-MNIST, 54,000 training rows, float32.",
        "",
        load.page_header().rstrip("\n"),
        "",
        f"    python benchmarks/bench_distill.py --threads {args.threads} --epochs {args.epochs} --repeats {args.repeats} "
        f"--pipeline-epochs {args.pipeline_epochs} --pipeline-seeds {' '.join(map(str, args.pipeline_seeds))} --teacher-epochs {args.teacher_epochs} --write docs/performance-distill.md",
        "",
        f"Teacher: {teacher_src}; test accuracy {100 * teacher_acc:.2f} %). "
        f"Student: MLP 2x64. T = {T:g}, α = {ALPHA:g}, batch {BATCH}, SGD lr {LR:g}, momentum {MOMENTUM:g}.",
        "",
        "## (a) An epoch of distillation from cached logits vs an epoch of plain training",
        "",
        f"{a['n_epochs_timed']} epochs per variant ({args.repeats} interleaved repeats of {args.epochs} epoch(s); each "
        "epoch includes the validation pass). The load of the other jobs on this machine changes from second to second, "
        "so two estimates are given: the median of the ratios of epochs run moments apart (paired), and the fastest "
        "epoch of each variant (the least disturbed). Target: ≤ 1.05x.",
        "",
        "| variant | s / epoch, median | s / epoch, fastest | ratio to plain fit, paired median | ratio to plain fit, fastest "
        "| ratio to fit with the same clipping, paired median | same, fastest |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *[f"| {k} | {v:.2f} | {a['min_seconds'][k]:.2f} | {a['paired_ratio'][k]:.3f}x | {a['min_ratio'][k]:.3f}x | "
          f"{a['paired_ratio_same'][k]:.3f}x | {a['min_ratio_same'][k]:.3f}x |"
          for k, v in a["median_seconds"].items()],
        "",
        "The last two columns compare like with like: distillation without clipping against plain training without it, "
        "and distillation with `distill`'s default clipping against plain training clipped the same way (what the "
        "loss itself costs). The first two set every variant against plain training without clipping (`fit`'s default).",
        "",
        "## (b) The whole pipeline vs the tutorial loop",
        "",
        f"{b['epochs']} epochs each, for each seed (student initialisation and minibatch order) the two loops one after "
        f"the other from the same initial weights. Ours: the teacher's logits once "
        f"({b['teacher_inference_seconds']:.2f} s), then `distill` (which also evaluates the validation split every epoch). "
        "Tutorial: `DataLoader(TensorDataset(X, y), batch_size=128, shuffle=True)`, the teacher's forward pass under "
        "`no_grad` at every step, `F.kl_div(F.log_softmax(s/T), F.softmax(t/T), reduction='batchmean') * T²` "
        "+ cross-entropy. Target: ≥ 3x faster at equal or better student accuracy.",
        "",
        "| seed | tutorial: wall s | tutorial: student test accuracy | darkknowledge: wall s | darkknowledge: student test accuracy | speed-up |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['seed']} | {r['tutorial_seconds']:.1f} | {100 * r['tutorial_accuracy']:.2f} % | {r['ours_seconds']:.1f} | "
          f"{100 * r['ours_accuracy']:.2f} % | {r['tutorial_seconds'] / r['ours_seconds']:.2f}x |" for r in b["runs"]],
        f"| mean ± sd | | {100 * b['tutorial_accuracy']:.2f} ± {100 * b['tutorial_accuracy_std']:.2f} % | | "
        f"{100 * b['ours_accuracy']:.2f} ± {100 * b['ours_accuracy_std']:.2f} % | **{b['speedup']:.2f}x** (median) |",
        "",
        "## (c) 2x1200 dropout MLP → 2x64 MLP, seconds per distillation epoch",
        "",
        f"darkknowledge: **{per_epoch:.2f} s per epoch** (median of {len(b['ours_seconds_per_epoch'])}, from (b); the "
        f"teacher's logits once: {b['teacher_inference_seconds']:.2f} s). torchdistill 1.1.5 on these machines: "
        f"~{TORCHDISTILL_SECONDS_PER_EPOCH:g} s per epoch (the issue's measurement, not re-run here). "
        f"Ratio: **{TORCHDISTILL_SECONDS_PER_EPOCH / per_epoch:.1f}x** (target ≥ 10x, i.e. ≤ 1.3 s per epoch).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1, help="epochs per repeat in (a)")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats in (a)")
    ap.add_argument("--pipeline-epochs", type=int, default=3, help="epochs of (b) and (c)")
    ap.add_argument("--pipeline-seeds", type=int, nargs="+", default=[0, 1, 2],
                    help="student seeds of (b): each runs both loops (default 0 1 2)")
    ap.add_argument("--teacher-epochs", type=int, default=3, help="epochs of the 2x1200 teacher if it must be trained")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (default 1: for these small students on a shared 2-core machine one "
                         "thread was 2-20x faster per epoch than two, which wait on each other under load)")
    ap.add_argument("--write", type=Path, help="also write the Markdown to this file (docs/performance-distill.md); "
                                               "refused on a loaded machine")
    ap.add_argument("--allow-loaded", action="store_true",
                    help="write --write even when the machine was loaded, with a warning at the top of the page")
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    torch.set_num_threads(args.threads)
    monitor = LoadMonitor().__enter__()
    data = get_data()
    teacher, teacher_src = get_teacher(data, args.teacher_epochs)
    opts = teacher.spec.options if hasattr(teacher, "spec") else {}
    teacher_src = (f"MLP 2x1200, dropout {opts.get('dropout', '?')} / input {opts.get('input_dropout', '?')} "
                   f"({teacher_src}")
    teacher_acc = accuracy(teacher, data)
    print(f"teacher {teacher_src}: test accuracy {100 * teacher_acc:.2f} %", flush=True)
    logits = teacher_logits(teacher, data.X_train)  # (N, C)
    a = bench_epoch_cost(data, logits, epochs=args.epochs, repeats=args.repeats)
    print("\n(a) seconds per epoch: median, fastest; ratio to plain fit: median of paired epochs, fastest to fastest; "
          "the same against the fit with the same clipping")
    for k, v in a["median_seconds"].items():
        print(f"    {k:<48s} {v:7.2f} s {a['min_seconds'][k]:7.2f} s   {a['paired_ratio'][k]:.3f}x {a['min_ratio'][k]:.3f}x"
              f"   {a['paired_ratio_same'][k]:.3f}x {a['min_ratio_same'][k]:.3f}x")
    print(f"\n(b) {args.pipeline_epochs} epochs, the tutorial loop vs darkknowledge, seeds {args.pipeline_seeds}")
    b = bench_pipeline(teacher, data, epochs=args.pipeline_epochs, seeds=args.pipeline_seeds)
    print(f"    median speed-up {b['speedup']:.2f}x; student test accuracy: tutorial "
          f"{100 * b['tutorial_accuracy']:.2f} ± {100 * b['tutorial_accuracy_std']:.2f} %, darkknowledge "
          f"{100 * b['ours_accuracy']:.2f} ± {100 * b['ours_accuracy_std']:.2f} %")
    per_epoch = statistics.median(b["ours_seconds_per_epoch"])
    print(f"\n(c) 2x1200 -> 2x64: {per_epoch:.2f} s per distillation epoch vs torchdistill ~{TORCHDISTILL_SECONDS_PER_EPOCH:g} s: "
          f"{TORCHDISTILL_SECONDS_PER_EPOCH / per_epoch:.1f}x")
    monitor.__exit__(None, None, None)
    print(monitor.summary())
    if args.write:
        check_write(monitor, args.allow_loaded)
        atomic_write_text(args.write, markdown(a, b, teacher_src, teacher_acc, args, monitor))
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
