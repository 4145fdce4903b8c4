"""newsbias.baseline and `newsbias baseline`: planted-word data, majority class, files, bad input."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import joblib
import pandas as pd
import pytest

from newsbias.baseline import fit_tfidf_lr, run_baseline, split_frame
from newsbias.cli import main
from newsbias.config import BaselineConfig
from newsbias.errors import NewsbiasError
from newsbias.labels import LABELS
from newsbias.metrics import compute_metrics, prediction_frame

from conftest import ALLSIDES_JSONL, NO_DATA

FILLER = ("the a of to in and for on with as by at from that this it is was were be has had have will would said "
          "state city government people year week report news new law court plan policy vote house senate bill "
          "tax money health school police election campaign president governor mayor county federal").split()
PLANTED = {"left": "progressive", "center": "moderate", "right": "traditional"}


def planted_rows(n: int, seed: int, labels: list[str] | None = None, with_ids: bool = True) -> list[dict]:
    """Filler-word articles where one planted word (three times) decides the label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        lab = labels[i % len(labels)] if labels else LABELS[i % 3]
        words = [rng.choice(FILLER) for _ in range(30)]
        for _ in range(3):
            words.insert(rng.randrange(len(words) + 1), PLANTED[lab])
        row = {"instruction": "Classify.", "input": " ".join(words), "output": lab}
        if with_ids:
            row = {"id": f"s{seed}-{i}", **row, "outlet": f"outlet{i % 7}.com"}
        rows.append(row)
    return rows


def write_split_dir(d: Path, train: list[dict], val: list[dict], test: list[dict]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("val", val), ("test", test)):
        (d / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return d


@pytest.fixture()
def planted_dir(tmp_path) -> Path:
    return write_split_dir(tmp_path / "data", planted_rows(150, 0), planted_rows(45, 1), planted_rows(60, 2))


def test_tfidf_lr_learns_planted_word(planted_dir, tmp_path):
    out = tmp_path / "preds"
    manifests = run_baseline(BaselineConfig(data=str(planted_dir), out_dir=str(out), lr={"C_grid": [0.1, 1.0, 10.0]}))
    frame, _ = prediction_frame(out / "tfidf-lr.jsonl")
    m = compute_metrics(frame["gold"], frame["pred"], n_boot=0)
    assert m["macro_f1"] > 0.95
    man = manifests["tfidf-lr"]
    grid = {g["C"]: g["val_macro_f1"] for g in man["C"]["grid"]}
    assert sorted(grid) == [0.1, 1.0, 10.0]
    best = max(grid.values())
    assert man["C"]["C"] == min(c for c, f1 in grid.items() if f1 == best)  # val's best; ties: stronger penalty
    assert man["counts"]["rows"] == 60
    assert man["data"]["eval"]["rows"] == 60 and len(man["data"]["eval"]["sha256"]) == 64
    saved = json.loads((out / "tfidf-lr.manifest.json").read_text())
    assert saved["model"] == "tfidf-lr" and saved["config"]["tfidf"]["ngram_max"] == 2
    # the saved pipeline is reusable as it is
    pipe = joblib.load(out / "tfidf-lr.joblib")
    assert list(pipe.predict(["moderate moderate the state of the city moderate"])) == ["center"]


def test_c_is_the_one_val_scores_best_not_the_first_or_the_smallest(planted_dir, monkeypatch):
    import newsbias.baseline as baseline

    train, val = split_frame(planted_dir / "train.jsonl"), split_frame(planted_dir / "val.jsonl")
    scores = iter([0.4, 0.9, 0.6])  # val macro-F1 of C = 0.1, 1, 10 in turn
    monkeypatch.setattr(baseline, "macro_f1", lambda gold, pred: next(scores))
    _, selection = fit_tfidf_lr(train, BaselineConfig(lr={"C_grid": [0.1, 1.0, 10.0]}, calibrate="none"), val)
    assert selection["C"] == 1.0


def test_balanced_class_weights_reach_the_classifier(planted_dir):
    train, val = split_frame(planted_dir / "train.jsonl"), split_frame(planted_dir / "val.jsonl")
    skewed = pd.concat([train[train["gold"] == "left"], train[train["gold"] != "left"].head(6)])
    fits = {w: fit_tfidf_lr(skewed, BaselineConfig(lr={"C": 1.0, "class_weight": w}, calibrate="none"), val)[0]
            for w in ("balanced", "none")}
    assert fits["balanced"].named_steps["lr"].class_weight == "balanced"
    assert fits["none"].named_steps["lr"].class_weight is None
    probs = {w: f.predict_proba(val["text"]) for w, f in fits.items()}
    left = list(fits["none"].classes_).index("left")
    assert probs["none"][:, left].mean() > probs["balanced"][:, left].mean() + 0.01  # the majority counts less


def test_lr_tolerance_decides_where_the_solver_stops(planted_dir):
    """baseline.lr.tol reaches the solver: a tighter tolerance runs more iterations to the same labels."""
    train, val = split_frame(planted_dir / "train.jsonl"), split_frame(planted_dir / "val.jsonl")
    fits = {tol: fit_tfidf_lr(train, BaselineConfig(lr={"C": 100.0, "tol": tol}, calibrate="none"), val)[0]
            for tol in (1e-2, 1e-8)}
    loose, tight = (fits[t].named_steps["lr"] for t in (1e-2, 1e-8))
    assert (loose.tol, tight.tol) == (1e-2, 1e-8)
    assert tight.n_iter_[0] > loose.n_iter_[0]
    assert list(fits[1e-2].predict(val["text"])) == list(fits[1e-8].predict(val["text"])) == list(val["gold"])


def test_newton_cg_lands_on_the_optimum_where_lbfgs_stops_short(planted_dir):
    """baseline.lr.solver reaches the estimator; at the default settings newton-cg's weights sit on the
    optimum (an lbfgs fit run to 1e-10), where lbfgs at scikit-learn's 1e-4 stops far from it."""
    import numpy as np

    train = split_frame(planted_dir / "train.jsonl")

    def coef(**lr):
        cfg = BaselineConfig(lr={"C": 100.0, **lr}, calibrate="none")
        fitted = fit_tfidf_lr(train, cfg)[0].named_steps["lr"]
        assert (fitted.solver, fitted.tol) == (cfg.lr.solver, cfg.lr.tol)
        return fitted.coef_

    optimum = coef(solver="lbfgs", tol=1e-10, max_iter=100_000)
    default, loose = coef(), coef(solver="lbfgs", tol=1e-4)
    assert (BaselineConfig().lr.solver, BaselineConfig().lr.tol) == ("newton-cg", 1e-6)
    assert np.abs(default - optimum).max() < np.abs(loose - optimum).max() / 100


def test_a_warm_started_c_path_lands_on_each_optimum_in_fewer_steps(planted_dir):
    """baseline.lr.C_grid fits C from small to large, each from the previous optimum: every fit still sits on
    its own optimum (as close as a fit from zero), and the path takes fewer Newton steps than fits from zero."""
    import numpy as np
    from sklearn.base import clone

    from newsbias.baseline import build_tfidf_lr, canonical, fit_path

    train = split_frame(planted_dir / "train.jsonl")
    pipe = build_tfidf_lr(BaselineConfig(), 1.0)
    x = canonical(pipe.named_steps["tfidf"].fit_transform(train["text"]))
    y = train["gold"].sample(frac=1.0, random_state=0).to_numpy()  # labels the words cannot separate: a real path
    lr = pipe.named_steps["lr"]
    path = fit_path(lr, [100.0, 1.0, 10.0], x, y)
    assert list(path) == [1.0, 10.0, 100.0] and not any(m.warm_start for m in path.values())
    cold = {C: clone(lr).set_params(C=C).fit(x, y) for C in path}
    for C, fitted in path.items():
        optimum = clone(lr).set_params(C=C, solver="lbfgs", tol=1e-10, max_iter=100_000).fit(x, y).coef_
        assert np.abs(fitted.coef_ - optimum).max() <= 2 * np.abs(cold[C].coef_ - optimum).max() + 1e-6
    assert sum(m.n_iter_[0] for m in path.values()) < sum(m.n_iter_[0] for m in cold.values())


@pytest.mark.parametrize("tfidf", [{"max_features": 40}, {"max_features": None, "min_df": 1},
                                   {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 4, "max_features": 300},
                                   {"stop_words": "english", "max_features": 60}])
def test_counting_on_several_cores_fits_the_vectoriser_fit_would(planted_dir, monkeypatch, tmp_path, tfidf):
    """baseline.jobs > 1 counts the training texts in parallel and hands the vectoriser its vocabulary and idf:
    the same state as TfidfVectorizer.fit, the same training matrix, the same vectors and probabilities for new
    texts, and a saved pipeline that reloads as such."""
    import numpy as np

    from newsbias import baseline

    train, test = split_frame(planted_dir / "train.jsonl"), split_frame(planted_dir / "test.jsonl")
    monkeypatch.setattr(baseline, "_PARALLEL_COUNT_MIN", 1)
    one, _ = fit_tfidf_lr(train, BaselineConfig(tfidf=tfidf, jobs=1, calibrate="none"))
    many, _ = fit_tfidf_lr(train, BaselineConfig(tfidf=tfidf, jobs=3, calibrate="none"))
    a, b = one.named_steps["tfidf"], many.named_steps["tfidf"]
    assert b.vocabulary_ == a.vocabulary_ and len(a.vocabulary_) > 20 and b.get_params() == a.get_params()
    assert b.fixed_vocabulary_ is False and (b.transform(train["text"]) != a.transform(train["text"])).nnz == 0
    np.testing.assert_array_equal(b.idf_, a.idf_)
    np.testing.assert_array_equal(many.predict_proba(test["text"]), one.predict_proba(test["text"]))
    joblib.dump(many, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict_proba(test["text"]),
                                  one.predict_proba(test["text"]))


def test_prediction_record_format(planted_dir, tmp_path):
    run_baseline(BaselineConfig(data=str(planted_dir), out_dir=str(tmp_path / "p")))
    first = json.loads((tmp_path / "p" / "tfidf-lr.jsonl").read_text().splitlines()[0])
    assert set(first) == {"id", "pred", "probs", "gold", "valid", "outlet", "model", "adapter"}
    assert first["id"] == "s2-0" and first["valid"] is True and first["adapter"] is None
    assert set(first["probs"]) == set(LABELS)
    assert sum(first["probs"].values()) == pytest.approx(1.0, abs=1e-5)
    assert first["pred"] == max(first["probs"], key=first["probs"].get)


def test_limit_predicts_the_first_articles(planted_dir, tmp_path):
    run_baseline(BaselineConfig(data=str(planted_dir), out_dir=str(tmp_path / "p"), limit=5))
    test_ids = [json.loads(l)["id"] for l in (planted_dir / "test.jsonl").read_text().splitlines()][:5]
    for name in ("majority", "tfidf-lr"):
        assert [json.loads(l)["id"] for l in (tmp_path / "p" / f"{name}.jsonl").read_text().splitlines()] == test_ids


def test_majority_predicts_majority(tmp_path):
    train = planted_rows(40, 0, labels=["right", "right", "left", "center", "right"])  # 24 right, 8 left, 8 center
    d = write_split_dir(tmp_path / "d", train, planted_rows(9, 1), planted_rows(30, 2))
    manifests = run_baseline(BaselineConfig(data=str(d), out_dir=str(tmp_path / "p"), models=["majority"]))
    rows = [json.loads(x) for x in (tmp_path / "p" / "majority.jsonl").read_text().splitlines()]
    assert {r["pred"] for r in rows} == {"right"}
    assert rows[0]["probs"] == {"left": 0.2, "center": 0.2, "right": 0.6}
    assert manifests["majority"]["prior"]["right"] == pytest.approx(0.6)
    assert not (tmp_path / "p" / "tfidf-lr.jsonl").exists()


def test_majority_tie_goes_to_first_label(planted_dir, tmp_path):
    run_baseline(BaselineConfig(data=str(planted_dir), out_dir=str(tmp_path / "p"), models=["majority"]))
    first = json.loads((tmp_path / "p" / "majority.jsonl").read_text().splitlines()[0])
    assert first["pred"] == "left"  # 50 / 50 / 50


def test_kaggle_style_rows_use_line_numbers(tmp_path):
    d = write_split_dir(tmp_path / "d", planted_rows(30, 0, with_ids=False), planted_rows(9, 1, with_ids=False),
                        planted_rows(6, 2, with_ids=False))
    run_baseline(BaselineConfig(data=str(d), out_dir=str(tmp_path / "p"), tfidf={"min_df": 1}))
    ids = [json.loads(x)["id"] for x in (tmp_path / "p" / "tfidf-lr.jsonl").read_text().splitlines()]
    assert ids == ["1", "2", "3", "4", "5", "6"]  # one id rule everywhere: strings, as predict writes them


def test_unlabeled_split_has_null_gold(planted_dir, tmp_path):
    rows = planted_rows(5, 3)
    for r in rows:
        del r["output"]
    (planted_dir / "eval_small.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_baseline(BaselineConfig(data=str(planted_dir), split="eval_small", out_dir=str(tmp_path / "p")))
    preds = [json.loads(x) for x in (tmp_path / "p" / "tfidf-lr.jsonl").read_text().splitlines()]
    assert [p["gold"] for p in preds] == [None] * 5


def test_bad_inputs(planted_dir, tmp_path):
    with pytest.raises(NewsbiasError, match="baseline.data not found"):
        run_baseline(BaselineConfig(data=str(tmp_path / "nowhere")))
    rows = planted_rows(30, 0)
    rows[4]["output"] = "far-out"
    (planted_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(NewsbiasError, match="line 5: label 'far-out'"):
        run_baseline(BaselineConfig(data=str(planted_dir), out_dir=str(tmp_path / "p")))
    rows[4]["output"] = "left"
    rows[7]["input"] = "  "
    (planted_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(NewsbiasError, match="line 8: no article text"):
        split_frame(planted_dir / "train.jsonl")
    (planted_dir / "train.jsonl").write_text("")
    with pytest.raises(NewsbiasError, match="is empty"):
        split_frame(planted_dir / "train.jsonl")


def test_one_label_and_c_grid_without_val(tmp_path):
    d = write_split_dir(tmp_path / "d", planted_rows(12, 0, labels=["left"]), [], planted_rows(6, 2))
    with pytest.raises(NewsbiasError, match="at least two labels"):
        run_baseline(BaselineConfig(data=str(d), out_dir=str(tmp_path / "p"), tfidf={"min_df": 1}))
    d2 = write_split_dir(tmp_path / "d2", planted_rows(30, 0), [], planted_rows(6, 2))
    (d2 / "val.jsonl").unlink()
    with pytest.raises(NewsbiasError, match="C_grid needs val.jsonl"):
        run_baseline(BaselineConfig(data=str(d2), out_dir=str(tmp_path / "p"), lr={"C_grid": [1.0, 2.0]}))


def test_cli_baseline(planted_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    assert main(["baseline", "--data", str(planted_dir), "--out", str(out), "baseline.tfidf.min_df=1"]) == 0
    assert "majority.jsonl, tfidf-lr.jsonl" in capsys.readouterr().out
    assert (out / "majority.manifest.json").is_file() and (out / "tfidf-lr.manifest.json").is_file()
    # a rerun killed after majority: no tfidf-lr of the earlier run is left beside the new majority
    import newsbias.baseline as baseline_mod

    fit = baseline_mod._fit_predict

    def killed_at_tfidf(name, *args):
        if name == "tfidf-lr":
            raise KeyboardInterrupt
        return fit(name, *args)

    monkeypatch.setattr(baseline_mod, "_fit_predict", killed_at_tfidf)
    assert main(["baseline", "--data", str(planted_dir), "--out", str(out), "baseline.tfidf.min_df=1"]) == 130
    monkeypatch.undo()
    assert (out / "majority.jsonl").is_file() and not (out / "tfidf-lr.jsonl").exists()
    assert not (out / "tfidf-lr.manifest.json").exists() and not (out / "tfidf-lr.joblib").exists()
    assert main(["baseline", "--data", str(planted_dir), "baseline.lr.C=-1"]) == 2
    assert "baseline.lr.C" in capsys.readouterr().err


def test_preset_validates():
    from newsbias.config import load_config

    root = Path(__file__).resolve().parents[1]
    text = (root / "configs" / "baseline.yaml").read_text()
    assert text.startswith("# newsbias baseline --config configs/baseline.yaml")
    cfg = load_config(root / "configs" / "baseline.yaml")
    assert cfg.baseline.models == ["majority", "tfidf-lr"] and cfg.evaluate and cfg.compare


def test_allsides_slice_beats_majority(tmp_path):
    src = ALLSIDES_JSONL
    if not src.is_file():
        pytest.skip(NO_DATA.format(src))
    rows = []
    with gzip.open(src, "rt", encoding="utf-8") as f:
        for line in f:
            a = json.loads(line)
            if a.get("content_original") and a.get("bias_text") in LABELS:
                rows.append({"id": a["ID"], "input": a["content_original"][:3000], "output": a["bias_text"],
                             "outlet": a.get("source")})
            if len(rows) == 1200:
                break
    random.Random(0).shuffle(rows)
    d = write_split_dir(tmp_path / "allsides", rows[:900], rows[900:1000], rows[1000:])
    run_baseline(BaselineConfig(data=str(d), out_dir=str(tmp_path / "p")))
    scores = {}
    for name in ("majority", "tfidf-lr"):
        frame, _ = prediction_frame(tmp_path / "p" / f"{name}.jsonl")
        scores[name] = compute_metrics(frame["gold"], frame["pred"], n_boot=0)["macro_f1"]
    assert scores["tfidf-lr"] > scores["majority"] + 0.15


def test_empty_vocabulary_is_clear(planted_dir, tmp_path):
    with pytest.raises(NewsbiasError, match="lower baseline.tfidf.min_df"):
        run_baseline(BaselineConfig(data=str(planted_dir), out_dir=str(tmp_path / "p"), tfidf={"min_df": 1000}))


def _noisy(rows: list[dict], seed: int, share: float = 0.3) -> list[dict]:
    """``rows`` with a share of labels replaced at random: no classifier gets them all right."""
    rng = random.Random(seed)
    return [{**r, "output": rng.choice(LABELS)} if rng.random() < share else r for r in rows]


def test_tfidf_lr_probabilities_carry_the_temperature_fitted_on_val(tmp_path):
    import numpy as np

    from newsbias.metrics import apply_temperature

    d = write_split_dir(tmp_path / "d", _noisy(planted_rows(150, 0), 1), _noisy(planted_rows(90, 1), 2),
                        planted_rows(30, 2))
    cal = run_baseline(BaselineConfig(data=str(d), out_dir=str(tmp_path / "cal"), models=["tfidf-lr"],
                                      tfidf={"min_df": 1}))["tfidf-lr"]
    raw = run_baseline(BaselineConfig(data=str(d), out_dir=str(tmp_path / "raw"), models=["tfidf-lr"],
                                      tfidf={"min_df": 1}, calibrate="none"))["tfidf-lr"]
    fit = cal["calibration"]
    assert raw["calibration"] is None and fit["n"] == 90 and not fit["at_bound"] and fit["temperature"] != 1.0
    assert fit["nll_calibrated"] < fit["nll"]
    read = lambda p: [json.loads(l) for l in p.read_text().splitlines()]  # noqa: E731
    cal_rows, raw_rows = read(tmp_path / "cal" / "tfidf-lr.jsonl"), read(tmp_path / "raw" / "tfidf-lr.jsonl")
    assert [r["pred"] for r in cal_rows] == [r["pred"] for r in raw_rows]  # one temperature keeps every label
    p_raw = np.array([[r["probs"][l] for l in LABELS] for r in raw_rows])
    p_cal = np.array([[r["probs"][l] for l in LABELS] for r in cal_rows])
    np.testing.assert_allclose(p_cal, apply_temperature(np.log(p_raw), fit["temperature"]), atol=2e-5)
    (d / "val.jsonl").unlink()  # no val: nothing to fit on, the probabilities stay as fitted
    assert run_baseline(BaselineConfig(data=str(d), out_dir=str(tmp_path / "noval"), models=["tfidf-lr"],
                                       tfidf={"min_df": 1}))["tfidf-lr"]["calibration"] is None
    pipe = joblib.load(tmp_path / "cal" / "tfidf-lr.joblib")  # the saved pipeline scores as the file says
    texts = [r["input"] for r in planted_rows(30, 2)]
    np.testing.assert_allclose(pipe.predict_proba(texts)[:, [list(pipe.classes_).index(l) for l in LABELS]],
                               p_cal, atol=1e-6)


def test_english_stop_words_are_dropped_before_n_grams_and_refused_for_characters(planted_dir):
    train = split_frame(planted_dir / "train.jsonl")
    cfg = BaselineConfig(tfidf={"stop_words": "english", "max_features": None, "min_df": 1}, calibrate="none")
    vocab = fit_tfidf_lr(train, cfg)[0].named_steps["tfidf"].vocabulary_
    kept = fit_tfidf_lr(train, BaselineConfig(tfidf={"max_features": None, "min_df": 1}, calibrate="none")
                        )[0].named_steps["tfidf"].vocabulary_
    assert "the" in kept and not any(w in ("the", "and", "of") for term in vocab for w in term.split())
    with pytest.raises(ValueError, match="stop_words=english applies to word n-grams only"):
        BaselineConfig(tfidf={"stop_words": "english", "analyzer": "char_wb"})
