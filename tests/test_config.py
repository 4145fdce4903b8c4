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
    (["prep.input.path=x", "prep.split.test_frac=1.0"], "prep.split.test_frac"),
    (["prep.input.path=x", "prep.dedup.threshold=0"], "prep.dedup.threshold"),
    (["prep.input.path=x", "prep.dedup.threshold=1.5"], "prep.dedup.threshold"),
    (["prep.input.path=x", "prep.labels.mapping={lean left: purple}"], "purple"),
    (["nonsense.key=1"], "nonsense: unknown key"),
    (["prep.input.path=x", "prep.split.mode=predefined"], "needs split.predefined"),
    (["baseline.tfidf.ngram_min=3"], "ngram_min=3 is above ngram_max=2"),
    (["baseline.tfidf.analyzer=char"], "baseline.tfidf.analyzer: Input should be 'word' or 'char_wb'"),
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
    bad.write_text("prep:\n  split: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 3, column 1: "):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(None, ["prep.split.mode"])


def test_a_bad_key_is_said_to_come_from_the_file_or_the_command_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  optim:\n    lrr: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(cfg, ["train.optim.lr=x", "train.optim.epochz=1"])
    problems = str(exc.value).split(": ", 1)[1].split("; ")
    typed = {p.split(":")[0]: p.endswith("(on the command line)") for p in problems}
    assert typed == {"train.optim.lrr": False, "train.optim.lr": True, "train.optim.epochz": True}, problems
    assert str(exc.value).startswith(f"invalid config {cfg}: ")


def test_a_model_validator_message_has_no_pydantic_prefix():
    with pytest.raises(ConfigError) as exc:
        load_config(None, ["export.adapter=a", "export.out=b", "export.quantize=int8"])
    assert "Value error" not in str(exc.value) and "quantize=int8 needs format=onnx" in str(exc.value)


def test_missing_section_is_a_clear_error():
    with pytest.raises(ConfigError, match="no 'prep:' section"):
        load_config(None, []).require("prep")


@pytest.mark.parametrize("key,suggested", [
    ("train.optim.learning_rate", "train.optim.lr"),              # a TrainingArguments name
    ("train.lora.lora_alpha", "train.lora.alpha"),                # a peft LoraConfig name
    ("prep.split.mdoe", "prep.split.mode"),                       # a typo
    ("predict.batchsize", "predict.batch_size"),
    ("train.epochs", "train.optim.epochs"),                       # a right key at the wrong level
    ("train.max_length", "train.prompt.max_length"),
    ("train.learning_rate", "train.optim.lr"),                    # both at once
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


@pytest.mark.parametrize("key,extra", [
    ("train.data.path", ["train.seed=1"]),
    ("predict.input", ["predict.out=p.jsonl"]),
    ("baseline.data", []),
    ("cv.data", []),
    ("compare.data", []),
])
def test_stages_read_prep_output_unless_told_otherwise(key, extra):
    from newsbias.config import FROM_PREP

    assert key in FROM_PREP

    def value(cfg):
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)
        return node

    prep = ["prep.input.path=x.csv", "prep.out_dir=runs/mine"]
    assert value(load_config(None, prep + extra)) == "runs/mine"
    assert value(load_config(None, prep + extra + [f"{key}=elsewhere"])) == "elsewhere"
    assert value(load_config(None, extra)) != "runs/mine"  # no prep: section, nothing to read


def test_stage_sections_without_required_keys_default():
    cfg = load_config(None, [])
    assert cfg.baseline.data == "runs/data" and cfg.compare.data is None and cfg.serve.port == 8000
    assert cfg.train is None and cfg.predict is None and cfg.export is None


def test_one_prompt_config_for_train_predict_and_serve():
    from newsbias.config import DEFAULT_INSTRUCTION, PromptConfig

    cfg = load_config(None, ["train.prompt.chat_template=off", "serve.prompt.max_length=64",
                             "predict.out=o", "predict.prompt.verbalizers={left: ' L', center: ' C', right: ' R'}"])
    assert cfg.train.prompt.chat_template == "off"  # YAML reads a bare off as false
    assert isinstance(cfg.serve.prompt, PromptConfig) and isinstance(cfg.predict.prompt, PromptConfig)
    assert cfg.predict.prompt.verbalizers["left"] == " L"
    p = PromptConfig()
    assert p.instruction is None and p.with_instruction().instruction == DEFAULT_INSTRUCTION
    assert p.with_instruction("From the data.").instruction == "From the data."
    assert PromptConfig(instruction="Mine.").with_instruction("From the data.").instruction == "Mine."


def test_predict_serve_and_export_share_the_model_source():
    from newsbias.config import ExportConfig, ModelSourceConfig, PredictConfig, ServeConfig

    for section in (PredictConfig, ServeConfig, ExportConfig):
        assert issubclass(section, ModelSourceConfig)
    export = ExportConfig(adapter="a", out="o", base_model="b.gguf")  # the key's former name still reads
    assert export.model == "b.gguf" and export.device == "cpu"
    with pytest.raises(ConfigError, match="predict.dtype"):
        load_config(None, ["predict.out=o", "predict.dtype=fp16"])


def test_a_bootstrap_of_a_handful_of_resamples_is_refused():
    with pytest.raises(ConfigError, match=r"evaluate.n_boot: must be 0 \(no interval\) or at least 20"):
        load_config(None, ["evaluate.n_boot=1"])
    assert load_config(None, ["evaluate.n_boot=0", "compare.metrics.n_boot=20"]).compare.metrics.n_boot == 20


def test_command_line_lists_and_learning_rate_spellings():
    assert load_config(None, ["train.lora.target_modules=q_proj, v_proj"]).train.lora.target_modules == ["q_proj", "v_proj"]
    assert load_config(None, ["train.lora.target_modules=auto"]).train.lora.target_modules == "auto"
    with pytest.raises(ConfigError, match=r"train.report_to: .*write a list: train.report_to=\[tensorboard\]"):
        load_config(None, ["train.report_to=tensorboard"])
    with pytest.raises(ConfigError, match=r"train.optim.lrate: unknown key — did you mean `train.optim.lr`"):
        load_config(None, ["train.optim.lrate=1e-4"])


def test_a_leading_tilde_in_any_path_setting_is_the_home_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = load_config(overrides=["train.out_dir=~/tr", "train.model.name_or_path=~/base"])
    assert (cfg.train.out_dir, cfg.train.model.name_or_path) == (str(tmp_path / "tr"), str(tmp_path / "base"))
    for stage, key in (("predict", "out"), ("baseline", "out_dir"), ("evaluate", "out"), ("compare", "out_dir"),
                       ("explain", "out_dir")):
        assert getattr(getattr(load_config(overrides=[f"{stage}.{key}=~/x"]), stage), key) == str(tmp_path / "x")
    # a text setting keeps its tilde
    assert load_config(overrides=["train.prompt.instruction=~ leaning?"]).train.prompt.instruction == "~ leaning?"


def test_a_key_given_both_as_a_flag_and_as_an_override_is_said_and_the_override_wins(caplog):
    # a script passes its defaults as flags and the user's key=value overrides after them (scripts/demo.sh)
    with caplog.at_level("WARNING"):
        assert load_config(None, ["predict.limit=3"], {"predict.limit": 2}).predict.limit == 3
    assert "predict.limit is given twice, as a flag (2) and as predict.limit=3: the override wins" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert load_config(None, ["predict.limit=3"], {"predict.limit": 3}).predict.limit == 3
    assert not caplog.text


def test_a_text_setting_takes_the_text_typed_even_when_it_reads_as_yaml_bool_or_number():
    cfg = load_config(None, ["predict.name=yes", "predict.split=2020", "baseline.out_dir=2024"])
    assert (cfg.predict.name, cfg.predict.split, cfg.baseline.out_dir) == ("yes", "2020", "2024")
    assert load_config(None, ["predict.name=1e5"]).predict.name == "1e5"  # not "100000.0"
    with pytest.raises(ConfigError, match="predict.batch_size"):  # a number setting still checks its value
        load_config(None, ["predict.batch_size=many"])


def test_errors_name_keys_not_pydantics_union_branches():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.lora.target_modules=[q_proj,3]"])
    assert "train.lora.target_modules.1: Input should be a valid string (got 3)" in str(err.value)
    assert "list[str]" not in str(err.value) and "literal[" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.wise_alphas=[0.5,1.5]"])
    assert str(err.value).count("got [0.5, 1.5]") == 1


def test_a_config_file_with_a_key_twice_or_a_directory_is_refused(tmp_path):
    (tmp_path / "dup.yaml").write_text("train:\n  optim:\n    lr: 1.0e-4\n    lr: 2.0e-4\n")
    with pytest.raises(ConfigError, match="line 3, column 5: the key 'lr' is given twice in one section"):
        load_config(tmp_path / "dup.yaml")
    with pytest.raises(ConfigError, match="is a directory; pass a YAML file"):
        load_config(tmp_path)


def test_verbalizers_are_checked_against_the_labels_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"train.prompt.verbalizers: give exactly one verbalizer per label .*"
                                          r"missing \['left'\]; not a label: \['lft'\]"):
        load_config(None, ['train.prompt.verbalizers={lft: " left", center: " center", right: " right"}'])
