"""The command line: ``darkknowledge <command> ...`` (thin: parse, call, print).

Commands:

* ``info`` — the information-theory calculator: ``entropy``, ``self-information``, ``cross-entropy``,
  ``kl``, ``js`` and the ``softmax`` temperature table;
* ``challenger`` — the Challenger O-ring logistic regression by maximum likelihood;
* ``train`` — fit one model (from flags or a YAML config) and write its run folder;
* ``run`` — the distillation experiment (teacher, soft targets, students, evaluation, report).

Adding a command: write ``_add_<cmd>_parser(subparsers)``, which registers the sub-parser and sets
``handler=_cmd_<cmd>``, and ``_cmd_<cmd>(args) -> int``; then call the former in :func:`_build_parser`.
A handler returns the exit code. What it raises is sorted by :func:`main`:

* a :class:`~darkknowledge.errors.DarkKnowledgeError` (bad input, a file that is not what it should
  be, a diverged run), an ``OSError`` of the machine (disk full, read-only or missing folder, no
  permission, ...) or ``MemoryError`` becomes ``darkknowledge: error: <message>`` on stderr with exit
  code 2 (as argparse does for usage errors), never a traceback;
* Ctrl-C (``KeyboardInterrupt``) prints where the last checkpoint is and how to continue, exit 130;
* anything else is a bug: its traceback is shown (exit 1) so that it can be reported.

Example:
    >>> main(["info", "entropy", "0.1", "0.3", "0.2", "0.4"])
    1.8464 bits
    0
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from darkknowledge import __version__
from darkknowledge.errors import DarkKnowledgeError, InputError, MissingFileError

__all__ = ["main"]

# OSErrors that say something about the machine or the paths given, not about darkknowledge's code
_MACHINE_ERRNOS = {
    errno.ENOSPC: "the disk is full; free some space or write elsewhere",
    errno.EDQUOT: "the disk quota is exceeded; free some space or write elsewhere",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "a folder where a file was expected",
    errno.ENOTDIR: "a file where a folder was expected",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ELOOP: "too many levels of symbolic links",
    errno.EEXIST: "the path already exists",
    errno.EBUSY: "the path is busy (a mount point or in use)",
    errno.ENXIO: "no such device (a FIFO or socket without a reader?)",
    errno.EIO: "an input/output error of the disk",
    errno.EMFILE: "too many open files",
}
_BASE_HELP = "log base: 2 (bits, the default), e (nats), 10 (hartleys)"


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    0 on success; 2 on bad input or a problem of the machine (message on stderr, no traceback);
    130 on Ctrl-C. A bug (any other exception) propagates with its traceback.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        if args.command in ("train", "run") and os.environ.get("WORLD_SIZE", "1") != "1":
            return _run_distributed(handler, args)
        return handler(args)
    except DarkKnowledgeError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        print(f"\ndarkknowledge: interrupted. {_resume_hint(args)}", file=sys.stderr)
        return 130
    except MemoryError as exc:
        detail = f" ({exc})" if str(exc) else ""
        return _error(f"out of memory{detail}; use smaller models, batches or data, or a machine with more memory.")
    except OSError as exc:
        if exc.errno not in _MACHINE_ERRNOS:
            raise
        return _error(_describe_os_error(exc))


def _error(message: str) -> int:
    print(f"darkknowledge: error: {message}", file=sys.stderr)
    return 2


def _describe_os_error(exc: OSError) -> str:
    """One line for an OSError of the machine: what happened, to which path, what to do."""
    where = " -> ".join(repr(str(f)) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or str(exc)
    hint = _MACHINE_ERRNOS[exc.errno]
    text = f"{what}: {where}" if where else what
    if hint.lower() != what.lower():
        text += f" ({hint})"
    return text + "."


def _resume_hint(args: argparse.Namespace) -> str:
    """What was kept after Ctrl-C and how to continue, for the command in ``args``."""
    folder = getattr(args, "run_folder", None)
    if folder is None:
        return "Nothing was written."
    checkpoint = Path(folder) / "checkpoint" / "last.safetensors"
    if args.command == "train" and checkpoint.is_file() and not checkpoint.is_symlink():
        return (f"The last checkpoint is {str(checkpoint)!r}; rerun the same command with --resume to continue "
                "from it, or with --force to start over.")
    if args.command == "train":
        return (f"No epoch was finished, so {str(folder)!r} holds no checkpoint; rerun the same command "
                "with --force to start over.")
    return (f"The run in {str(folder)!r} is incomplete (the teacher's soft targets computed so far stay "
            "cached there); rerun the same command with --force to start it over.")


def _run_distributed(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Under ``torchrun`` (``WORLD_SIZE > 1``): join the process group (gloo on CPU, NCCL on CUDA),
    run the command on every rank, print only on rank 0 (``darkknowledge.distributed``)."""
    import contextlib

    from darkknowledge.distributed import distributed_session

    with distributed_session(device=getattr(args, "device", None) or "auto") as ctx:
        if ctx.rank == 0:
            return handler(args)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            return handler(args)


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None,
                   help="where to train: cpu, cuda (one GPU per torchrun process) or auto (cuda when available)")
    p.add_argument("--amp", action="store_true", help="mixed precision: bfloat16 autocast in the forward pass")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darkknowledge",
        description="Knowledge distillation on an exact core of information theory and losses.",
    )
    parser.add_argument("--version", action="version", version=f"darkknowledge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_info_parser(subparsers)
    _add_challenger_parser(subparsers)
    _add_train_parser(subparsers)
    _add_run_parser(subparsers)
    return parser


# --------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------
def _parse_base(text: str) -> float:
    """``--base``: ``e`` for nats, or a number (2 for bits, 10 for hartleys)."""
    if text.strip().lower() == "e":
        return math.e
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'e' or a number > 0 other than 1, got {text!r}") from None


def _unit(base: float) -> str:
    if base == 2:
        return "bits"
    if base == math.e:
        return "nats"
    if base == 10:
        return "hartleys"
    return f"units of log base {base:g}"


def _add_info_parser(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser(
        "info",
        help="entropy, cross-entropy, KL, JS and softmax-with-temperature calculator",
        description="Information theory of discrete distributions (weights are normalised to sum to 1).",
    )
    cmds = info.add_subparsers(dest="info_command", metavar="QUANTITY", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--base", type=_parse_base, default=2.0, help=_BASE_HELP)
        p.add_argument(
            "--no-normalize", dest="normalize", action="store_false",
            help="require probabilities that sum to 1 instead of normalising them",
        )

    p = cmds.add_parser("entropy", help="H(p) = -sum p log p", description="Shannon entropy H(p).")
    p.add_argument("p", nargs="+", type=float, metavar="P", help="probabilities (or weights)")
    common(p)
    p.set_defaults(handler=_cmd_info_entropy)

    p = cmds.add_parser("self-information", help="I(p) = -log p of each probability")
    p.add_argument("p", nargs="+", type=float, metavar="P", help="probabilities in [0, 1]")
    p.add_argument("--base", type=_parse_base, default=2.0, help=_BASE_HELP)
    p.set_defaults(handler=_cmd_info_self_information)

    for name, helptext in (
        ("cross-entropy", "H(p, q) = -sum p log q"),
        ("kl", "KL(p || q) = sum p log(p / q)"),
        ("js", "Jensen-Shannon divergence of p and q"),
    ):
        p = cmds.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--p", nargs="+", type=float, required=True, metavar="P", help="the distribution p")
        p.add_argument("--q", nargs="+", type=float, required=True, metavar="Q", help="the distribution q")
        common(p)
        p.set_defaults(handler=_cmd_info_pair, quantity=name)

    p = cmds.add_parser(
        "softmax", help="softmax with temperature: a table, one row per temperature",
        description="q_i = exp(z_i / T) / sum_j exp(z_j / T), one row per temperature T.",
    )
    p.add_argument("logits", nargs="+", type=float, metavar="Z", help="logits")
    p.add_argument("--temperature", "-T", nargs="+", type=float, default=[1.0], metavar="T",
                   help="one or more temperatures > 0 (default 1)")
    p.set_defaults(handler=_cmd_info_softmax)


# Library advice rewritten for the command line, where the keyword arguments are flags.
_INFO_ADVICE = (
    ("when normalize=False", "with --no-normalize (drop the flag to normalise the weights)"),
    ("pass normalize=True to normalise a distribution", "drop --no-normalize to normalise the weights"),
)


def _info_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an ``info`` function; its errors' advice is rewritten in terms of the command's flags."""
    try:
        return fn(*args, **kwargs)
    except InputError as exc:
        text = str(exc)
        for library, command_line in _INFO_ADVICE:
            text = text.replace(library, command_line)
        raise InputError(text) from None


def _cmd_info_entropy(args: argparse.Namespace) -> int:
    from darkknowledge.info import entropy

    value = _info_call(entropy, args.p, base=args.base, normalize=args.normalize)
    print(f"{value:.4f} {_unit(args.base)}")
    return 0


def _cmd_info_self_information(args: argparse.Namespace) -> int:
    from darkknowledge.info import self_information

    bad = [p for p in args.p if not 0.0 <= p <= 1.0]  # NaN fails both comparisons
    if bad:
        raise InputError(f"each P must be a probability in [0, 1], got {bad[0]:g} instead; self-information is "
                         "-log P of one probability (for a distribution of weights use `darkknowledge info entropy`).")
    values = _info_call(self_information, args.p, base=args.base)
    for prob, value in zip(args.p, values):
        print(f"I({prob:g}) = {value:.4f} {_unit(args.base)}")
    return 0


def _cmd_info_pair(args: argparse.Namespace) -> int:
    from darkknowledge.info import cross_entropy, js_divergence, kl_divergence

    fn = {"cross-entropy": cross_entropy, "kl": kl_divergence, "js": js_divergence}[args.quantity]
    value = _info_call(fn, args.p, args.q, base=args.base, normalize=args.normalize)
    print(f"{value:.4f} {_unit(args.base)}")
    return 0


def _cmd_info_softmax(args: argparse.Namespace) -> int:
    from darkknowledge.functional import softmax

    rows = [softmax(args.logits, temperature=t) for t in args.temperature]  # each (C,)
    headers = ["T"] + [f"z={z:g}" for z in args.logits]
    cells = [[f"{t:g}"] + [f"{v:.4f}" for v in row] for t, row in zip(args.temperature, rows)]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    for line in [headers, *cells]:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths)))
    return 0


# --------------------------------------------------------------------------------------------
# challenger
# --------------------------------------------------------------------------------------------
def _add_challenger_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "challenger",
        help="logistic regression of O-ring distress on launch temperature (maximum likelihood)",
        description="Fit P(distress | temperature) on the 23 pre-accident flights by maximum likelihood.",
    )
    p.add_argument("--temperature", type=float, default=31.0, metavar="F",
                   help="launch temperature in °F to predict at (default 31, the day of the accident)")
    p.add_argument("--plot", metavar="PATH", default=None,
                   help="write a PNG of the fitted curve and the data")
    p.set_defaults(handler=_cmd_challenger)


def _cmd_challenger(args: argparse.Namespace) -> int:
    from darkknowledge.mle import challenger_data, fit_logistic_regression, plot_logistic_fit

    if not math.isfinite(args.temperature):
        raise InputError(f"--temperature must be a finite number of °F, got {args.temperature!r} instead.")
    if args.plot is not None:
        _check_plot_path(args.plot)
    temperature_f, distress = challenger_data()
    fit = fit_logistic_regression(temperature_f, distress)
    print(f"Challenger O-rings: {len(distress)} flights, {int(distress.sum())} with distress")
    print(f"intercept:          {fit.intercept:.4f}")
    print(f"slope:              {fit.coefficients[0]:.4f} per °F")
    print(f"log-likelihood:     {fit.log_likelihood:.4f} nats")
    print(f"P(distress | {args.temperature:g} °F): {fit.predict_proba(args.temperature):.4f}")
    if args.plot is not None:
        path = plot_logistic_fit(
            fit, temperature_f, distress, args.plot, mark=args.temperature,
            xlabel="launch temperature (°F)", ylabel="P(O-ring distress)",
            title="Challenger O-ring distress vs temperature",
        )
        print(f"wrote {path}")
    return 0


def _check_plot_path(plot: str) -> None:
    """``--plot`` must name a PNG file to write, in a folder that exists."""
    path = Path(plot)
    if not plot.strip() or plot.endswith(("/", os.sep)) or path.name in ("", ".", ".."):
        raise InputError(f"--plot must name a PNG file to write, e.g. challenger.png, got {plot!r} instead.")
    if path.is_dir():
        raise InputError(f"--plot must name a PNG file to write, got the folder {plot!r} instead.")
    if path.exists() and not path.is_file():
        raise InputError(f"--plot must name a regular file, got {plot!r}, which is not one (a FIFO or device?).")
    if not path.parent.is_dir():
        raise MissingFileError(f"--plot's folder {str(path.parent)!r} does not exist; create it first.")


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
def _add_train_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="fit one model and write its run folder (weights, log, checkpoints, summary)",
        description="Fit one model by minibatch SGD. Flags override the values of an optional YAML config.",
    )
    p.add_argument("config", nargs="?", default=None, help="YAML config (keys: dataset, model, train, seed, out_dir)")
    p.add_argument("--dataset", help="digits, mnist, fashion-mnist, challenger, a .npz / .csv path, or a folder of "
                   "X_train.npy, y_train.npy (and X_val / X_test pairs), memory-mapped, used as stored")
    p.add_argument("--data-dir", help="folder holding the dataset's files")
    p.add_argument("--model", help="model name: linear, logistic, softmax-regression, mlp, cnn")
    p.add_argument("--hidden", type=int, nargs="+", help="hidden layer sizes of an mlp (or the cnn's dense layer)")
    p.add_argument("--dropout", type=float, help="dropout probability of hidden layers")
    p.add_argument("--input-dropout", type=float, help="dropout probability of the input (mlp)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="the optimizer (default sgd, with --momentum)")
    p.add_argument("--max-norm", type=float, help="max-norm constraint on each hidden unit's incoming weights")
    p.add_argument("--weight-decay", type=float, help="L2 penalty lambda: w <- (1 - 2 lr lambda) w - lr grad")
    p.add_argument("--lr-schedule", choices=["constant", "cosine", "onecycle"])
    p.add_argument("--patience", type=int, dest="early_stopping_patience", help="early-stopping patience in epochs")
    p.add_argument("--hflip", action="store_true", default=None,
                   help="augment: mirror training images left to right at random (image datasets)")
    p.add_argument("--shift", type=int, help="augment: shift training images by up to this many pixels at random")
    p.add_argument("--seed", type=int)
    p.add_argument("--out", help="run folder to write (default runs/train)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--force", action="store_true",
                   help="start over in --out (a finished or interrupted run), or write into a folder that is not a run folder")
    _add_device_flags(p)
    p.set_defaults(handler=_cmd_train)


def _train_config_from_args(args: argparse.Namespace):
    from darkknowledge.config import TrainRunConfig, load_config, parse_config

    cfg = load_config(args.config, TrainRunConfig) if args.config else TrainRunConfig()
    raw = cfg.model_dump()
    if args.dataset is not None:
        raw["dataset"]["name"] = args.dataset
    if args.data_dir is not None:
        raw["dataset"]["data_dir"] = args.data_dir
    if args.model is not None:
        if args.model != raw["model"]["name"]:
            raw["model"]["options"] = {}
        raw["model"]["name"] = args.model
    for flag, key in (("hidden", "hidden"), ("dropout", "dropout"), ("input_dropout", "input_dropout")):
        if getattr(args, flag) is not None:
            raw["model"]["options"][key] = getattr(args, flag)
    if raw["model"]["name"] == "cnn" and isinstance(raw["model"]["options"].get("hidden"), list):
        if len(raw["model"]["options"]["hidden"]) != 1:
            raise InputError(f"--hidden takes one size for a cnn (its dense layer), got {args.hidden} instead.")
        raw["model"]["options"]["hidden"] = raw["model"]["options"]["hidden"][0]
    for key in ("epochs", "batch_size", "lr", "momentum", "weight_decay", "lr_schedule", "early_stopping_patience",
                "optimizer", "max_norm"):
        if getattr(args, key) is not None:
            raw["train"][key] = getattr(args, key)
    if args.hflip is not None or args.shift is not None:
        augment = dict(raw["train"].get("augment") or {})
        if args.hflip is not None:
            augment["hflip"] = True
        if args.shift is not None:
            augment["shift"] = args.shift
        raw["train"]["augment"] = augment
    if args.seed is not None:
        raw["seed"] = args.seed
    if args.out is not None:
        raw["out_dir"] = args.out
    return parse_config(raw, TrainRunConfig)


def _check_out_dir(out: Path, *, kind: str, force: bool = False, resume: bool = False):
    """Claim the output folder before any work (``darkknowledge.rundir``): it can be created and written,
    is new, empty or a darkknowledge run of this kind (else ``--force``), holds no link where darkknowledge
    writes, no interrupted run without ``--resume``, and no other process is writing it. Returns the held
    folder (release it when done)."""
    from darkknowledge.rundir import claim_run_dir

    return claim_run_dir(out, kind=kind, force=force, resume=resume, cli=True, name="--out")


def _cmd_train(args: argparse.Namespace) -> int:
    import time

    from darkknowledge.checkpoint import atomic_write_json
    from darkknowledge.evaluate import evaluate_model
    from darkknowledge.experiment import load_splits
    from darkknowledge.models import build_model, count_parameters
    from darkknowledge.rundir import RunFolderError, check_path
    from darkknowledge.train import fit

    cfg = _train_config_from_args(args)
    out = check_path(cfg.out_dir, name="--out")
    args.run_folder = out  # for the Ctrl-C message of main()
    if args.force and args.resume:
        raise RunFolderError("--resume and --force contradict each other: --resume continues the run in --out, "
                             "--force starts it over; pass one of them.")
    if (out / "summary.json").exists() and not (args.force or args.resume):
        raise RunFolderError(f"--out {str(out)!r} already holds a finished run; pass --force to overwrite it or --resume.")
    handle = _check_out_dir(out, kind="fit", force=args.force, resume=args.resume)  # held until the summary is written
    try:
        data, ds_name = load_splits(cfg.dataset)
        model = build_model(cfg.model.name, input_shape=data.input_shape, num_classes=data.num_classes,
                            seed=cfg.seed, **cfg.model.options)
        print(f"{cfg.model.name}: {count_parameters(model):,} parameters; {ds_name}: "
              f"{len(data.y_train)} train / {0 if data.y_val is None else len(data.y_val)} val / "
              f"{0 if data.y_test is None else len(data.y_test)} test")
        start = time.perf_counter()
        from darkknowledge.distributed import barrier, is_main_process

        result = fit(model, data, seed=cfg.seed, out_dir=out, resume=args.resume, force=args.force,
                     device=args.device or cfg.device, amp=args.amp or cfg.amp, **cfg.train.fit_kwargs())
        seconds = time.perf_counter() - start  # fit wrote model.safetensors / model.json (with its metadata)
        summary = {"config": cfg.model_dump(mode="json"), "params": count_parameters(model),
                   "best_epoch": result.best_epoch, "train_seconds": seconds}
        if data.X_test is not None:
            metrics = evaluate_model(model, data.X_test, data.y_test)
            summary["test"] = {k: metrics[k] for k in ("test_errors", "n_test", "accuracy", "nll", "ece")}
            print(f"test: {metrics['test_errors']} errors / {metrics['n_test']}, accuracy {100 * metrics['accuracy']:.2f} %, "
                  f"NLL {metrics['nll']:.4f} nats, {seconds:.1f} s ({seconds / max(result.epochs_run, 1):.2f} s/epoch)")
        if is_main_process():
            atomic_write_json(out / "summary.json", summary)
        barrier()
        print(f"wrote {out}")
        return 0
    finally:
        handle.release()


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------
def _add_run_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="the distillation experiment: teacher, soft targets, students alone and distilled, report",
        description="Run data -> teacher(s) -> cached soft targets -> students -> evaluation -> report. "
                    "With no config, the embedded default on scikit-learn's digits.",
    )
    p.add_argument("config", nargs="?", default=None, help="YAML config (see configs/); default: digits")
    p.add_argument("--out", help="run folder (default: the config's out_dir)")
    p.add_argument("--seeds", type=int, nargs="+", help="override the config's seeds")
    p.add_argument("--dataset", help="override dataset.name: a built-in name, a .npz / .csv file or a folder of .npy files")
    p.add_argument("--teacher", metavar="RUN_DIR",
                   help="use the teacher trained by `darkknowledge train` in RUN_DIR instead of the config's teacher")
    p.add_argument("--force", action="store_true",
                   help="start over in --out (a finished or incomplete run), or write into a folder that is not a run folder")
    _add_device_flags(p)
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from darkknowledge.config import ExperimentConfig, load_config, with_overrides
    from darkknowledge.experiment import format_table, run_experiment

    cfg = load_config(args.config) if args.config else ExperimentConfig()
    overrides = {key: value for key, value in (("seeds", args.seeds), ("device", args.device),
                                               ("amp", True if args.amp else None)) if value is not None}
    if args.dataset is not None:
        overrides["dataset"] = {"name": args.dataset}
    if overrides:
        cfg = with_overrides(cfg, **overrides)  # validated again: --seeds 0 0 is refused like seeds: [0, 0]
    if args.teacher is not None:  # a trained teacher's run folder replaces the config's teacher section
        from darkknowledge.config import parse_config

        raw = cfg.model_dump(exclude_unset=True)
        raw["teacher"] = {"run_dir": args.teacher}
        cfg = parse_config(raw, ExperimentConfig)
    from darkknowledge.experiment import check_output_folder
    from darkknowledge.rundir import check_path

    out = check_path(args.out if args.out is not None else cfg.out_dir, name="--out")
    args.run_folder = out  # for the Ctrl-C message of main()
    check_output_folder(out, force=args.force)  # a finished or incomplete run: --force
    handle = _check_out_dir(out, kind="experiment", force=args.force)  # run_experiment claims it again (same process)
    try:
        results = run_experiment(cfg, out_dir=out, force=args.force)
    finally:
        handle.release()
    print()
    print(format_table(results["models"]))
    d = results["distillation"]
    if d.get("gap_closed") is not None:
        print(f"\ndistillation at T = {d['temperature']:g}, alpha = {d['alpha']:g} closed "
              f"{100 * d['gap_closed']:.0f} % of the gap between the student alone and the teacher.")
    print(f"total {results['timing']['total_seconds']:.1f} s; wrote {out / 'results.json'} and {out / 'report.html'}")
    return 0
