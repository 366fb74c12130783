"""Imports flow one way: every module imports only from floors below its own (an AST scan, not a convention)."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "darkknowledge"

# floor of each module, bottom (0) to top; a subpackage's modules share its floor and may import each other
FLOORS = {
    "errors": -1,  # the exception types: below everything, imported by everything
    "_checks": 0, "_fused_kd": 0,
    "info": 1, "data": 1, "config": 1, "augment": 1, "models": 1, "schedules": 1, "distributed": 1, "report": 1, "mle": 1,
    "functional": 2, "checkpoint": 2, "teacher_adapters": 2,  # below teachers, which dispatches to it
    "losses": 3, "teachers": 3, "rundir": 3,
    "train": 4, "evaluate": 4, "soft_targets": 4,
    "distill": 5, "memmap": 5,
    "experiment": 6,
    "cli": 7, "__main__": 8,
}
MATHS = {"info", "functional", "losses", "_fused_kd"}
MATHS_MAY_IMPORT = {"_checks", "errors", "info", "_fused_kd", ""}  # "" = the package root (its __version__)


def _top(module_file: Path) -> str:
    rel = module_file.relative_to(SRC).with_suffix("")
    return rel.parts[0] if rel.parts[0] != "__init__" else ""


def _imported_tops(module_file: Path) -> set[str]:
    tree = ast.parse(module_file.read_text())
    tops = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module + ("." + node.names[0].name if node.module == "darkknowledge" else "")]
        for name in names:
            if name == "darkknowledge" or name.startswith("darkknowledge."):
                parts = name.split(".")
                tops.add(parts[1] if len(parts) > 1 else "")
    return tops


MODULES = sorted(p for p in SRC.rglob("*.py") if _top(p))


def test_every_module_has_a_floor():
    missing = {_top(p) for p in MODULES} - set(FLOORS)
    assert not missing, f"give these modules a floor in FLOORS: {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_flow_downward(path):
    me = _top(path)
    for other in _imported_tops(path) - {me, "__version__", ""}:
        assert other in FLOORS, f"{path.name} imports unknown darkknowledge.{other}"
        assert FLOORS[other] < FLOORS[me], (
            f"darkknowledge.{me} (floor {FLOORS[me]}) imports darkknowledge.{other} (floor {FLOORS[other]}): "
            "imports must flow downward"
        )


@pytest.mark.parametrize("name", sorted(MATHS))
def test_maths_imports_only_torch_numpy_and_itself(name):
    path = SRC / f"{name}.py"
    assert _imported_tops(path) <= MATHS_MAY_IMPORT | {name}
