"""newsbias cv: outlet-grouped folds, per-fold scores that match the saved predictions, the random-fold reference."""

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from newsbias.cli import main
from newsbias.config import BaselineConfig, CvConfig
from newsbias.cv import fold_interval, make_folds, pooled_articles, round_probs, run_cv
from newsbias.errors import NewsbiasError
from newsbias.metrics import chance_f1
from newsbias.records import Prediction, read_predictions, write_predictions

from conftest import FILLER, PLANTED, write_jsonl

LABELS = ["left", "center", "right"]


def outlet_data(tmp_path, n_outlets=15, per_outlet=20, planted=True, seed=0, titled=False):
    """A prep-like directory: every outlet has one label and a house word; ``planted`` adds a label word.

    ``titled`` puts the label word in each article's title instead of its text.
    """
    rng = random.Random(seed)
    rows = []
    for o in range(n_outlets):
        lab = LABELS[o % 3]
        for i in range(per_outlet):
            toks = [rng.choice(FILLER) for _ in range(20)] + [f"house{o}"] * 3
            if planted and not titled:
                toks += [PLANTED[lab]] * 2
            rng.shuffle(toks)
            rows.append({"id": f"o{o}-{i}", "input": " ".join(toks), "output": lab, "outlet": f"outlet{o}.com"})
            if titled:
                rows[-1]["title"] = f"{rng.choice(FILLER)} {PLANTED[lab]}"
    rng.shuffle(rows)
    d = tmp_path / "data"
    for k, split in enumerate(("train", "val", "test")):
        write_jsonl(d / f"{split}.jsonl", rows[k::3])
    return d


def test_folds_are_outlet_disjoint_deterministic_and_label_stratified(tmp_path):
    frame = pooled_articles(outlet_data(tmp_path))
    fold = make_folds(frame, 5, seed=3)
    assert (fold >= 0).all() and set(fold) == set(range(5))
    assert frame.assign(fold=fold).groupby("outlet")["fold"].nunique().max() == 1  # no outlet in two folds
    assert (make_folds(frame, 5, seed=3) == fold).all()
    for i in range(5):  # every fold holds every label (15 outlets, 5 per label)
        assert set(frame["gold"][fold == i]) == set(LABELS)
    shared = make_folds(frame, 5, seed=3, grouped=False)
    assert frame.assign(fold=shared).groupby("outlet")["fold"].nunique().max() > 1


def test_cv_reads_titles_when_the_baseline_prepends_them(tmp_path):
    data = outlet_data(tmp_path, titled=True)
    assert pooled_articles(data, prepend_title=True)["text"].str.contains("|".join(PLANTED.values())).all()
    scores = {}
    for prepend in (False, True):
        cfg = CvConfig(data=str(data), folds=5, out_dir=str(tmp_path / f"cv-{prepend}"), random_reference=False)
        summary = run_cv(cfg, BaselineConfig(prepend_title=prepend, lr={"C_grid": [1.0, 10.0]}))
        scores[prepend] = {r["recipe"]: r["mean"] for r in summary["grouped"]}["tfidf-lr"]
    assert scores[True] >= 0.9 > scores[False] + 0.3  # the label word is only in the titles


def test_cv_scores_match_saved_predictions_and_reference_is_reported(tmp_path):
    data = outlet_data(tmp_path)
    cfg = CvConfig(data=str(data), folds=5, out_dir=str(tmp_path / "cv"))
    summary = run_cv(cfg, BaselineConfig(lr={"C_grid": [1.0, 10.0]}))
    by = {r["recipe"]: r for r in summary["grouped"]}
    assert by["tfidf-lr"]["mean"] >= 0.9 > by["majority"]["mean"]  # the planted word carries across outlets
    for row in by["tfidf-lr"]["folds"]:
        preds = read_predictions(tmp_path / "cv" / "preds" / f"tfidf-lr-fold{row['fold']}.jsonl")
        assert len(preds) == row["n_test"]
        again = f1_score([p.gold for p in preds], [p.pred for p in preds], labels=LABELS, average="macro",
                         zero_division=0)
        assert again == pytest.approx(row["macro_f1"], abs=1e-4)
        gold = [p.gold for p in preds]  # a uniform guess on this fold's label mix, beside its score
        assert row["chance"] == pytest.approx(chance_f1({lab: gold.count(lab) for lab in LABELS})["macro"], abs=1e-4)
    mean, lo, hi = fold_interval([r["macro_f1"] for r in by["tfidf-lr"]["folds"]])
    assert by["tfidf-lr"]["mean"] == pytest.approx(mean, abs=1e-4) and lo <= mean <= hi
    assert {r["recipe"] for r in summary["random"]} == {"majority", "tfidf-lr"}
    written = json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert written["grouped"] == summary["grouped"]
    md = (tmp_path / "cv" / "cv.md").read_text()
    assert "| tfidf-lr |" in md and "random folds" in md
    chance = np.mean([r["chance"] for r in by["tfidf-lr"]["folds"]])
    assert f"A uniform random guess scores {chance:.3f} macro-F1 on these folds' label mixes on average" in md


def test_a_cv_ensemble_averages_its_recipes_fold_by_fold(tmp_path):
    data = outlet_data(tmp_path, planted=False)  # house words only: neither recipe is near-perfect
    cfg = CvConfig(data=str(data), folds=3, out_dir=str(tmp_path / "cv"), test_limit=30,
                   ensembles=["both=majority+tfidf-lr"])
    summary = run_cv(cfg, BaselineConfig(lr={"C_grid": [1.0]}))
    both = summary["grouped"][-1]
    assert both["recipe"] == "both" and both["members"] == ["majority", "tfidf-lr"]
    for row in both["folds"]:
        i = row["fold"]
        a, b = (read_predictions(tmp_path / "cv" / "preds" / f"{r}-fold{i}.jsonl") for r in ("majority", "tfidf-lr"))
        mean = [[(x.probs[lab] + y.probs[lab]) / 2 for lab in LABELS] for x, y in zip(a, b)]
        by_hand = f1_score([x.gold for x in a], [LABELS[int(np.argmax(m))] for m in mean], labels=LABELS,
                           average="macro", zero_division=0)
        assert row["macro_f1"] == pytest.approx(by_hand, abs=1e-4) and row["n_test"] == len(a) == 30
        assert [p.id for p in read_predictions(tmp_path / "cv" / "preds" / f"both-fold{i}.jsonl")] == [x.id for x in a]
    ref = summary["random"][-1]  # the memorisation reference has the ensemble too, from the random folds' members
    assert ref["recipe"] == "both" and len(ref["folds"]) == 3 and ref["mean"] != both["mean"]
    row = next(line for line in (tmp_path / "cv" / "cv.md").read_text().splitlines() if line.startswith("| both |"))
    assert "vs_first" in both and row.endswith(f"| {ref['mean']:.3f} |")
    with pytest.raises(NewsbiasError, match="names model, not among the runs"):  # before any fold runs
        run_cv(cfg.model_copy(update={"ensembles": ["x=tfidf-lr+model"], "out_dir": str(tmp_path / "cv2")}),
               BaselineConfig())
    assert not (tmp_path / "cv2").exists()


def test_outlet_memorisation_shows_as_a_gap_between_random_and_grouped_folds(tmp_path):
    """Labels carried only by house words: random folds look perfect, unseen outlets are at chance."""
    data = outlet_data(tmp_path, planted=False)
    summary = run_cv(CvConfig(data=str(data), folds=5, recipes=["tfidf-lr"], save_predictions=False,
                              out_dir=str(tmp_path / "cv")), BaselineConfig())
    assert summary["random"][0]["mean"] >= 0.9
    assert summary["grouped"][0]["mean"] <= 0.5
    assert not (tmp_path / "cv" / "preds").exists()


def test_cv_errors_and_cli(tmp_path, capsys):
    data = outlet_data(tmp_path, n_outlets=4)
    with pytest.raises(NewsbiasError, match="needs at least 5 outlets; the data has 4"):
        run_cv(CvConfig(data=str(data), out_dir=str(tmp_path / "cv")), BaselineConfig())
    with pytest.raises(NewsbiasError, match="cv.data: .*train.jsonl not found"):
        run_cv(CvConfig(data=str(tmp_path / "nowhere"), out_dir=str(tmp_path / "cv")), BaselineConfig())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["cv", "--data", str(data), "--folds", "3", "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert main(["cv", "--data", str(data), "--folds", "3", "--out", str(tmp_path / "cv4")]) == 2
    assert "cv fold" in capsys.readouterr().err
    data = outlet_data(tmp_path / "more")
    assert main(["cv", "--data", str(data), "--folds", "3", "--out", str(tmp_path / "cv"), "cv.recipes=[tfidf-lr]"]) == 0
    out = capsys.readouterr().out
    assert "tfidf-lr: mean macro-F1" in out and np.isfinite(json.loads((tmp_path / "cv" / "cv.json").read_text())
                                                             ["grouped"][0]["mean"])


@pytest.mark.parametrize("tfidf", [{"max_features": 40, "min_df": 1},           # max_features binds, with ties
                                   {"max_features": None, "min_df": 2, "max_df": 0.5},
                                   {"analyzer": "char_wb", "ngram_min": 2, "ngram_max": 3, "max_features": 60}])
def test_counting_once_gives_each_round_the_tfidf_lr_of_its_own_articles(tmp_path, tfidf):
    """cv counts n-grams once and restricts them per round: the same vocabulary, vectors and probabilities
    as fitting the baseline's TfidfVectorizer pipeline on that round's articles."""
    from newsbias.baseline import count_ngrams, fit_tfidf_lr, fit_tfidf_lr_on_counts, kept_terms, predict_proba_labels

    frame = pooled_articles(outlet_data(tmp_path))
    cfg = BaselineConfig(tfidf=tfidf, lr={"C_grid": [0.3, 3.0]})
    fold = make_folds(frame, 5, seed=0)
    tr, va, te = fold != 0, fold == 1, fold == 0
    tr &= ~va
    counts = count_ngrams(frame["text"], cfg)
    pipe, _ = fit_tfidf_lr(frame[tr], cfg, frame[va])
    vocab = pipe.named_steps["tfidf"].vocabulary_
    assert len(kept_terms(counts[tr], cfg)) == len(vocab)
    probs = fit_tfidf_lr_on_counts(counts, tr, frame[tr], cfg, va, frame[va])(te)
    np.testing.assert_allclose(probs, predict_proba_labels(pipe, frame["text"][te]), atol=1e-6)
    np.testing.assert_array_equal(fit_tfidf_lr_on_counts(counts, tr, frame[tr], cfg, va, frame[va])(te), probs)


def test_counting_in_parallel_slices_gives_the_same_matrix(tmp_path, monkeypatch):
    """count_ngrams(jobs=3) joins three slices' vocabularies into the one-process matrix, entry for entry and in
    the same column order; a slice with no terms of its own (one-letter texts) joins as zero rows."""
    from newsbias import baseline

    good = pooled_articles(outlet_data(tmp_path))["text"].tolist()[:24]
    texts = good[:12] + ["a", "b c", "x"] * 4 + good[12:]  # three even slices: the middle one has no terms
    cfg = BaselineConfig()
    one = baseline.count_ngrams(texts, cfg)
    monkeypatch.setattr(baseline, "_PARALLEL_COUNT_MIN", 1)
    joined = baseline.count_ngrams(texts, cfg, jobs=3)
    assert one.shape[1] > 100 and joined.shape == one.shape and (joined != one).nnz == 0
    assert (joined[12:24] != 0).nnz == 0 and baseline._count_slice(texts[12:24], cfg)[1] == []


def test_rounds_on_worker_processes_log_as_the_cli_does(tmp_path, capfd):
    """A round on a worker process logs with the CLI's format and level (its warnings printed bare before)."""
    import logging

    from joblib.externals.loky import get_reusable_executor

    from newsbias.cv import cross_validate

    frame = pooled_articles(outlet_data(tmp_path))
    get_reusable_executor().shutdown(wait=True)  # fresh workers, whose stderr is this test's
    cross_validate("tfidf-lr", frame, make_folds(frame, 3, seed=0), BaselineConfig(lr={"C_grid": [1.0]}), jobs=2,
                   run={"log_level": logging.INFO})
    lines = capfd.readouterr().err.splitlines()
    assert sum(line.startswith("INFO newsbias.baseline: baseline: C=1 val macro-F1") for line in lines) == 3
    # the planted words classify most rounds' val perfectly: those warn that no temperature fits
    assert any(line.startswith("WARNING newsbias.metrics: every one of the") for line in lines)
    assert all(line.startswith(("INFO newsbias.", "WARNING newsbias.")) for line in lines)


def model_cv_config(tmp_path, model_dir, data, **cv):
    from newsbias.config import PredictConfig, TrainConfig

    train = TrainConfig.model_validate({
        "model": {"name_or_path": str(model_dir), "head": "lm"}, "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "prompt": {"max_length": 64, "chat_template": "off"}, "data": {"train_limit": 64},
        "optim": {"lr": 5e-3, "max_steps": 24, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.0},
        "eval": {"every_steps": 12, "patience": None, "batch_size": 16}, "progress": False})
    cfg = CvConfig(data=str(data), folds=3, recipes=["majority", "model"], random_reference=False,
                   out_dir=str(tmp_path / "cv"), test_limit=20, **cv)
    return cfg, train, PredictConfig(out="ignored.jsonl", batch_size=16)


def test_the_model_recipe_trains_each_round_on_other_outlets_and_resumes(tmp_path, tiny_qwen_dir, monkeypatch):
    from newsbias import train as train_module

    data = outlet_data(tmp_path, n_outlets=9)
    cfg, train, predict = model_cv_config(tmp_path, tiny_qwen_dir, data)
    summary = run_cv(cfg, BaselineConfig(), train, predict, progress=False)
    majority, model = summary["grouped"]
    assert [r["n_test"] for r in model["folds"]] == [r["n_test"] for r in majority["folds"]] == [20, 20, 20]
    assert model["mean"] > majority["mean"] + 0.3  # the planted word, learned on other outlets' articles
    diffs = [m["macro_f1"] - b["macro_f1"] for m, b in zip(model["folds"], majority["folds"])]
    assert model["vs_first"]["mean"] == pytest.approx(np.mean(diffs), abs=1e-4) and "vs_first" not in majority
    assert model["vs_first"]["ci95"][0] < np.mean(diffs) < model["vs_first"]["ci95"][1]
    assert f"| model | {model['mean']:.3f} |" in (tmp_path / "cv" / "cv.md").read_text()
    assert "change vs majority, paired by fold" in (tmp_path / "cv" / "cv.md").read_text()
    rounds = sorted((tmp_path / "cv-rounds").iterdir())
    assert [r.name.split("-")[1] for r in rounds] == ["fold0", "fold1", "fold2"]
    for r in rounds:  # no outlet of a round's test fold in its training or val rows
        outlets = {role: {json.loads(l)["outlet"] for l in (r / "data" / f"{role}.jsonl").read_text().splitlines()}
                   for role in ("train", "val", "test")}
        assert not outlets["test"] & (outlets["train"] | outlets["val"]) and outlets["train"]
        assert (r / "model" / "newsbias.json").is_file() and not (r / "model" / "checkpoints").exists()  # disk
    saved = [p.id for p in read_predictions(tmp_path / "cv" / "preds" / "model-fold0.jsonl")]
    assert saved == [p.id for p in read_predictions(tmp_path / "cv" / "preds" / "majority-fold0.jsonl")]

    # a second cv (another out_dir) reuses the finished rounds: nothing is trained again
    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("a finished round was trained again"))
    again = run_cv(cfg.model_copy(update={"out_dir": str(tmp_path / "cv2"), "work_dir": str(tmp_path / "cv-rounds")}),
                   BaselineConfig(), train, predict, progress=False)
    assert again["grouped"][1]["folds"] == [{**r, "seconds": again["grouped"][1]["folds"][i]["seconds"]}
                                            for i, r in enumerate(model["folds"])]
    # a changed setting is a new round, not a reuse
    changed = train.model_copy(update={"optim": train.optim.model_copy(update={"lr": 1e-3})})
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        run_cv(cfg.model_copy(update={"out_dir": str(tmp_path / "cv3"), "work_dir": str(tmp_path / "cv-rounds")}),
               BaselineConfig(), changed, predict, progress=False)


def test_the_model_recipe_needs_a_train_section(tmp_path, capsys):
    data = outlet_data(tmp_path)
    assert main(["cv", "--data", str(data), "--out", str(tmp_path / "cv"), "cv.recipes=[model]"]) == 2
    assert "cv.recipes has model but the config has no train: section" in capsys.readouterr().err
    assert not (tmp_path / "cv").exists()
    cfg, train, predict = model_cv_config(tmp_path, tmp_path / "no-model-needed", data)
    with pytest.raises(NewsbiasError, match="needs probabilities: set predict.mode=score"):
        run_cv(cfg, BaselineConfig(), train, predict.model_copy(update={"mode": "generate"}), progress=False)
    assert not (tmp_path / "cv").exists()


def test_a_round_reads_its_predictions_in_test_order_and_names_a_skipped_article(tmp_path):
    preds = tmp_path / "preds.jsonl"
    write_predictions(preds, [Prediction(id=i, pred="right", probs={"left": p, "center": 0.1, "right": 0.9 - p})
                              for i, p in (("a", 0.2), ("b", 0.3))])
    np.testing.assert_allclose(round_probs(preds, ["b", "a"], "grouped-fold0"), [[0.3, 0.1, 0.6], [0.2, 0.1, 0.7]])
    with pytest.raises(NewsbiasError, match=r"cv grouped-fold0: predict skipped 1 test article\(s\), first 'c'"):
        round_probs(preds, ["a", "c"], "grouped-fold0")


@pytest.mark.parametrize("override,key", [("cv.folds=2", "cv.folds"), ("cv.recipes=[]", "cv.recipes")])
def test_two_folds_or_no_recipe_are_refused_in_one_line(tmp_path, capsys, override, key):
    """Each round tests on one fold and validates on the next: with two, nothing is left to train on."""
    assert main(["cv", "--data", str(outlet_data(tmp_path)), override]) == 2
    err = capsys.readouterr().err
    assert key in err and len(err.strip().splitlines()) == 1


def test_prep_lines_keeps_unicode_line_breaks_inside_a_record(tmp_path):
    from newsbias.cv import prep_lines

    d = outlet_data(tmp_path, n_outlets=3, per_outlet=2)
    rows = [json.loads(line) for line in (d / "train.jsonl").read_text().splitlines()]
    rows[0]["source"] = "Daily\u2028Planet\u0085News"  # prep cleans the text, not the source name
    (d / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    lines = prep_lines(d)
    assert len(lines) == 6 and json.loads(lines[rows[0]["id"]])["source"] == "Daily\u2028Planet\u0085News"


def test_a_rounds_key_ignores_what_train_ignores_in_a_run():
    """Keeping more checkpoints must not retrain every cached round; a learning rate must."""
    from newsbias.config import PredictConfig, TrainConfig
    from newsbias.cv import ModelRecipe, _round_key

    ids = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}

    def key(**train: object) -> str:
        return _round_key(ModelRecipe(TrainConfig(**train), PredictConfig(out="p.jsonl"), Path("w"), {}), ids)

    assert key() == key(checkpoint={"keep": 5}, out_dir="elsewhere", progress=False)
    assert key() != key(optim={"lr": 1e-5})


def test_the_fold_interval_stays_within_what_the_score_can_be():
    from newsbias.cv import fold_interval

    mean, lo, hi = fold_interval([0.02, 0.5, 0.01])
    assert lo == 0.0 and 0 < mean < hi < 1
    _, lo, hi = fold_interval([-0.9, 0.9, 0.0], (-1.0, 1.0))
    assert (lo, hi) == (-1.0, 1.0)


def test_a_cv_config_needs_no_predict_out():
    from newsbias.config import load_config

    cfg = load_config(None, ["cv.data=d", "predict.batch_size=4"])
    assert cfg.predict is not None and cfg.predict.out is None


def test_data_without_outlets_cannot_be_outlet_grouped(tmp_path, caplog):
    d = outlet_data(tmp_path, n_outlets=6, per_outlet=10)
    for split in ("train", "val", "test"):
        p = d / f"{split}.jsonl"
        rows = [json.loads(l) for l in p.read_text().splitlines()]
        for i, r in enumerate(rows):
            if split != "train" or i % 2:
                r.pop("outlet")
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(NewsbiasError, match=r"articles name no outlet .*folds cannot keep outlets apart"):
        pooled_articles(d)
    few = outlet_data(tmp_path / "few", n_outlets=6, per_outlet=10)
    rows = [json.loads(l) for l in (few / "test.jsonl").read_text().splitlines()]
    rows[0].pop("outlet")
    (few / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(pooled_articles(few)) == 60 and "1 of 60 articles name no outlet" in caplog.text


def test_folds_without_a_label_are_named(caplog):
    from newsbias.cv import warn_folds_missing_labels

    frame = pd.DataFrame({"gold": ["left", "right", "center", "left", "right", "left"]})
    warn_folds_missing_labels(frame, np.array([0, 0, 0, 1, 1, 2]))
    assert "cv: 2 folds have no article of a label: fold 1 (center); fold 2 (center, right)" in caplog.text
    caplog.clear()
    warn_folds_missing_labels(frame, np.array([0, 0, 0, 0, 0, 0]))
    assert "no article of a label" not in caplog.text
