"""Configs a careless or hostile user could write: refused up front, with the key (and line) named.

Issue 9, items 4 (YAML alias amplification), 13 (duplicated keys, repeated seeds) and 15
(checks that ran only after the teacher had trained).
"""

import os
import time

import pytest

from darkknowledge.config import (
    MAX_CONFIG_BYTES,
    ConfigError,
    ExperimentConfig,
    TrainRunConfig,
    check_config_against_data,
    load_config,
    parse_config,
    with_overrides,
)

# ------------------------------------------------------------------ YAML: aliases, duplicates, depth


def _laughs(levels: int = 9) -> str:
    """The 510-byte document of the issue: each level a list of ten aliases of the one before."""
    lines = ["model:", "  name: mlp", "  options:", '    l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*l{i - 1}"] * 10)
        lines.append(f"    l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("model", [TrainRunConfig, ExperimentConfig])
def test_nested_aliases_are_refused_at_once(tmp_path, model):
    path = tmp_path / "bomb.yaml"
    path.write_text(_laughs())
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb\.yaml' line 8: expected at most 100000 values with every alias written out, got 111111 instead"):
        load_config(path, model)
    assert time.perf_counter() - start < 1.0  # was 22 s and 2.1 GB


def test_shared_values_written_by_safe_dump_still_load(tmp_path):
    """yaml.safe_dump writes anchors for a value used twice: such a config loads as before."""
    import yaml

    train = {"epochs": 2, "lr": 0.1}
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump({"teacher": {"train": train}, "student": {"train": train}}))
    assert "&id001" in path.read_text()
    cfg = load_config(path)
    assert cfg.teacher.train.epochs == cfg.student.train.epochs == 2


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("model:\n  options:\n    x: &a [1, *a]\n")
    with pytest.raises(ConfigError, match=r"line 3: the alias \*a refers to a mapping or list that contains it"):
        load_config(path, TrainRunConfig)


def test_merge_keys_are_refused(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("train:\n  <<: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"line 2: YAML merge keys \(<<\) are not allowed"):
        load_config(path, TrainRunConfig)


@pytest.mark.parametrize(
    "text, match",
    [
        ("seed: 1\nseed: 2\n", r"line 2: the key 'seed' appears twice in one mapping \(first on line 1\)"),
        ("train:\n  epochs: 3\n  lr: 0.1\n  epochs: 30\n", r"line 4: the key 'epochs' appears twice in one mapping \(first on line 2\)"),
        ("train: {lr: 0.1, lr: 0.2}\n", r"line 1: the key 'lr' appears twice"),
    ],
    ids=["top", "nested", "flow"],
)
def test_duplicated_keys_are_refused_naming_key_and_line(tmp_path, text, match):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path, TrainRunConfig)


def test_deep_nesting_is_refused(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("model:\n  options:\n    x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"expected mappings and lists nested at most 32 deep"):
        load_config(path, TrainRunConfig)


def test_a_config_that_is_too_large_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ConfigError, match=rf"must be at most {MAX_CONFIG_BYTES} bytes, got {MAX_CONFIG_BYTES + 1} bytes instead"):
        load_config(path)


def test_a_folder_or_fifo_is_named_as_such(tmp_path):
    with pytest.raises(ConfigError, match=r"Config file '.*' is a folder: expected a YAML file"):
        load_config(tmp_path)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"pipe\.yaml' is not a regular file \(a FIFO, socket or device\)"):
        load_config(fifo)  # never opened: opening a FIFO would block


def test_bom_and_not_utf8(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbfseed: 3\n")
    assert load_config(path, TrainRunConfig).seed == 3
    path.write_bytes(b"seed: \xff\n")
    with pytest.raises(ConfigError, match=r"must be UTF-8 text"):
        load_config(path, TrainRunConfig)


def test_every_yaml_read_in_the_package_goes_through_load_yaml():
    """One rule for every YAML the package loads: no other yaml.safe_load / yaml.load call."""
    import ast
    from pathlib import Path

    import darkknowledge

    root = Path(darkknowledge.__file__).parent
    calls = []
    for file in root.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "yaml" \
                    and node.attr in {"safe_load", "load", "full_load", "unsafe_load", "safe_load_all", "load_all"}:
                calls.append(f"{file.name}:{node.lineno}")
    assert calls == []


# ------------------------------------------------------------------ fields: nonsense refused up front


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"seeds": [0, 0]}, r"'seeds'.*seeds must be distinct, got \[0, 0\] instead \(0 more than once\)"),
        ({"seeds": [-1]}, r"'seeds'.*every seed must be an integer in \[0, 4294967295\], got -1 instead"),
        ({"seeds": [2**40]}, r"every seed must be an integer in \[0, 4294967295\]"),
        ({"seeds": []}, r"seeds must list at least one seed"),
        ({"seeds": list(range(1001))}, r"seeds must list at most 1000 seeds, got 1001 instead"),
        ({"distill": {"temperature": float("inf")}}, r"'distill\.temperature': Input should be a finite number; got inf"),
        ({"distill": {"temperature": float("nan")}}, r"'distill\.temperature': Input should be a finite number"),
        ({"distill": {"sweep": {"temperatures": [2.0, float("inf")]}}}, r"'distill\.sweep\.temperatures\.1': Input should be a finite number"),
        ({"distill": {"sweep": {"temperatures": [2.0, 2.0]}}}, r"every temperature must be listed once, got 2\.0 twice"),
        ({"distill": {"sweep": {"alphas": []}}}, r"'distill\.sweep'.*temperatures and alphas must both be empty \(no sweep\) or both list values"),
        ({"distill": {"sweep": {"temperatures": [], "alphas": [], "lrs": [0.1]}}}, r"lrs \[0\.1\] has no effect without a sweep"),
        ({"distill": {"sweep": {"lrs": [1e300]}}}, r"every learning rate must be in \(0, 100\], got \[1e\+300\]"),
        ({"distill": {"sweep": {"epochs": 10**9}}}, r"'distill\.sweep\.epochs'.*less than or equal to 100000"),
        ({"distill": {"lr": 1e300}}, r"'distill\.lr'.*less than or equal to 100"),
        ({"distill": {"max_grad_norm": float("inf")}}, r"'distill\.max_grad_norm'.*finite number"),
        ({"distill": {"omit_class": -1}}, r"'distill\.omit_class'.*greater than or equal to 0"),
        ({"distill": {"omit_class": 10**6}}, r"'distill\.omit_class'.*less than 100000"),
        ({"soft_targets": {"top_k": 0}}, r"'soft_targets\.top_k'.*greater than or equal to 1"),
        ({"soft_targets": {"top_k": 10**9}}, r"'soft_targets\.top_k'.*less than or equal to 100000"),
        ({"teacher": {"train": {"lr": 1e300}}}, r"'teacher\.train\.lr': Input should be less than or equal to 100; got 1e\+300"),
        ({"teacher": {"train": {"lr": float("inf")}}}, r"'teacher\.train\.lr'.*finite number"),
        ({"teacher": {"train": {"epochs": 10**9}}}, r"'teacher\.train\.epochs'.*less than or equal to 100000"),
        ({"teacher": {"train": {"batch_size": 0}}}, r"'teacher\.train\.batch_size'.*greater than or equal to 1"),
        ({"teacher": {"train": {"batch_size": 10**12}}}, r"'teacher\.train\.batch_size'.*less than or equal to 16777216"),
        ({"teacher": {"train": {"weight_decay": float("nan")}}}, r"'teacher\.train\.weight_decay'.*finite number"),
        ({"teacher": {"train": {"weight_decay": 5.0}}}, r"'teacher\.train\.weight_decay'.*less than or equal to 1"),
        ({"teacher": {"train": {"momentum": 1.0}}}, r"'teacher\.train\.momentum'.*less than 1"),
        ({"teacher": {"train": {"epochs": 40, "warmup_epochs": 40}}}, r"'teacher\.train'.*warmup_epochs must be < epochs=40, got 40 instead"),
        ({"teacher": {"train": {"max_grad_norm": float("inf")}}}, r"'teacher\.train\.max_grad_norm'.*finite number"),
        ({"teacher": {"train": {"augment": {"shift": 10**6}}}}, r"'teacher\.train\.augment\.shift'.*less than or equal to 1024"),
        ({"teacher": {"members": 0}}, r"'teacher\.members'.*greater than or equal to 1"),
        ({"teacher": {"members": 10**6}}, r"'teacher\.members'.*less than or equal to 1000"),
        ({"teacher": {"run_dir": ""}}, r"'teacher\.run_dir'.*teacher\.run_dir must not be empty"),
        ({"teacher": {"model": {"name": " "}}}, r"'teacher\.model\.name'.*the model name must not be empty"),
        ({"teacher": {"model": {"options": {"dropout": float("nan")}}}}, r"'teacher\.model\.options'.*options\.dropout must be a finite number, got nan"),
        ({"teacher": {"model": {"options": {"hidden": [8, float("inf")]}}}}, r"options\.hidden\[1\] must be a finite number, got inf"),
        ({"dataset": {"name": ""}}, r"'dataset\.name'.*the dataset name must not be empty, got ''"),
        ({"dataset": {"name": "a\x00b"}}, r"'dataset\.name'.*must not contain a NUL byte"),
        ({"dataset": {"data_dir": ""}}, r"'dataset\.data_dir'.*data_dir must not be empty"),
        ({"dataset": {"label_column": ""}}, r"'dataset\.label_column'.*label_column must not be empty"),
        ({"dataset": {"split_seed": -1}}, r"'dataset\.split_seed'.*greater than or equal to 0"),
        ({"dataset": {"val_fraction": float("nan")}}, r"'dataset\.val_fraction'.*finite number"),
        ({"out_dir": ""}, r"'out_dir'.*out_dir must not be empty"),
        ({"student": {"train": {"lr": 0}}}, r"'student\.train\.lr'.*greater than 0"),
    ],
)
def test_experiment_config_refuses(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"seed": -1}, r"'seed'.*greater than or equal to 0"),
        ({"seed": 2**32}, r"'seed'.*less than or equal to 4294967295"),
        ({"train": {"lr": 1e300}}, r"'train\.lr'.*less than or equal to 100"),
        ({"train": {"epochs": 0}}, r"'train\.epochs'.*greater than or equal to 1"),
        ({"out_dir": "  "}, r"'out_dir'.*out_dir must not be empty"),
        ({"dataset": {"name": ""}}, r"the dataset name must not be empty"),
        ({"model": {"options": {"dropout": float("-inf")}}}, r"options\.dropout must be a finite number"),
    ],
)
def test_train_run_config_refuses(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(raw, TrainRunConfig)


def test_an_error_across_keys_does_not_dump_the_whole_mapping():
    with pytest.raises(ConfigError) as info:
        parse_config({"teacher": {"train": {"warmup_epochs": 40}}})
    assert "got {" not in str(info.value)


def test_the_shipped_limits_leave_sane_values_alone():
    cfg = parse_config({"seeds": [0, 1, 2], "distill": {"sweep": {"lrs": [0.02, 0.05]}}, "teacher": {"train": {"lr": 100.0}}})
    assert cfg.seeds == [0, 1, 2] and cfg.teacher.train.lr == 100.0


# ------------------------------------------------------------------ overrides (the command line) are validated


def test_with_overrides_validates_what_model_copy_skips():
    cfg = ExperimentConfig()
    assert cfg.model_copy(update={"seeds": [0, 0]}).seeds == [0, 0]  # what cli.py did: no validation
    with pytest.raises(ConfigError, match=r"seeds must be distinct, got \[0, 0\] instead"):
        with_overrides(cfg, seeds=[0, 0])
    new = with_overrides(cfg, seeds=[5, 6], device="auto", amp=True, distill={"alpha": 0.5})
    assert (new.seeds, new.device, new.amp, new.distill.alpha, new.distill.temperature) == ([5, 6], "auto", True, 0.5, 4.0)
    assert cfg.seeds == [0, 1, 2]  # the original is untouched
    with pytest.raises(ConfigError, match=r"Unknown config key 'sedes'"):
        with_overrides(cfg, sedes=[1])
    with pytest.raises(TypeError, match=r"cfg must be a config"):
        with_overrides({"seeds": [1]}, seeds=[1])
    assert with_overrides(TrainRunConfig(), seed=4).seed == 4


# ------------------------------------------------------------------ checks that need the data, before any training


def test_check_config_against_data():
    check_config_against_data(parse_config({"distill": {"omit_class": 9}, "soft_targets": {"top_k": 10}}), num_classes=10)
    with pytest.raises(ConfigError, match=r"'distill\.omit_class' must be a class of the data, in \[0, 9\], got 10 instead"):
        check_config_against_data(parse_config({"distill": {"omit_class": 10}}), num_classes=10)
    with pytest.raises(ConfigError, match=r"'soft_targets\.top_k' must be at most the number of classes \(10\), got 11 instead"):
        check_config_against_data(parse_config({"soft_targets": {"top_k": 11}}), num_classes=10)
    with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1, got 0 instead"):
        check_config_against_data(ExperimentConfig(), num_classes=0)
    check_config_against_data(TrainRunConfig(), num_classes=2)  # nothing data-dependent in a train config
