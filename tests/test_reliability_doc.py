"""docs/reliability.md names the tests that show each fault and bad input: every name it cites exists,
and every reliability test is cited."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_reliability_doc_and_tests_agree():
    doc = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    cited = set(re.findall(r"`(?:[\w/]+\.py::)?(test_\w+)", doc))
    defined = set()
    for path in (ROOT / "tests").glob("test_reliability_*.py"):
        if path.name == Path(__file__).name:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined |= {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
    assert len(defined) >= 30
    assert sorted(cited - defined) == []  # the doc cites no test that does not exist
    assert sorted(defined - cited) == []  # and every reliability test is in the doc
