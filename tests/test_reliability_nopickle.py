"""Nothing is ever loaded with pickle: an AST scan of every module of the package.

Flagged, anywhere under ``src/darkknowledge``:

* importing ``pickle`` (or ``_pickle``, ``cPickle``, ``dill``, ``cloudpickle``, ``joblib``, ``shelve``);
* ``torch.load(...)`` without ``weights_only=True``;
* ``yaml.load`` / ``yaml.load_all`` without ``Loader=SafeLoader`` (or ``CSafeLoader``), and any
  ``yaml.unsafe_load*`` / ``yaml.full_load*``;
* ``np.load(...)`` / ``numpy.load(...)`` without ``allow_pickle=False``;
* ``allow_pickle=True`` in any call;
* ``from torch|numpy|yaml import load`` (which would hide the calls above from the scan).

The scanner is itself tested on snippets that do each of these, so the scan fails if someone adds one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import darkknowledge

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve"}
NUMPY_NAMES = {"np", "numpy"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader"}


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for ``Attribute(Name('torch'), 'load')``; '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def find_unsafe_loads(source: str, filename: str = "<src>") -> list[str]:
    """Every pickle-capable load in ``source``, as ``"file:line: what"`` strings."""
    problems: list[str] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    problems.append(f"{where}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in PICKLE_MODULES:
                problems.append(f"{where}: imports from {node.module}")
            if module in {"torch", "numpy", "yaml"} and any(
                a.name in {"load", "load_all", "unsafe_load", "full_load"} for a in node.names
            ):
                problems.append(f"{where}: imports a bare load from {node.module}")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            if any(k.arg == "allow_pickle" and not _is_const(k.value, False) for k in node.keywords):
                problems.append(f"{where}: allow_pickle is not False in {name or 'a call'}")
            if name == "torch.load" and not _is_const(_keyword(node, "weights_only"), True):
                problems.append(f"{where}: torch.load without weights_only=True")
            elif name.rpartition(".")[0] in NUMPY_NAMES and name.endswith(".load"):
                if not _is_const(_keyword(node, "allow_pickle"), False):
                    problems.append(f"{where}: {name} without allow_pickle=False")
            elif name.startswith("yaml."):
                func = name.split(".", 1)[1]
                if func.startswith(("unsafe_load", "full_load")):
                    problems.append(f"{where}: {name}")
                elif func in {"load", "load_all"}:
                    loader = _keyword(node, "Loader")
                    if loader is None and len(node.args) > 1:
                        loader = node.args[1]
                    if _dotted(loader).rpartition(".")[2] not in SAFE_YAML_LOADERS:
                        problems.append(f"{where}: {name} without Loader=SafeLoader")
    return problems


def _package_files() -> list[Path]:
    root = Path(darkknowledge.__file__).parent
    return sorted(root.rglob("*.py"))


def test_no_module_loads_anything_with_pickle():
    files = _package_files()
    assert len(files) >= 20  # the whole package was scanned
    problems = []
    for path in files:
        problems += find_unsafe_loads(path.read_text(encoding="utf-8"), path.name)
    assert problems == []


def test_the_package_uses_the_safe_loaders():
    # the scan above is not vacuous: the loaders it checks are really there, in their safe form
    text = {p.name: p.read_text(encoding="utf-8") for p in _package_files()}
    assert "np.load(path, allow_pickle=False)" in text["user.py"]
    assert "class _ConfigLoader(yaml.SafeLoader)" in text["config.py"]  # the one YAML reader: a SafeLoader

    import yaml

    from darkknowledge.config import _ConfigLoader

    assert issubclass(_ConfigLoader, yaml.SafeLoader)
    assert "safetensors" in text["checkpoint.py"]


@pytest.mark.parametrize(
    "snippet, expected",
    [
        ("import pickle\n", "imports pickle"),
        ("import cloudpickle as cp\n", "imports cloudpickle"),
        ("from pickle import loads\n", "imports from pickle"),
        ("from joblib import load\n", "imports from joblib"),
        ("import torch\nm = torch.load('w.pt')\n", "torch.load without weights_only=True"),
        ("import torch\nm = torch.load('w.pt', weights_only=False)\n", "torch.load without weights_only=True"),
        ("import yaml\ncfg = yaml.load(text)\n", "yaml.load without Loader=SafeLoader"),
        ("import yaml\ncfg = yaml.load(text, Loader=yaml.FullLoader)\n", "yaml.load without Loader=SafeLoader"),
        ("import yaml\ncfg = yaml.load(text, yaml.UnsafeLoader)\n", "yaml.load without Loader=SafeLoader"),
        ("import yaml\ncfg = yaml.unsafe_load(text)\n", "yaml.unsafe_load"),
        ("import yaml\ncfg = yaml.full_load(text)\n", "yaml.full_load"),
        ("import numpy as np\na = np.load('a.npz')\n", "np.load without allow_pickle=False"),
        ("import numpy\na = numpy.load('a.npy', allow_pickle=True)\n", "allow_pickle is not False"),
        ("a = anything.load('a.npz', allow_pickle=flag)\n", "allow_pickle is not False"),
        ("from numpy import load\n", "imports a bare load from numpy"),
        ("from torch import load as tl\n", "imports a bare load from torch"),
    ],
)
def test_scanner_catches_each_unsafe_load(snippet, expected):
    problems = find_unsafe_loads(snippet)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\nm = torch.load('w.pt', weights_only=True)\n",
        "import yaml\ncfg = yaml.safe_load(text)\n",
        "import yaml\ncfg = yaml.load(text, Loader=yaml.SafeLoader)\n",
        "import yaml\ncfg = yaml.load(text, Loader=yaml.CSafeLoader)\n",
        "import numpy as np\na = np.load('a.npz', allow_pickle=False)\n",
        "from safetensors.torch import load_file\nw = load_file('m.safetensors')\n",
        "import json\nd = json.load(f)\n",
    ],
)
def test_scanner_accepts_the_safe_forms(snippet):
    assert find_unsafe_loads(snippet) == []
