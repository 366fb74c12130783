"""Config validation: strict keys with suggestions, types, defaults in one place."""

from pathlib import Path

import pytest
import yaml

from darkknowledge.config import ConfigError, ExperimentConfig, TrainRunConfig, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_digits_config():
    """configs/digits.yaml spells out the defaults: running with no config equals running it."""
    from_file = load_config(REPO / "configs" / "digits.yaml")
    assert from_file.model_dump() == ExperimentConfig().model_dump()


def test_fashion_mnist_config_is_the_recipe_of_the_results_page():
    """configs/fashion-mnist.yaml trains the teacher and student that docs/results.md reports."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_results", REPO / "scripts" / "make_results.py")
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    cfg = load_config(REPO / "configs" / "fashion-mnist.yaml")
    recipe = results.RECIPES[results.TEACHERS[results.STUDENT_TEACHERS[0]][0]]
    assert cfg.teacher.model.model_dump() == recipe["model"]
    assert {k: v for k, v in cfg.teacher.train.model_dump().items() if k in recipe["train"]} == recipe["train"]
    assert cfg.student.model.model_dump() == results.STUDENT
    assert cfg.student.train.epochs == results.STUDENT_TRAIN["epochs"]
    assert cfg.dataset.val_fraction == results.FMNIST_VAL_FRACTION


@pytest.mark.parametrize("name", ["digits", "fashion-mnist", "mnist-hinton", "mnist-missing-3"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.seeds


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"Unknown config key 'student\.modle' \(did you mean 'model'\?\)"):
        parse_config({"student": {"modle": {"name": "mlp"}}})


def test_unknown_top_level_key_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"Unknown config key 'sedes' \(did you mean 'seeds'\?\).*Valid keys here: dataset"):
        parse_config({"sedes": [1]})


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"'teacher\.train\.epochs'.*valid integer.*got 'ten'"):
        parse_config({"teacher": {"train": {"epochs": "ten"}}})


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"distill": {"temperature": 0}}, r"'distill\.temperature'.*greater than 0"),
        ({"distill": {"alpha": 1.5}}, r"'distill\.alpha'.*less than or equal to 1"),
        ({"distill": {"sweep": {"temperatures": [2, -1]}}}, r"every temperature must be > 0"),
        ({"distill": {"divergence": "hellinger"}}, r"'distill\.divergence'.*'kl', 'reverse_kl' or 'js'"),
        ({"seeds": []}, r"seeds must list at least one seed"),
    ],
)
def test_bad_values_are_rejected(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(raw)


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config([1, 2])


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_tags_that_run_code_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("seeds: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(path)


def test_train_config_round_trip(tmp_path):
    cfg = parse_config({"model": {"name": "cnn"}, "train": {"epochs": 3}}, TrainRunConfig)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    assert load_config(path, TrainRunConfig) == cfg
