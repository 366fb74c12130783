"""The ``run`` pipeline, top to bottom: data -> teacher(s) -> soft targets -> students -> evaluation -> report.

``run_experiment(config)`` is what ``darkknowledge run [config.yaml]`` calls. With the default config it
trains on scikit-learn's embedded digits in well under a minute on 2 CPU cores. It

1. loads and splits the data (standardised with training statistics only);
2. trains the teacher, or an ensemble of teachers (seeds or bootstrap bagging), or loads one from a run folder;
3. computes the teacher's logits for the transfer set once and caches them on disk (keyed by content);
4. optionally sweeps temperature / alpha / lr on the validation split and takes the best;
5. trains the same student, from the same initial weights, alone and by distillation, for every seed;
6. evaluates everything on the test split and writes ``results.json``, the weights, the logs and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

import darkknowledge
from darkknowledge.augment import resolve_augment
from darkknowledge.checkpoint import atomic_write_json, load_model, save_model
from darkknowledge.config import DatasetConfig, ExperimentConfig, check_config_against_data
from darkknowledge.data import load_dataset, prepare_splits
from darkknowledge.data._types import Splits
from darkknowledge.data.batches import take_rows
from darkknowledge.distill import distill, sweep
from darkknowledge.distributed import barrier, is_main_process
from darkknowledge.evaluate import evaluate_model
from darkknowledge.memmap import open_npy_splits
from darkknowledge.models import build_model, count_parameters
from darkknowledge.rundir import LOCK, MARKER, RunFolderError, check_path, claim_run_dir, read_marker
from darkknowledge.report.html import gap_closed
from darkknowledge.soft_targets import analyse_soft_targets, cached_teacher_logits
from darkknowledge.teachers import Ensemble, bootstrap_indices, teacher_logits
from darkknowledge.train import fit
from darkknowledge.errors import InputError, MissingFileError

__all__ = ["run_experiment", "check_output_folder", "format_table", "load_splits", "OutputExistsError"]


class OutputExistsError(RunFolderError):
    """The output folder already holds a finished (or incomplete) run; pass ``force=True`` (``--force``) to overwrite it."""


def _describe(model_cfg: Any) -> str:
    hidden = model_cfg.options.get("hidden")
    if model_cfg.name == "mlp" and hidden:
        return f"mlp {'x'.join(str(h) for h in hidden)}"
    return model_cfg.name


def _train_teacher(cfg: ExperimentConfig, data: Splits, out: Path, log: Callable[[str], None]) -> tuple[nn.Module, list[nn.Module], list[dict]]:
    t = cfg.teacher
    if t.onnx is not None or t.huggingface is not None:
        from darkknowledge.teachers import as_teacher, check_compatible

        source = t.onnx or t.huggingface
        log(f"teacher: loading {source}")
        try:
            teacher = as_teacher(source)
        except (InputError, MissingFileError) as exc:  # name the config key, not the library's argument
            raise type(exc)(f"teacher.{'onnx' if t.onnx else 'huggingface'} {source!r}: {exc}") from None
        check_compatible(teacher, num_classes=data.num_classes, sample=take_rows(data.X_train, torch.arange(2)))
        return teacher, [], []
    if t.run_dir is not None:
        log(f"teacher: loading {t.run_dir}")
        try:
            teacher = load_model(t.run_dir)
        except (InputError, MissingFileError) as exc:  # name the config key (or --teacher), not the library's argument
            raise type(exc)(f"teacher.run_dir {t.run_dir!r}: {exc}") from None
        spec = teacher.spec
        if tuple(spec.input_shape) != tuple(data.input_shape) or spec.num_classes != data.num_classes:
            raise InputError(
                f"teacher.run_dir {t.run_dir!r} must hold a teacher for the data's input shape "
                f"{tuple(data.input_shape)} and {data.num_classes} classes, got input shape "
                f"{tuple(spec.input_shape)} and {spec.num_classes} classes instead."
            )
        return teacher, [], []
    members, histories = [], []
    for m in range(t.members):
        model = build_model(t.model.name, input_shape=data.input_shape, num_classes=data.num_classes,
                            seed=1000 + m, **t.model.options)
        member_data = data
        if t.bagging:
            idx = bootstrap_indices(len(data.y_train), seed=m)
            member_data = Splits(data.X_train[idx], data.y_train[idx], data.X_val, data.y_val,
                                 data.X_test, data.y_test, data.class_names)
        log(f"teacher {m + 1}/{t.members}: {_describe(t.model)}, {count_parameters(model):,} parameters")
        # the sub-folders belong to the claimed experiment folder: a rerun (--force) starts them over
        result = fit(model, member_data, seed=m, out_dir=out / "teacher" / f"member-{m}", force=True,
                     device=cfg.device, amp=cfg.amp, **t.train.fit_kwargs())
        members.append(model.cpu())  # evaluated and cached on the CPU
        histories.append(result.history)
    teacher = members[0] if len(members) == 1 else Ensemble(members, combine=t.combine)
    return teacher, members if len(members) > 1 else [], histories


def _aggregate(rows: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """One table row from several seeds: means of the numbers, the first seed's curves and plots."""
    agg = dict(rows[0])
    if len(rows) == 1:
        agg["seeds"], agg["accuracy_std"] = seeds, None
        return agg
    for key in ("test_errors", "accuracy", "nll", "ece", "agreement", "kl_to_teacher", "latency_ms_per_sample",
                "test_errors_before_bias_shift", "missing_class_recall", "missing_class_recall_before_bias_shift",
                "bias_shift"):
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            agg[key] = statistics.fmean(values)
    agg["test_errors_std"] = statistics.stdev([r["test_errors"] for r in rows])
    agg["accuracy_std"] = statistics.stdev([r["accuracy"] for r in rows])
    agg["per_seed"] = [{"seed": s, "test_errors": r["test_errors"], "accuracy": r["accuracy"],
                        **{k: r[k] for k in ("test_errors_before_bias_shift", "missing_class_recall", "bias_shift") if k in r}}
                       for s, r in zip(seeds, rows)]
    agg["seeds"] = seeds
    return agg


def format_table(models: list[dict[str, Any]]) -> str:
    """The Hinton-style results table as aligned plain text."""
    head = ["model", "params", "test errors", "accuracy", "NLL", "ECE", "agreement", "KL to teacher", "latency/sample"]
    lines = []
    for m in models:
        errors = f"{m['test_errors']:.1f}" if isinstance(m["test_errors"], float) else str(m["test_errors"])
        if m.get("test_errors_std") is not None:
            errors += f" ± {m['test_errors_std']:.1f}"
        acc = f"{100 * m['accuracy']:.2f} %"
        if m.get("accuracy_std") is not None:
            acc += f" ± {100 * m['accuracy_std']:.2f}"
        lines.append([
            m["name"], f"{m['params']:,}", f"{errors} / {m['n_test']}", acc, f"{m['nll']:.4f}", f"{m['ece']:.4f}",
            "—" if m.get("agreement") is None else f"{100 * m['agreement']:.2f} %",
            "—" if m.get("kl_to_teacher") is None else f"{m['kl_to_teacher']:.4f}",
            f"{1000 * m['latency_ms_per_sample']:.2f} µs",
        ])
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, lines)])


@torch.no_grad()
def _missing_class_figures(student: nn.Module, dres: Any, data: Splits, row: dict[str, Any]) -> dict[str, Any]:
    """Test errors and the missing classes' recall with and without the bias shift (Hinton's missing-3 / 7s-and-8s).

    ``row`` is the evaluation with the shift applied; the unshifted figures come from the same student
    with the shift taken off its biases again (and put back).
    """
    from darkknowledge.distill import _last_linear

    missing = list(dres.missing_classes)
    y = torch.as_tensor(data.y_test)

    def recall(pred: torch.Tensor) -> float:
        of_missing = torch.isin(y, torch.tensor(missing, dtype=y.dtype))
        return float((pred[of_missing] == y[of_missing]).double().mean()) if bool(of_missing.any()) else float("nan")

    from darkknowledge.train import predict_logits

    after = predict_logits(student, data.X_test).argmax(-1)
    figures: dict[str, Any] = {"missing_classes": missing, "bias_shift": dres.bias_shift,
                               "missing_class_recall": recall(after)}
    if dres.bias_shift is not None:
        layer = _last_linear(student)
        layer.bias[missing] -= dres.bias_shift
        try:
            before = predict_logits(student, data.X_test).argmax(-1)
        finally:
            layer.bias[missing] += dres.bias_shift
        figures["test_errors_before_bias_shift"] = int((before != y).sum())
        figures["missing_class_recall_before_bias_shift"] = recall(before)
    return figures


def load_splits(ds_cfg: DatasetConfig) -> tuple[Splits, str]:
    """The splits a ``dataset:`` config names, and the data set's name.

    ``ds_cfg.name`` is a built-in data set or a ``.npz`` / ``.csv`` file (loaded, split with
    ``val_fraction`` / ``split_seed`` and standardised with training statistics), or a folder of
    ``.npy`` files (``X_train.npy``, ``y_train.npy``, and ``X_val`` / ``X_test`` pairs) opened as
    memory maps by :func:`darkknowledge.memmap.open_npy_splits`: such features are used as
    stored (standardise them beforehand), and its splits are the folder's own, so
    ``val_fraction``, ``split_seed`` and ``standardize`` do not apply to it.
    """
    kind = next((k for k in ("csv", "parquet", "imagefolder") if getattr(ds_cfg, k) is not None), None)
    if ds_cfg.scale is not None and (kind is not None or Path(ds_cfg.name).is_dir()):
        raise InputError(f"dataset.scale applies to a built-in data set or a .npz file, not to "
                         f"{kind or 'a folder of .npy files'} {ds_cfg.source!r}: scale it when you write it.")
    if kind is not None:  # a table or an image folder: darkknowledge.data.as_splits
        from darkknowledge.data import as_splits

        source = ds_cfg.source
        try:
            data = as_splits(source, test=ds_cfg.test, label=ds_cfg.label_name, val_fraction=ds_cfg.val_fraction,
                             seed=ds_cfg.split_seed, standardize=ds_cfg.standardize)
        except (InputError, MissingFileError) as exc:  # name the config key, not the library's argument
            raise type(exc)(f"dataset.{kind} {source!r}: {exc}") from None
        return data, Path(source).name
    folder = Path(ds_cfg.name)
    if folder.is_dir():
        return open_npy_splits(folder), folder.name
    dataset = load_dataset(ds_cfg.name, data_dir=ds_cfg.data_dir, download=ds_cfg.download,
                           **({"label_column": ds_cfg.label_column} if ds_cfg.label_column else {}))
    if ds_cfg.scale is not None and dataset.metadata.get("integer_features", False):
        scale = np.float32(ds_cfg.scale)  # e.g. 255: 8-bit pixels to [0, 1]; float features are already scaled
        dataset = dataclasses.replace(
            dataset, X_train=dataset.X_train / scale,
            X_test=None if dataset.X_test is None else dataset.X_test / scale,
            metadata={**dataset.metadata, "scaling": f"x / {ds_cfg.scale:g}"},
        )
    data = prepare_splits(dataset, val_fraction=ds_cfg.val_fraction, seed=ds_cfg.split_seed,
                          standardize=ds_cfg.standardize)
    return data, dataset.name


def run_experiment(
    config: ExperimentConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole pipeline and return the results dict (also written to ``<out_dir>/results.json``)."""
    cfg = config or ExperimentConfig()
    out = check_path(out_dir if out_dir is not None else cfg.out_dir, name="out_dir")
    check_output_folder(out, force=force)
    # new, empty or a darkknowledge run folder (else force); no links inside; locked while the run lasts
    handle = claim_run_dir(out, kind="experiment", force=force)
    try:
        return _run_experiment(cfg, out, log)
    finally:
        handle.release()


def check_output_folder(out: Path, *, force: bool = False) -> None:
    """Refuse (without ``force``) an output folder that holds a finished run, or an incomplete one.

    Raises:
        OutputExistsError: ``results.json`` is there, or the run folder holds the remains of a run
            killed before its end (``run`` cannot resume: ``--force`` starts it over).
    """
    if (out / "results.json").exists() and not force:
        raise OutputExistsError(f"output folder {str(out)!r} already holds a run (results.json); pass --force to overwrite it or choose another --out.")
    marker = read_marker(out) if out.is_dir() else None
    if not force and marker is not None and marker["kind"] == "experiment":
        left = sorted(set(p.name for p in out.iterdir()) - {MARKER, LOCK})
        if left:  # killed before results.json: its teachers and cache are there, and `run` cannot resume
            raise OutputExistsError(
                f"output folder {str(out)!r} holds an incomplete run (no results.json; it holds "
                f"{', '.join(repr(n) for n in left[:4])}); pass --force to start it over or choose another --out."
            )


def _run_experiment(cfg: ExperimentConfig, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    t_start = time.perf_counter()
    timing: dict[str, float] = {}

    # 1. data
    ds_cfg = cfg.dataset
    data, ds_name = load_splits(ds_cfg)
    check_config_against_data(cfg, num_classes=data.num_classes)  # omit_class, top_k: before any training
    for who, train_cfg in (("teacher", cfg.teacher.train), ("student", cfg.student.train)):
        augmenter = resolve_augment(train_cfg.augment.model_dump() if train_cfg.augment is not None else None)
        if augmenter is not None and not isinstance(data.input_shape, dict):
            try:
                augmenter.check_input_shape(tuple(data.input_shape))
            except InputError as exc:  # before any training, naming the key
                raise InputError(f"{who}.train.augment: {exc}") from None
    if data.X_test is None:
        hint = " (give one with dataset.test: a file or folder of the same kind)" if ds_cfg.source != ds_cfg.name else ""
        raise InputError(f"dataset {ds_cfg.source!r} has no test split{hint}; the run evaluates on a held-out test split.")
    if data.X_val is None:
        raise InputError(f"dataset {ds_cfg.name!r} has no validation split (X_val.npy / y_val.npy); the run "
                         "chooses T, alpha and the learning rate on it.")
    log(f"data: {ds_name}, {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test, "
        f"{data.num_classes} classes, input {data.input_shape}")

    # 2. teacher(s)
    t0 = time.perf_counter()
    teacher, members, teacher_histories = _train_teacher(cfg, data, out, log)
    timing["teacher_seconds"] = time.perf_counter() - t0
    # fit saved each trained member in teacher/member-<i>, with its metadata (best epoch, ...)

    # 3. soft targets, once
    t0 = time.perf_counter()
    st = cfg.soft_targets
    logits_train = cached_teacher_logits(teacher, data.X_train, cache_dir=out / "cache", dtype=st.dtype, top_k=st.top_k, split="train")
    logits_test = teacher_logits(teacher, data.X_test)  # (N_test, C)
    timing["soft_targets_seconds"] = time.perf_counter() - t0

    # 4. temperature / alpha sweep on the validation split
    dcfg, scfg = cfg.distill, cfg.student
    train_kwargs = dict(scfg.train.fit_kwargs(), device=cfg.device, amp=cfg.amp)
    make_student = lambda seed=cfg.seeds[0]: build_model(scfg.model.name, input_shape=data.input_shape,
                                                          num_classes=data.num_classes, seed=seed, **scfg.model.options)
    temperature, alpha, distill_lr = dcfg.temperature, dcfg.alpha, dcfg.lr or train_kwargs["lr"]
    # consistent teaching: an augmented student is taught online, on exactly the views it sees
    online = dcfg.teacher_mode == "online" or (dcfg.teacher_mode == "auto" and scfg.train.augment is not None)
    teacher_mode = "online" if online else "cached"
    taught_by = teacher if online else logits_train
    if online:
        log("distillation: the teacher runs online on every student batch (teacher_mode online)")
    sweep_rows, sweep_best = [], None
    if dcfg.sweep.temperatures and dcfg.sweep.alphas:
        t0 = time.perf_counter()
        sweep_kwargs = {k: v for k, v in train_kwargs.items() if k not in ("lr", "max_grad_norm")}
        if dcfg.sweep.epochs:
            sweep_kwargs["epochs"] = dcfg.sweep.epochs
        result = sweep(make_student, taught_by, data, temperatures=dcfg.sweep.temperatures, alphas=dcfg.sweep.alphas,
                       lrs=dcfg.sweep.lrs or [distill_lr], divergence=dcfg.divergence, seed=cfg.seeds[0],
                       max_grad_norm=dcfg.max_grad_norm, teacher_mode=teacher_mode, **sweep_kwargs)
        sweep_rows, sweep_best = result.rows, result.best
        if sweep_best is not None:
            temperature, alpha, distill_lr = sweep_best["temperature"], sweep_best["alpha"], sweep_best["lr"]
            log(f"sweep: best T = {temperature:g}, alpha = {alpha:g}, lr = {distill_lr:g} "
                f"(validation accuracy {100 * sweep_best['val_accuracy']:.2f} %, {len(sweep_rows)} tried)")
        timing["sweep_seconds"] = time.perf_counter() - t0

    # 5. students, alone and distilled, from the same initial weights, for every seed
    alone_rows, distilled_rows, alone_hist, distilled_hist = [], [], None, None
    timing["student_alone_seconds"] = timing["student_distilled_seconds"] = 0.0
    for seed in cfg.seeds:
        if scfg.alone:
            student = make_student(seed)
            t0 = time.perf_counter()
            res = fit(student, data, seed=seed, out_dir=out / "student-alone" / f"seed-{seed}", force=True, **train_kwargs)
            student.cpu()
            timing["student_alone_seconds"] += time.perf_counter() - t0
            alone_rows.append(evaluate_model(student, data.X_test, data.y_test, teacher_logits=logits_test))
            alone_hist = alone_hist or res.history

        student = make_student(seed)
        t0 = time.perf_counter()
        kwargs = dict(train_kwargs, lr=distill_lr, max_grad_norm=dcfg.max_grad_norm)
        dres = distill(student, taught_by, data, temperature=temperature, alpha=alpha, divergence=dcfg.divergence,
                       transfer=dcfg.transfer, transfer_fraction=dcfg.transfer_fraction, omit_class=dcfg.omit_class,
                       transfer_classes=dcfg.transfer_classes, seed=seed, out_dir=out / "student-distilled" / f"seed-{seed}", force=True,
                       teacher_mode=teacher_mode, **kwargs)
        student.cpu()
        timing["student_distilled_seconds"] += time.perf_counter() - t0
        if dres.bias_shift is not None and is_main_process():  # the bias moved after fit saved the student
            save_model(out / "student-distilled" / f"seed-{seed}", student,
                       metadata={**dres.fit.metadata(), "bias_shift": dres.bias_shift})
        row = evaluate_model(student, data.X_test, data.y_test, teacher_logits=logits_test)
        if dres.missing_classes:
            row.update(_missing_class_figures(student, dres, data, row))
        distilled_rows.append(row)
        distilled_hist = distilled_hist or dres.history
        shifted = (f" ({row['test_errors_before_bias_shift']} before the bias shift of {dres.bias_shift:g})"
                   if "test_errors_before_bias_shift" in row else "")
        alone_note = f"student alone {alone_rows[-1]['test_errors']} errors, " if scfg.alone else ""
        log(f"seed {seed}: {alone_note}distilled {row['test_errors']} errors{shifted}")

    # 6. evaluation, results, report
    models: list[dict[str, Any]] = []
    for i, member in enumerate(members):
        row = evaluate_model(member, data.X_test, data.y_test, teacher_logits=logits_test)
        models.append(dict(row, name=f"teacher member {i} ({_describe(cfg.teacher.model)})", role="teacher-member",
                           history=teacher_histories[i], seeds=None, accuracy_std=None))
    teacher_row = evaluate_model(teacher, data.X_test, data.y_test, teacher_logits=None)
    if cfg.teacher.onnx or cfg.teacher.huggingface:
        teacher_name = f"teacher ({'ONNX' if cfg.teacher.onnx else 'Hugging Face'}: {Path(cfg.teacher.source).name})"
    else:
        teacher_name = (f"teacher ensemble of {len(members)}" if members else f"teacher ({_describe(cfg.teacher.model)})")
    models.append(dict(teacher_row, name=teacher_name, role="teacher", agreement=None, kl_to_teacher=None,
                       history=teacher_histories[0] if teacher_histories and not members else [], seeds=None, accuracy_std=None))
    student_desc = _describe(scfg.model)
    if scfg.alone:
        models.append(dict(_aggregate(alone_rows, cfg.seeds), name=f"student alone ({student_desc})",
                           role="student-alone", history=alone_hist))
    models.append(dict(_aggregate(distilled_rows, cfg.seeds), name=f"student distilled ({student_desc})",
                       role="student-distilled", history=distilled_hist))

    err_t = teacher_row["test_errors"]
    err_d = models[-1]["test_errors"]
    # None when the student alone already matches the teacher, or was not trained (student.alone false)
    closed = gap_closed(err_t, models[-2]["test_errors"], err_d) if scfg.alone else None

    labels_test = data.y_test
    analysis = analyse_soft_targets(logits_test, labels_test, temperatures=(1, 4, 20), class_names=data.class_names)
    timing["total_seconds"] = time.perf_counter() - t_start
    results = {
        "darkknowledge_version": darkknowledge.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": cfg.model_dump(mode="json"),
        "dataset": {"name": ds_name, "num_train": len(data.y_train), "num_val": len(data.y_val),
                    "num_test": len(data.y_test), "num_classes": data.num_classes,
                    "class_names": list(data.class_names), "input_shape": list(data.input_shape)},
        "models": models,
        "distillation": {"temperature": temperature, "alpha": alpha, "lr": distill_lr, "divergence": dcfg.divergence,
                         "gap_closed": closed},
        "sweep": sweep_rows,
        "sweep_best": sweep_best,
        "soft_targets": analysis,
        "timing": timing,
    }
    if is_main_process():
        atomic_write_json(out / "results.json", results)
        atomic_write_json(out / "config.json", cfg.model_dump(mode="json"))
        from darkknowledge.report import render_report

        render_report(results, out / "report.html")
    barrier()
    return results
