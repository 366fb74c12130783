"""The report: a self-contained HTML page with plots, rendered from a run's results.json.

``render_report(results, out_path)`` writes ``report.html`` from the results dict;
``render_report_from_file("results.json")`` reads the file and writes ``report.html``
beside it. :mod:`darkknowledge.report.plots` holds one function per figure (matplotlib,
object-oriented API, Agg canvas, no pyplot).

>>> from darkknowledge.report import render_report, headline
>>> callable(render_report) and callable(headline)
True
"""

from darkknowledge.report.html import (
    REQUIRED_MODEL_KEYS,
    ROLES,
    gap_closed,
    headline,
    render_report,
    render_report_from_file,
    validate_results,
)

__all__ = [
    "REQUIRED_MODEL_KEYS",
    "ROLES",
    "gap_closed",
    "headline",
    "render_report",
    "render_report_from_file",
    "validate_results",
]
