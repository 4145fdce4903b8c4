"""Config loading: every shipped preset validates; errors name the field; overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsbias.config import Config, load_config, parse_overrides
from newsbias.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_there_are_presets():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads_and_says_how_to_run_it(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(("# newsbias ", "# make ")), f"{path.name} must start with a comment showing its command"
    assert str(path.relative_to(path.parents[1])) in first or "--config" not in first


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["a.b=3", "a.c=null", "a.d=[x, y]", "e=hello", "f.g=2e-4"]) == {
        "a": {"b": 3, "c": None, "d": ["x", "y"]}, "e": "hello", "f": {"g": 2e-4}}
    cfg = load_config(None, ["prep.input.path=x.csv", "prep.split.mode=random", "prep.downsample.train_cap=1200"])
    assert cfg.prep.split.mode == "random" and cfg.prep.downsample.train_cap == 1200


def test_override_beats_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("prep:\n  input: {path: a.csv}\n  split: {mode: by_time, seed: 1}\n")
    cfg = load_config(f, ["prep.split.seed=9"])
    assert cfg.prep.split.mode == "by_time" and cfg.prep.split.seed == 9


@pytest.mark.parametrize("overrides, message", [
    (["prep.input.path=x", "prep.split.mdoe=random"], "prep.split.mdoe: unknown key"),
    (["prep.input.path=x", "prep.split.seed=abc"], "prep.split.seed: Input should be a valid integer"),
    (["prep.input.path=x", "prep.split.mode=sideways"], "prep.split.mode: Input should be"),
    (["prep.split.mode=random"], "prep.input: required but missing"),
    (["prep.input.path=x", "prep.split.test_frac=1.5"], "prep.split.test_frac"),
    (["nonsense.key=1"], "nonsense: unknown key"),
    (["prep.input.path=x", "prep.split.mode=predefined"], "needs split.predefined"),
])
def test_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_numeric_label_scheme_survives_yaml_octal():
    cfg = load_config(None, ["prep.input.path=x", "prep.labels.numeric=012"])
    assert cfg.prep.labels.numeric == "012"
    assert load_config(None, ["prep.input.path=x", "prep.labels.numeric=-101"]).prep.labels.numeric == "-101"


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("prep: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(None, ["prep.split.mode"])


def test_missing_section_is_a_clear_error():
    with pytest.raises(ConfigError, match="no 'prep:' section"):
        load_config(None, []).require("prep")


@pytest.mark.parametrize("key,suggested", [
    ("train.optim.learning_rate", "train.optim.lr"),              # a TrainingArguments name
    ("train.lora.lora_alpha", "train.lora.alpha"),                # a peft LoraConfig name
    ("prep.split.mdoe", "prep.split.mode"),                       # a typo
    ("predict.batchsize", "predict.batch_size"),
])
def test_unknown_keys_suggest_the_nearest_valid_key(key, suggested):
    with pytest.raises(ConfigError, match=f"{key}: unknown key — did you mean `{suggested}`"):
        load_config(None, [f"{key}=1"] + (["predict.input=x", "predict.out=y"] if key.startswith("predict") else []))


def test_unknown_key_far_from_any_field_gets_no_guess():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["train.optim.zzzzqqq=1"])
    assert "unknown key" in str(exc.value) and "did you mean" not in str(exc.value)


def test_version(capsys):
    from newsbias import __version__
    from newsbias.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"newsbias {__version__}"
