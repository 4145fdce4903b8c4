"""The command line: one table of flags, each setting a config key, with help from the config's fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from newsbias.cli import COMMANDS, _flag_values, _value_kwargs, main, parse_args
from newsbias.config import field_info, load_config

BASE = {"prep": {"prep.input.path": "x.csv"}, "predict": {"predict.out": "p.jsonl"},
        "export": {"export.adapter": "a", "export.out": "o"}}
NEEDS = {"export.quantize": {"export.format": "onnx"}, "export.check_data": {"export.format": "onnx"},  # flags whose
         "export.smooth": {"export.format": "onnx", "export.quantize": "int8",  # non-default value needs other keys
                           "export.calibration_data": "c"}}
NUMBERS = {"export.smooth": 0.5, "evaluate.n_boot": 70}  # numeric flags whose range excludes 7
FLAGS = [(cmd, flag) for cmd in COMMANDS for flag in cmd.flags if flag.key]


def _value(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_help_needs_no_torch():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "from newsbias.cli import build_parser; "
                          "build_parser()"], capture_output=True, text=True, check=True).stderr
    assert " torch" not in out and "transformers" not in out


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c.name for c in COMMANDS])
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd.name, "--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and cmd.description.split()[0] in out
    for flag in cmd.flags:
        assert all(name in out for name in flag.names.split()), flag.names
        if flag.key:
            assert f"(= {flag.key}" in " ".join(out.split())


@pytest.mark.parametrize("cmd,flag", FLAGS, ids=[f"{c.name} {f.names.split()[0]}" for c, f in FLAGS])
def test_every_flag_sets_its_config_key(cmd, flag):
    info = field_info(flag.key)
    kind = _value_kwargs(info.annotation)
    if flag.const is not None:
        argv, want = [flag.names.split()[-1]], flag.const
    elif "choices" in kind:  # one that is not the default (nor one that needs more keys)
        want = next(c for c in kind["choices"] if c not in (info.default, "predefined"))
        argv = [flag.names.split()[0], want]
    elif "type" in kind:
        want = NUMBERS.get(flag.key, 7)
        argv = [flag.names.split()[0], str(want)]
    else:
        argv, want = [flag.names.split()[0], "2024"], "2024"  # text stays text (YAML would read a number)
    args = parse_args([cmd.name, *argv])
    values = _flag_values(args, cmd.flags)
    cfg = load_config(None, [], {**BASE.get(cmd.name, {}), **NEEDS.get(flag.key, {}), **values})
    assert _value(cfg, flag.key) == ([want] if flag.many else want)


def test_overrides_beat_flags_and_may_come_anywhere():
    args = parse_args(["baseline", "baseline.seed=2", "--seed", "1", "baseline.split=val"])
    cfg = load_config(args.config, args.overrides, _flag_values(args, args.spec.flags))
    assert cfg.baseline.seed == 2 and cfg.baseline.split == "val"


def test_overrides_after_a_flag_of_several_values_are_not_taken_as_its_values():
    args = parse_args(["compare", "--preds", "a=x.jsonl", "run.v2=y.jsonl", "compare.metrics.n_boot=100",
                       "--ensemble", "e=a+run.v2", "compare.split=val"])
    cfg = load_config(None, args.overrides, _flag_values(args, args.spec.flags)).compare
    assert cfg.preds == ["a=x.jsonl", "run.v2=y.jsonl"] and cfg.ensembles == ["e=a+run.v2"]
    assert cfg.metrics.n_boot == 100 and cfg.split == "val"


def test_export_names_its_base_model_and_no_flag_is_abbreviated(capsys):
    for name in ("--model", "--base-model"):
        args = parse_args(["export", name, "/m/base.gguf"])
        assert _flag_values(args, args.spec.flags) == {"export.model": "/m/base.gguf"}
    with pytest.raises(SystemExit):
        parse_args(["export", "--base-mod", "x"])  # argparse would have expanded it to --base-model-id
    assert "unrecognized arguments: --base-mod" in capsys.readouterr().err


def test_export_eval_is_an_alias_of_metrics():
    for name in ("--eval", "--metrics"):
        args = parse_args(["export", name, "run=report"])
        assert _flag_values(args, args.spec.flags) == {"export.metrics": "run=report"}


def test_switches_and_lists():
    args = parse_args(["compare", "--preds", "a=x.jsonl", "y.jsonl", "--intersect", "--by-outlet"])
    cfg = load_config(None, [], _flag_values(args, args.spec.flags)).compare
    assert cfg.preds == ["a=x.jsonl", "y.jsonl"] and cfg.on_mismatch == "intersect" and cfg.metrics.by_outlet


def test_a_repeated_list_flag_adds_to_the_list():
    args = parse_args(["compare", "--preds", "a=x.jsonl", "--ensemble", "e=a+b", "f=a+c", "--preds", "b=y.jsonl",
                       "--ensemble", "g=b+c"])
    cfg = load_config(None, [], _flag_values(args, args.spec.flags)).compare
    assert cfg.preds == ["a=x.jsonl", "b=y.jsonl"] and cfg.ensembles == ["e=a+b", "f=a+c", "g=b+c"]


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c.name)
def test_each_help_shows_an_override_of_its_own_section_that_exists(cmd, capsys):
    from newsbias.cli import EXAMPLES
    from newsbias.errors import NewsbiasError

    example = EXAMPLES[cmd.name]
    assert all(kv.startswith(f"{cmd.name}.") for kv in example.split())
    try:
        load_config(None, example.split(), {})
    except NewsbiasError as err:  # only the command's required inputs may be missing, never a key
        assert all(p.endswith("required but missing") for p in str(err).split(": ", 1)[1].split("; ")), err
    with pytest.raises(SystemExit):
        main([cmd.name, "--help"])
    assert example in " ".join(capsys.readouterr().out.split())


def test_serve_help_names_every_route_of_the_api(capsys):
    from newsbias.serve import create_app

    app = create_app(loader=lambda cfg: None)
    routes = {f"{m} {r.path}" for r in app.routes if getattr(r, "include_in_schema", False) for m in r.methods - {"HEAD"}}
    assert {"POST /v1/classify", "POST /v1/explain", "GET /v1/model"} <= routes
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert [r for r in routes if r not in out] == []


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c.name)
def test_every_command_takes_quiet(cmd):
    from newsbias.cli import parse_args

    assert parse_args([cmd.name, "-q"]).quiet is True


def test_quiet_silences_the_libraries_warnings_not_newsbias_own(monkeypatch):
    import warnings

    from newsbias.cli import _quiet_libraries

    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)  # restored after the test
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _quiet_libraries()
        warnings.warn_explicit("from peft", UserWarning, "peft/x.py", 1, module="peft.tuners.lora")
        warnings.warn_explicit("from newsbias", UserWarning, "newsbias/t.py", 1, module="newsbias.train")
    assert [str(w.message) for w in caught] == ["from newsbias"]
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "error"


def test_quiet_prints_no_info_lines_but_keeps_warnings_and_the_summary(tmp_path):
    rows = "".join(json.dumps({"text": f"w{i} " * 40, "label": "left", "source": f"s{i}"}) + "\n" for i in range(6))
    (tmp_path / "in.jsonl").write_text(rows)
    run = subprocess.run([sys.executable, "-m", "newsbias.cli", "prep", "-q", "--input", str(tmp_path / "in.jsonl"),
                          "--out", str(tmp_path / "o"), "prep.split.mode=random"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "INFO" not in run.stderr and "WARNING" in run.stderr and "prep: wrote" in run.stdout


def test_os_errors_say_what_to_do():
    import errno

    from newsbias.cli import os_error_message

    full = os_error_message(OSError(errno.ENOSPC, "No space left on device"))
    assert full.startswith("no space left on the device: free some space or write the output elsewhere")
    assert "(writing /d/x.jsonl)" in os_error_message(OSError(errno.ENOSPC, "No space left on device", "/d/x.jsonl"))
    assert os_error_message(FileExistsError(errno.EEXIST, "File exists", "/tmp/afile")) == (
        "/tmp/afile exists and is not a directory: give a directory path (new or empty)")
    assert os_error_message(PermissionError(errno.EACCES, "Permission denied", "/x")) == (
        "cannot access /x: Permission denied")


def test_a_failed_weights_write_is_one_line(monkeypatch, capsys):
    import newsbias.metrics as metrics

    class SafetensorError(Exception):  # safetensors' own class name: what the CLI recognises
        pass

    def full_disk(cfg):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(metrics, "evaluate", full_disk)
    assert main(["evaluate", "--preds", "x.jsonl"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("newsbias evaluate: error: cannot write the weights: Error while serializing") and \
        "Traceback" not in err


def test_predict_names_the_articles_it_skipped():
    from newsbias.cli import _skipped_lines

    first = [{"id": f"a{i}", "line": i + 2, "skipped": "empty text"} for i in range(5)]
    text = _skipped_lines({"skipped": 7, "skipped_first": first})
    assert text.splitlines()[1:] == ["predict: skipped a0 (line 2): empty text", "predict: skipped a1 (line 3): empty text",
                                     "predict: skipped a2 (line 4): empty text",
                                     "predict: and 4 more (the manifest's counts.skipped_first lists up to 5)"]
    assert _skipped_lines({"skipped": 0, "skipped_first": []}) == ""


@pytest.mark.parametrize("quiet,level", [(True, "warning"), (False, "info")])
def test_serve_quiet_silences_the_web_servers_own_info_lines(monkeypatch, quiet, level):
    import newsbias.serve as serve_mod

    started = {}
    monkeypatch.setattr(serve_mod, "check_port", lambda host, port: None)
    monkeypatch.setattr(serve_mod, "load_model", lambda cfg: object())
    monkeypatch.setattr(serve_mod, "run_server", lambda cfg, predictor: started.update(level=cfg.log_level))
    assert main(["serve", "--model", "some/model", *(["-q"] if quiet else [])]) == 0
    assert started["level"] == level


def test_evaluate_refuses_dash_for_its_files(tmp_path, capsys):
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "1", "pred": "left", "gold": "left"}\n')
    for args in (["--preds", "-"], ["--preds", str(preds), "--out", "-"]):
        assert main(["evaluate", *args]) == 2
        assert "not stdin/stdout" in capsys.readouterr().err
    assert not (tmp_path / "-").exists() and not os.path.exists("-")
