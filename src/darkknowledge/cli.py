"""The command line: ``darkknowledge <command> ...`` (thin: parse, call, print).

Commands:

* ``info`` — the information-theory calculator: ``entropy``, ``self-information``, ``cross-entropy``,
  ``kl``, ``js`` and the ``softmax`` temperature table;
* ``challenger`` — the Challenger O-ring logistic regression by maximum likelihood.

Adding a command: write ``_add_<cmd>_parser(subparsers)``, which registers the sub-parser and sets
``handler=_cmd_<cmd>``, and ``_cmd_<cmd>(args) -> int``; then call the former in :func:`_build_parser`.
A handler returns the exit code; a ``ValueError`` / ``TypeError`` / ``FileNotFoundError`` it raises
becomes ``darkknowledge: error: <message>`` on stderr with exit code 2 (as argparse does for usage
errors), never a traceback.

Example:
    >>> main(["info", "entropy", "0.1", "0.3", "0.2", "0.4"])
    1.8464 bits
    0
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

from darkknowledge import __version__

__all__ = ["main"]

_USER_ERRORS = (ValueError, TypeError, FileNotFoundError)
_BASE_HELP = "log base: 2 (bits, the default), e (nats), 10 (hartleys)"


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    0 on success, 2 on bad input (message on stderr, no traceback).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except _USER_ERRORS as exc:
        print(f"darkknowledge: error: {exc}", file=sys.stderr)
        return 2


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darkknowledge",
        description="Knowledge distillation on an exact core of information theory and losses.",
    )
    parser.add_argument("--version", action="version", version=f"darkknowledge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_info_parser(subparsers)
    _add_challenger_parser(subparsers)
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


def _cmd_info_entropy(args: argparse.Namespace) -> int:
    from darkknowledge.info import entropy

    value = entropy(args.p, base=args.base, normalize=args.normalize)
    print(f"{value:.4f} {_unit(args.base)}")
    return 0


def _cmd_info_self_information(args: argparse.Namespace) -> int:
    from darkknowledge.info import self_information

    values = self_information(args.p, base=args.base)
    for prob, value in zip(args.p, values):
        print(f"I({prob:g}) = {value:.4f} {_unit(args.base)}")
    return 0


def _cmd_info_pair(args: argparse.Namespace) -> int:
    from darkknowledge.info import cross_entropy, js_divergence, kl_divergence

    fn = {"cross-entropy": cross_entropy, "kl": kl_divergence, "js": js_divergence}[args.quantity]
    value = fn(args.p, args.q, base=args.base, normalize=args.normalize)
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
        raise ValueError(f"--temperature must be a finite number of °F, got {args.temperature!r} instead.")
    if args.plot is not None and not Path(args.plot).parent.is_dir():
        raise FileNotFoundError(f"--plot's folder {str(Path(args.plot).parent)!r} does not exist.")
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
