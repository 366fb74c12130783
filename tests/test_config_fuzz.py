"""Fuzzing the config reader: random YAML structures give a config or a ``ConfigError``, quickly.

Hypothesis writes nested YAML documents (mappings, lists, scalars of every YAML type, anchors
and aliases, duplicated keys, tags, the real keys of a config mixed with random ones) and byte
mutations of the shipped configs; ``load_config`` must return a validated config or raise
``ConfigError`` (``FileNotFoundError`` never, the file exists), never another exception, within
the deadline.
"""

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from darkknowledge.config import ConfigError, ExperimentConfig, TrainRunConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SETTINGS = settings(max_examples=150, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])

KEYS = ["dataset", "name", "teacher", "student", "model", "options", "train", "epochs", "lr", "seeds", "seed",
        "distill", "sweep", "temperatures", "alphas", "temperature", "alpha", "top_k", "omit_class", "hidden",
        "soft_targets", "out_dir", "device", "augment", "shift", "x", "<<", "1", "true", "null", ""]
SCALARS = ["0", "-1", "1e300", ".inf", "-.inf", ".nan", "~", "null", "true", "no", "'text'", '""', "0x1F", "1_000",
           "2001-12-14", "!!binary aGVsbG8=", "!!python/object/apply:os.system ['true']", "!!set {a, b}", "[]", "{}",
           "12345678901234567890", "4.0", "mlp", "*a", "&a 3"]


def _document() -> st.SearchStrategy[str]:
    scalar = st.one_of(st.sampled_from(SCALARS), st.integers(-(2**70), 2**70).map(str),
                       st.floats(allow_nan=True, allow_infinity=True).map(repr),
                       st.text(alphabet="abc:-[]{}&*!#'\" ,\n\t", max_size=8).map(lambda t: repr(t)))
    key = st.sampled_from(KEYS)

    def block(children):
        mapping = st.lists(st.tuples(key, children), max_size=5).map(
            lambda items: "{" + ", ".join(f"{k!r}: {v}" if k == "" else f"{k}: {v}" for k, v in items) + "}")
        seq = st.lists(children, max_size=5).map(lambda items: "[" + ", ".join(items) + "]")
        anchored = st.tuples(st.sampled_from(["&a ", "&b ", ""]), st.one_of(mapping, seq)).map("".join)
        return st.one_of(mapping, seq, anchored)

    value = st.recursive(scalar, block, max_leaves=40)
    top = st.lists(st.tuples(key, value), max_size=8).map(lambda items: "".join(f"{k}: {v}\n" for k, v in items))
    return st.one_of(top, value)


@SETTINGS
@given(doc=_document(), train=st.booleans())
def test_random_yaml_documents_give_a_config_or_config_error(tmp_path_factory, doc, train):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(doc)
    model = TrainRunConfig if train else ExperimentConfig
    try:
        cfg = load_config(path, model)
    except ConfigError as exc:
        assert str(exc)  # a message, and the type the command line turns into one line
        return
    assert isinstance(cfg, model)


@pytest.mark.parametrize("name", ["digits", "fashion-mnist", "mnist-hinton"])
@SETTINGS
@given(data=st.data())
def test_mutated_shipped_configs_give_a_config_or_config_error(tmp_path_factory, name, data):
    raw = bytearray((REPO / "configs" / f"{name}.yaml").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[i] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[i:i] = data.draw(st.sampled_from([b"&a ", b"*a", b"\n  epochs: 3\n", b"[", b"{", b": ", b"!!", b"\t", b"\xff"]))
        elif op == "delete" and raw:
            del raw[i]
        else:
            del raw[i:]
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_bytes(bytes(raw))
    try:
        cfg = load_config(path)
    except ConfigError:
        return
    assert isinstance(cfg, ExperimentConfig)
