"""newsbias calibrate: a trained model's temperature refitted on held-out articles, written where scoring reads it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from newsbias.classifier import Classifier
from newsbias.cli import main
from newsbias.modeling import SETTINGS_FILE

from conftest import make_planted_rows, write_jsonl
from serve_fixtures import adapter_for


@pytest.fixture()
def uncalibrated(tmp_path, tmp_path_factory, tiny_qwen_dir, planted_data_dir):
    """A copy of a briefly trained LM adapter whose newsbias.json holds no temperature (as before calibration)."""
    d = tmp_path / "adapter"
    shutil.copytree(adapter_for("lm", tmp_path_factory, tiny_qwen_dir, planted_data_dir), d)
    settings = json.loads((d / SETTINGS_FILE).read_text())
    (d / SETTINGS_FILE).write_text(json.dumps({**settings, "calibration": {}}))
    return d


def test_calibrate_writes_the_temperature_that_scoring_then_applies(uncalibrated, planted_data_dir, tmp_path, capsys,
                                                                   caplog):
    texts = [r["input"] for r in make_planted_rows(9, seed=5)]
    raw = Classifier.load(str(uncalibrated)).predict_proba(texts)
    assert main(["calibrate", "--adapter", str(uncalibrated), "--data", str(planted_data_dir)]) == 0
    said = capsys.readouterr().out
    settings = json.loads((uncalibrated / SETTINGS_FILE).read_text())
    cal = settings["calibration"]
    assert cal["method"] == "temperature" and cal["n"] == 30 and cal["data"]["path"].endswith("val.jsonl")
    assert f"calibrate: temperature {cal['temperature']:.3f} (was 1.000) from 30 articles" in said
    assert "calibrating on 30 articles: a temperature fitted on so few is noisy" in caplog.text
    assert not list(uncalibrated.glob(".newsbias.json.tmp-*"))
    scaled = Classifier.load(str(uncalibrated)).predict_proba(texts)
    expected = np.exp(np.log(raw) / cal["temperature"])
    np.testing.assert_allclose(scaled, expected / expected.sum(1, keepdims=True), atol=1e-5)
    assert (scaled.argmax(1) == raw.argmax(1)).all()
    # a second fit starts from the raw scores again, not from the first temperature
    assert main(["calibrate", "--adapter", str(uncalibrated), "--data", str(planted_data_dir)]) == 0
    again = json.loads((uncalibrated / SETTINGS_FILE).read_text())["calibration"]
    assert again["temperature"] == pytest.approx(cal["temperature"], rel=1e-6)


def test_calibrate_refuses_what_it_cannot_calibrate(uncalibrated, tiny_qwen_dir, planted_data_dir, tmp_path, capsys,
                                                    monkeypatch):
    assert main(["calibrate", "--model", str(tiny_qwen_dir), "--data", str(planted_data_dir)]) == 2
    assert "nowhere to keep a temperature" in capsys.readouterr().err
    unlabelled = write_jsonl(tmp_path / "u.jsonl", [{"input": "some article text"}])
    assert main(["calibrate", "--adapter", str(uncalibrated), "--data", str(unlabelled)]) == 2
    assert "u.jsonl" in capsys.readouterr().err
    assert json.loads((uncalibrated / SETTINGS_FILE).read_text())["calibration"] == {}  # nothing written
    import newsbias.calibrate as calibrate_mod

    monkeypatch.setattr(calibrate_mod.os, "access", lambda path, mode: False)  # a read-only model directory
    monkeypatch.setattr(calibrate_mod.Classifier, "calibrate", lambda *a: pytest.fail("scored before refusing"))
    assert main(["calibrate", "--adapter", str(uncalibrated), "--data", str(planted_data_dir)]) == 2
    assert "the directory is not writable; copy the model somewhere writable" in capsys.readouterr().err


def test_calibrating_an_export_updates_its_model_card(uncalibrated, planted_data_dir, tmp_path):
    out = tmp_path / "merged"
    assert main(["export", "--adapter", str(uncalibrated), "--out", str(out), "--merge"]) == 0
    card = (out / "README.md").read_text()
    assert "| probability temperature | none: the raw softmax |" in card
    assert main(["calibrate", "--model", str(out), "--data", str(planted_data_dir)]) == 0
    cal = json.loads((out / SETTINGS_FILE).read_text())["calibration"]
    new = (out / "README.md").read_text()
    assert f"| probability temperature | {cal['temperature']:.3f}, fitted on 30 articles of val.jsonl" in new
    assert new.replace(next(l for l in new.splitlines() if l.startswith("| probability temperature |")), "") == \
        card.replace("| probability temperature | none: the raw softmax |", "")  # nothing else changed


def test_a_temperature_fitted_on_the_test_file_is_said_wherever_it_shows(uncalibrated, planted_data_dir, tmp_path,
                                                                          caplog):
    from newsbias.config import CompareConfig, PredictConfig
    from newsbias.predict import run_predict
    from newsbias.report import run_compare

    from newsbias.io import sha256_file

    # the model's training manifest records its prep's outputs, as `newsbias train` on a prep directory writes them
    manifest = json.loads((uncalibrated / "manifest.json").read_text())
    manifest["data"]["prep_meta"] = {"path": str(planted_data_dir / "prep_meta.json"), "outputs": {
        name: {"sha256": sha256_file(planted_data_dir / name)} for name in ("train.jsonl", "val.jsonl", "test.jsonl")}}
    (uncalibrated / "manifest.json").write_text(json.dumps(manifest))
    renamed = tmp_path / "held_out.jsonl"  # the test split under another name: found by its content
    shutil.copy(planted_data_dir / "test.jsonl", renamed)
    assert main(["calibrate", "--adapter", str(uncalibrated), "--data", str(renamed)]) == 0
    assert f"calibrating on {renamed}, a test split (by its name or its content)" in caplog.text
    preds = tmp_path / "tuned.jsonl"
    run_predict(PredictConfig(adapter=str(uncalibrated), input=str(planted_data_dir), split="test", out=str(preds),
                              name="tuned", device="cpu"), progress=False)
    run_compare(CompareConfig(data=str(planted_data_dir), preds=[f"tuned={preds}"], out_dir=str(tmp_path / "r"),
                              html=False, metrics={"n_boot": 0}))
    assert "fitted on the compared articles' own file: its calibration is not held out" in (
        tmp_path / "r" / "report.md").read_text()


def test_calibrate_limit_fits_on_the_first_articles_only(uncalibrated, planted_data_dir):
    assert main(["calibrate", "--adapter", str(uncalibrated), "--data", str(planted_data_dir),
                 "calibrate.limit=7"]) == 0
    assert json.loads((uncalibrated / SETTINGS_FILE).read_text())["calibration"]["n"] == 7
