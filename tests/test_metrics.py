"""newsbias.metrics and `newsbias evaluate`: every number checked against arithmetic done by hand."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from newsbias.cli import main
from newsbias.config import EvaluateConfig
from newsbias.errors import NewsbiasError
from newsbias.metrics import (TEMPERATURE_BOUNDS, apply_temperature, bootstrap_macro_f1, chance_f1, compute_metrics,
                              evaluate, expected_calibration_error, fit_temperature, macro_f1, mcnemar_test,
                              paired_macro_f1_difference, per_outlet, prediction_frame)

L, C, R, X = 0, 1, 2, -1  # X = invalid prediction

# Six articles, two per class; one invalid output.
#   gold: L L C C R R
#   pred: L C C X R L
# left:   TP 1, predicted 2 (rows 1, 6), support 2 -> P 1/2, R 1/2, F1 1/2
# center: TP 1, predicted 2 (rows 2, 3), support 2 -> P 1/2, R 1/2, F1 1/2   (the invalid row is a miss)
# right:  TP 1, predicted 1 (row 5),    support 2 -> P 1,   R 1/2, F1 2/3
# macro-F1 = (1/2 + 1/2 + 2/3) / 3 = 5/9; weighted = macro (equal supports); accuracy 3/6
# micro over the labels: P = 3/5 (5 valid predictions), R = 3/6 -> F1 = 2*(3/5)*(1/2)/(3/5+1/2) = 6/11
# ordinal MAE over the 5 valid: |0-0|+|0-1|+|1-1|+|2-2|+|2-0| = 3 -> 3/5
GOLD6 = [L, L, C, C, R, R]
PRED6 = [L, C, C, X, R, L]


def write_preds(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def six_rows() -> list[dict]:
    names = ["left", "center", "right"]
    rows = []
    for i, (g, p) in enumerate(zip(GOLD6, PRED6)):
        rows.append({"id": f"a{i}", "pred": None if p == X else names[p], "probs": None, "gold": names[g],
                     "valid": p != X, "outlet": "x.com" if i < 4 else "y.com", "model": "m", "adapter": None})
    return rows


def test_hand_computed_six_rows():
    m = compute_metrics(GOLD6, PRED6, n_boot=0)
    assert m["n"] == 6 and m["n_invalid"] == 1
    assert m["invalid_rate"] == pytest.approx(1 / 6)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["per_class"]["left"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["center"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["per_class"]["right"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["macro_f1"] == pytest.approx(5 / 9)
    assert m["weighted_f1"] == pytest.approx(5 / 9)
    assert m["micro_f1"] == pytest.approx(6 / 11)
    assert m["ordinal_mae"] == pytest.approx(3 / 5) and m["ordinal_mae_n"] == 5
    assert m["confusion_matrix"]["columns"] == ["left", "center", "right", "invalid"]
    assert m["confusion_matrix"]["matrix"] == [[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
    assert m["pred_counts"] == {"left": 2, "center": 2, "right": 1, "invalid": 1}
    assert m["ece"] is None and m["macro_f1_ci"] is None
    assert "count as wrong" in m["notes"]["invalid"]


def test_the_one_macro_f1_agrees_with_the_report_on_names_and_ids():
    # what selects C, checkpoints and cv folds must be the report's macro-F1, absent labels included
    names = (["left", "right", "right", "center"], ["left", "right", "left", "left"])
    ids = [[{"left": 0, "center": 1, "right": 2}[x] for x in side] for side in names]
    expected = (1 / 2 + 2 / 3 + 0) / 3  # left: P 1/3, R 1; right: P 1, R 1/2; center: 0
    assert macro_f1(*names) == pytest.approx(expected)
    assert macro_f1(*ids, labels=range(3)) == pytest.approx(expected)
    assert compute_metrics(*ids, n_boot=0)["macro_f1"] == pytest.approx(expected)
    assert macro_f1(["left", "right"], ["left", "right"]) == pytest.approx(2 / 3)  # center never seen: 0, not skipped


def test_micro_f1_equals_accuracy_without_invalid():
    gold = [L, L, C, R, R, R, C]
    pred = [L, C, C, R, L, R, R]
    m = compute_metrics(gold, pred, n_boot=0)
    assert m["micro_f1"] == pytest.approx(m["accuracy"]) == pytest.approx(4 / 7)


def test_class_absent_from_sample_scores_zero():
    # no center anywhere: its F1 is 0 (zero_division=0), so macro = (1 + 1 + 0) / 3
    m = compute_metrics([L, R], [L, R], n_boot=0)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == 1.0


def test_all_invalid():
    m = compute_metrics([L, C, R], [X, X, X], n_boot=50)
    assert m["accuracy"] == 0 and m["macro_f1"] == 0 and m["invalid_rate"] == 1
    assert m["ordinal_mae"] is None and m["ordinal_mae_n"] == 0


def test_ece_by_hand():
    # confidences .92 (right), .58 (wrong), .72 (right), .66 (wrong: argmax is right, gold left)
    probs = np.array([[.92, .04, .04], [.58, .32, .10], [.14, .72, .14], [.04, .30, .66]])
    gold = np.array([L, C, C, L])
    # 10 bins: each row alone in its bin -> (|1-.92| + |0-.58| + |1-.72| + |0-.66|) / 4 = 1.6 / 4
    assert expected_calibration_error(probs, gold, 10)["ece"] == pytest.approx(0.4)
    # 1 bin: |accuracy 1/2 - mean confidence 2.88/4| = .22
    assert expected_calibration_error(probs, gold, 1)["ece"] == pytest.approx(0.22)
    # 15 bins (the default): .58 -> (8/15, 9/15], .66 -> (9/15, 10/15], .72 -> (10/15, 11/15], .92 -> (13/15, 14/15]
    e15 = expected_calibration_error(probs, gold, 15)
    assert e15["ece"] == pytest.approx(0.4)
    assert [b["n"] for b in e15["bins"]] == [1, 1, 1, 1]


def test_ece_bin_edges_are_right_closed():
    # 0.7 sits exactly on an edge of 10 bins: it belongs to (0.6, 0.7], not (0.7, 0.8]
    e = expected_calibration_error(np.array([[.7, .2, .1]]), np.array([L]), 10)
    assert e["bins"][0]["low"] == pytest.approx(0.6)


def test_ece_in_compute_metrics_skips_rows_without_probs():
    probs = np.array([[.92, .04, .04], [np.nan] * 3, [.14, .72, .14]])
    m = compute_metrics([L, C, C], [L, X, C], probs=probs, n_boot=0, ece_bins=10)
    # rows 1 and 3: (|1-.92| + |1-.72|) / 2
    assert m["ece"] == pytest.approx(0.18)
    assert m["calibration"]["n"] == 2


def test_bootstrap_deterministic_and_contains_point():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 3, 600)
    pred = np.where(rng.random(600) < 0.6, gold, rng.integers(-1, 3, 600))
    a = bootstrap_macro_f1(gold, pred, n_boot=300, seed=7)
    b = bootstrap_macro_f1(gold, pred, n_boot=300, seed=7)
    c = bootstrap_macro_f1(gold, pred, n_boot=300, seed=8)
    assert a == b
    assert a != c
    point = compute_metrics(gold, pred, n_boot=0)["macro_f1"]
    assert a["low"] < point < a["high"]
    assert 0 < a["high"] - a["low"] < 0.2
    from newsbias.metrics import _percentile_ci

    scores = np.random.default_rng(2).normal(0.5, 0.05, 1000)
    ci = _percentile_ci(scores, 0.95, seed=0)  # 2.5 % in each tail, not 5 %
    assert (ci["low"], ci["high"]) == tuple(np.quantile(scores, [0.025, 0.975]))


def test_bootstrap_resample_matches_sklearn():
    # one resample's macro-F1 from confusion counts equals scikit-learn's on the same rows
    from sklearn.metrics import f1_score

    from newsbias.metrics import _f1_from_counts
    rng = np.random.default_rng(3)
    gold = rng.integers(0, 3, 200)
    pred = rng.integers(-1, 3, 200)
    cm = np.zeros((3, 4), dtype=int)
    for g, p in zip(gold, pred):
        cm[g, 3 if p < 0 else p] += 1
    ours = _f1_from_counts(cm).mean()
    ref = f1_score(gold, pred, labels=[0, 1, 2], average="macro", zero_division=0)
    assert ours == pytest.approx(ref)


def test_bootstrap_fast():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 10_000)
    pred = rng.integers(0, 3, 10_000)
    t = time.perf_counter()
    bootstrap_macro_f1(gold, pred, n_boot=1000, seed=0)
    assert time.perf_counter() - t < 10  # about 0.3 s on 2 cores


def test_per_outlet():
    rows = per_outlet(np.array(GOLD6), np.array(PRED6), ["x", "x", "x", "x", "y", "y"])
    assert [r["outlet"] for r in rows] == ["x", "x"][:1] + ["y"]
    x, y = rows
    assert x["n"] == 4 and x["accuracy"] == pytest.approx(0.5) and x["invalid"] == 1
    assert y["n"] == 2 and y["accuracy"] == pytest.approx(0.5)
    assert y["label"] == "right" and set(y) == {"outlet", "n", "label", "accuracy", "invalid"}
    mixed = per_outlet(np.array([0, 2, 2, 1]), np.array([0, 2, 2, 1]), ["z"] * 4)
    assert mixed[0]["label"] == "right"  # the outlet's most common gold label


def test_read_predictions(tmp_path):
    frame, info = prediction_frame(write_preds(tmp_path / "p.jsonl", six_rows()))
    assert list(frame["gold"]) == GOLD6 and list(frame["pred"]) == PRED6
    assert info["rows_scored"] == 6 and info["skipped_no_gold"] == 0


def test_evaluate_writes_json(tmp_path):
    rows = six_rows()
    p = write_preds(tmp_path / "run.jsonl", rows)
    m = evaluate(EvaluateConfig(preds=str(p), n_boot=200, by_outlet=True))
    out = tmp_path / "run.metrics.json"
    assert m["out"] == str(out)
    saved = json.loads(out.read_text())
    assert saved["macro_f1"] == pytest.approx(5 / 9)
    assert saved["macro_f1_ci"]["n_boot"] == 200
    assert saved["model"] == "m"
    assert [r["outlet"] for r in saved["by_outlet"]] == ["x.com", "y.com"]
    assert "invalid" in saved["notes"]


def test_evaluate_with_probs(tmp_path):
    names = ["left", "center", "right"]
    probs = [[.92, .04, .04], [.58, .32, .10], [.14, .72, .14], [.04, .30, .66]]
    gold = [L, C, C, L]
    rows = [{"id": i, "pred": names[int(np.argmax(p))], "probs": dict(zip(names, p)), "gold": names[g],
             "valid": True, "outlet": None, "model": "m", "adapter": None} for i, (p, g) in enumerate(zip(probs, gold))]
    m = evaluate(EvaluateConfig(preds=str(write_preds(tmp_path / "p.jsonl", rows)), n_boot=0, ece_bins=10))
    assert m["ece"] == pytest.approx(0.4)


@pytest.mark.parametrize("mutate, message", [
    (lambda rows: rows[2].update(gold="purple"), "line 3: gold label 'purple'"),
    (lambda rows: rows[1].update(pred="LEFT"), "line 2: predicted label 'LEFT'"),
    (lambda rows: rows[4].update(gold=None), "line 5: no gold label"),
    (lambda rows: rows[5].update(id="a0"), "id 'a0' already seen on line 1"),
    (lambda rows: rows[0].update(probs={"left": 1.0}), "line 1: probs must map"),
])
def test_bad_rows_are_clear_errors(tmp_path, mutate, message):
    rows = six_rows()
    mutate(rows)
    with pytest.raises(NewsbiasError, match=message.replace("(", r"\(")):
        prediction_frame(write_preds(tmp_path / "p.jsonl", rows))


def test_missing_gold_skip_is_counted(tmp_path):
    rows = six_rows()
    rows[0]["gold"] = None
    m = evaluate(EvaluateConfig(preds=str(write_preds(tmp_path / "p.jsonl", rows)), n_boot=0, missing_gold="skip"))
    assert m["n"] == 5 and m["preds"]["skipped_no_gold"] == 1


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(NewsbiasError, match="is empty"):
        prediction_frame(tmp_path / "empty.jsonl")
    with pytest.raises(NewsbiasError, match="not found"):
        prediction_frame(tmp_path / "nope.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": 1, "gold": "left", "pred": "left"}\n{not json\n')
    with pytest.raises(NewsbiasError, match="line 2: not valid JSON"):
        prediction_frame(tmp_path / "bad.jsonl")


def test_cli_evaluate(tmp_path, capsys):
    p = write_preds(tmp_path / "p.jsonl", six_rows())
    out = tmp_path / "m.json"
    assert main(["evaluate", "--preds", str(p), "--out", str(out), "--n-boot", "100", "--by-outlet"]) == 0
    assert re.search(r"macro-F1 0\.556 \[[\d.]+, [\d.]+\], outlets resampled \[[\d.]+, [\d.]+\] \(2 outlets\)",
                     capsys.readouterr().out)
    assert json.loads(out.read_text())["by_outlet"]
    assert main(["evaluate", "--preds", str(tmp_path / "missing.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["evaluate"]) == 2
    assert "--preds" in capsys.readouterr().err


def test_one_article_gets_no_interval(tmp_path, capsys):
    p = write_preds(tmp_path / "p.jsonl", six_rows()[:1])
    assert main(["evaluate", "--preds", str(p), "--out", str(tmp_path / "m.json"), "--n-boot", "100"]) == 0
    assert "(no interval for one article)" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["macro_f1_ci"] is None
    assert compute_metrics(GOLD6[:2], PRED6[:2], n_boot=50)["macro_f1_ci"] is not None
    assert main(["compare", "--preds", f"a={p}", f"b={p}", "--out", str(tmp_path / "r"), "compare.metrics.n_boot=100"]) == 0
    assert "interval" in (tmp_path / "r" / "report.md").read_text()


def test_outlet_bootstrap_is_wider_when_outlets_are_uniform_blocks():
    """Each outlet all right or all wrong: resampling outlets must show far more spread than articles."""
    from newsbias.metrics import bootstrap_macro_f1_by_group, compute_metrics

    gold, pred, outlets = [], [], []
    for o in range(12):
        lab = o % 3
        right = o % 2 == 0
        for _ in range(50):
            gold.append(lab)
            pred.append(lab if right else (lab + 1) % 3)
            outlets.append(f"outlet{o}")
    gold, pred = np.array(gold), np.array(pred)
    m = compute_metrics(gold, pred, outlets=outlets, n_boot=500, seed=1)
    art, out = m["macro_f1_ci"], m["macro_f1_ci_outlets"]
    assert out["n_groups"] == 12 and out["low"] <= m["macro_f1"] <= out["high"]
    assert (out["high"] - out["low"]) > 3 * (art["high"] - art["low"])
    again = bootstrap_macro_f1_by_group(gold, pred, outlets, n_boot=500, seed=1)
    assert again["low"] == out["low"] and again["high"] == out["high"]
    assert bootstrap_macro_f1_by_group(gold, pred, ["one"] * len(gold)) is None


def test_per_class_intervals_share_the_macro_resamples():
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 3, 400)
    pred = np.where(rng.random(400) < 0.7, gold, rng.integers(-1, 3, 400))
    m = compute_metrics(gold, pred, n_boot=200, seed=4)
    assert m["macro_f1_ci"] == bootstrap_macro_f1(gold, pred, n_boot=200, seed=4)
    for lab in ("left", "center", "right"):
        ci = m["per_class_f1_ci"][lab]
        assert ci["low"] < m["per_class"][lab]["f1"] < ci["high"] and ci["n_boot"] == 200
    assert compute_metrics(gold, pred, n_boot=0)["per_class_f1_ci"] is None


def test_paired_difference_is_paired():
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 3, 500)
    a = np.where(rng.random(500) < 0.7, gold, (gold + 1) % 3)
    same = paired_macro_f1_difference(gold, a, a, n_boot=100)
    assert same["diff"] == 0 and same["ci"]["low"] == same["ci"]["high"] == 0  # one resample scores both
    b = a.copy()
    b[:20] = np.where(b[:20] == gold[:20], (gold[:20] + 1) % 3, b[:20])  # b: a few more errors than a
    d = paired_macro_f1_difference(gold, a, b, n_boot=300, seed=1)
    assert d["diff"] == pytest.approx(compute_metrics(gold, a, n_boot=0)["macro_f1"]
                                      - compute_metrics(gold, b, n_boot=0)["macro_f1"])
    assert 0 < d["ci"]["low"] <= d["diff"] <= d["ci"]["high"]
    # unpaired intervals of a and b overlap although the paired one excludes zero
    ca, cb = bootstrap_macro_f1(gold, a, n_boot=300, seed=1), bootstrap_macro_f1(gold, b, n_boot=300, seed=1)
    assert cb["high"] > ca["low"]
    assert paired_macro_f1_difference(gold, a, b, n_boot=0)["ci"] is None


def test_mcnemar_table_by_hand():
    from statsmodels.stats.contingency_tables import mcnemar

    #        gold  L  L  C  C  R  R ; a right on 0, 1, 2, 4 ; b right on 0, 3, 4 (a's invalid row 3 is wrong)
    a = np.array([L, L, C, X, R, C])
    b = np.array([L, R, L, C, R, L])
    res = mcnemar_test(np.array(GOLD6), a, b)
    assert res["table"] == [[2, 2], [1, 1]] and res["only_a_right"] == 2 and res["only_b_right"] == 1
    assert res["method"] == "exact binomial"
    assert res["p_value"] == pytest.approx(mcnemar(np.array([[2, 2], [1, 1]]), exact=True).pvalue) == pytest.approx(1.0)


def test_chance_f1_and_outlet_labels():
    chance = chance_f1({"left": 50, "center": 30, "right": 20})
    # precision = share, recall = 1/3: left 2 * .5 * (1/3) / (.5 + 1/3) = 0.4
    assert chance["per_class"]["left"] == pytest.approx(0.4) and chance["per_class"]["right"] == pytest.approx(0.25)
    assert chance["macro"] == pytest.approx((0.4 + 6 / 19 + 0.25) / 3)
    assert chance_f1({"left": 3, "center": 0, "right": 3})["per_class"]["center"] == 0
    rows = per_outlet(np.array(GOLD6), np.array(PRED6), ["x", "x", "x", "x", "y", "y"])
    assert [r["label"] for r in rows] == ["left", "right"]  # x: L L C C -> tie, the first; y: R R


def test_temperature_scaling_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(6000, 3))
    p = np.exp(z / 2.5) / np.exp(z / 2.5).sum(1, keepdims=True)
    gold = np.array([rng.choice(3, p=row) for row in p])
    fit = fit_temperature(z, gold)
    assert fit["temperature"] == pytest.approx(2.5, rel=0.08) and not fit["at_bound"]
    assert fit["nll_calibrated"] < fit["nll"] and fit["ece_calibrated"] < fit["ece"] / 3
    # log-probabilities give the same fit as the logits behind them
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    assert fit_temperature(logp, gold)["temperature"] == pytest.approx(fit["temperature"], rel=1e-4)
    scaled = apply_temperature(z, fit["temperature"])
    assert (scaled.argmax(1) == z.argmax(1)).all() and np.allclose(scaled.sum(1), 1)


def test_no_temperature_is_fitted_on_a_val_set_the_model_gets_all_right(caplog):
    z = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 4.0]] * 5)
    with caplog.at_level("WARNING"):
        fit = fit_temperature(z, [0, 1, 2] * 5)
    assert fit["method"] == "none" and fit["temperature"] == 1.0 and "classified correctly" in caplog.text
    wrong = fit_temperature(z, [0, 1, 2] * 4 + [1, 2, 0])  # one row in five wrong, confidently: a finite, softer fit
    assert wrong["method"] == "temperature" and not wrong["at_bound"] and wrong["temperature"] > 1.0
    hopeless = fit_temperature(z, [1, 2, 0] * 5)  # every row wrong: as flat as the bound allows
    assert hopeless["temperature"] == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-3) and hopeless["at_bound"]
    with pytest.raises(NewsbiasError, match="non-finite"):
        fit_temperature(np.log(np.array([[1.0, 0.0, 0.0]])), [0])
    with pytest.raises(NewsbiasError, match="at least one"):
        fit_temperature(np.zeros((0, 3)), [])


def test_log_loss_is_scikit_learns_and_a_uniform_guess_scores_ln3():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(3)
    probs = rng.dirichlet([1, 1, 1], size=40)
    gold = rng.integers(0, 3, size=40)
    m = compute_metrics(gold, probs.argmax(1), probs=probs, n_boot=0)
    assert m["log_loss"] == pytest.approx(log_loss(gold, probs, labels=[0, 1, 2]), rel=1e-9)
    flat = compute_metrics(gold, np.zeros(40, dtype=int), probs=np.full((40, 3), 1 / 3), n_boot=0)
    assert flat["log_loss"] == pytest.approx(np.log(3)) and compute_metrics(gold, gold, n_boot=0)["log_loss"] is None


def test_a_paired_outcome_reads_the_same_test_from_either_side():
    from newsbias.metrics import paired_outcome

    test = {"a": "tuned", "b": "base", "diff": 0.2, "ci": {"low": 0.1, "high": 0.3},
            "ci_outlets": {"low": 0.05, "high": 0.4, "confidence": 0.9}, "mcnemar": {"only_a_right": 40, "only_b_right": 50}}
    mine = paired_outcome(test)
    assert (mine["other"], mine["outcome"], mine["over"], mine["confidence"]) == ("base", "better", "outlets", 0.9)
    assert mine["macro_f1_only"]  # better on macro-F1 while right on fewer articles
    theirs = paired_outcome(test, "base")
    assert (theirs["other"], theirs["outcome"], theirs["diff"]) == ("tuned", "worse", -0.2)
    assert (theirs["low"], theirs["high"]) == (-0.4, -0.05)
    assert theirs["macro_f1_only"] and theirs["only_mine_right"] == 50  # worse while right on more
    # the interval over outlets decides; without it the one over articles; without any, the sign of the difference
    assert paired_outcome({**test, "ci_outlets": {"low": -0.1, "high": 0.4}})["outcome"] == "tie"
    assert paired_outcome({**test, "ci_outlets": None})["outcome"] == "better"
    assert paired_outcome({**test, "ci_outlets": None, "ci": None, "diff": -0.1})["outcome"] == "tie"
    with pytest.raises(ValueError, match="not in the paired test"):
        paired_outcome(test, "other")


def test_confidence_auroc_says_whether_confidence_ranks_right_answers_above_wrong_ones():
    from sklearn.metrics import roc_auc_score

    from newsbias.metrics import confidence_auroc

    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2], [0.4, 0.35, 0.25], [0.34, 0.33, 0.33]])
    right = np.array([True, True, False, False])
    assert confidence_auroc(probs, right) == 1.0
    assert confidence_auroc(probs, ~right) == 0.0
    mixed = np.array([True, False, True, False])
    assert confidence_auroc(probs, mixed) == roc_auc_score(mixed, probs.max(axis=1)) == 0.75
    assert confidence_auroc(probs, np.ones(4, bool)) is None
    with_nan = np.vstack([probs, [np.nan] * 3])
    assert confidence_auroc(with_nan, np.append(mixed, True)) == 0.75  # rows without probabilities are left out


def test_scoring_articles_that_lack_a_label_says_what_macro_f1_then_counts(tmp_path, caplog):
    rows = [{"id": str(i), "pred": p, "gold": g, "probs": None} for i, (g, p) in
            enumerate([("left", "left"), ("right", "right"), ("left", "center"), ("right", "right"), ("left", "left"),
                       ("right", "left"), ("left", "left")])]
    m = evaluate(EvaluateConfig(preds=str(write_preds(tmp_path / "p.jsonl", rows)), n_boot=0))
    assert m["per_class"]["center"]["f1"] == 0.0
    assert "the 7 articles scored have no 'center' article: macro-F1 counts that label's F1 as 0" in caplog.text
