"""docs/reliability.md names the tests that show each fault and bad input: every name it cites exists,
and every reliability test is cited."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_reliability_doc_and_tests_agree():
    doc = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)", doc))
    reliability, anywhere = set(), set()
    for path in (ROOT / "tests").glob("test_*.py"):
        if path.name == Path(__file__).name:
            continue
        names = _test_names(path)
        anywhere |= names
        if path.name.startswith("test_reliability_"):
            reliability |= names
    assert len(reliability) >= 30
    assert sorted(cited - anywhere) == []  # the doc cites no test that does not exist
    assert sorted(reliability - cited) == []  # and every test of the reliability files is in the doc
