"""newsbias.report and `newsbias compare`: files, CSV columns, tables, fixes / breaks, bad input."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from newsbias.cli import main
from newsbias.config import CompareConfig
from newsbias.errors import NewsbiasError
from newsbias.report import parse_pred_specs, run_compare, split_note

GOLD = ["left", "left", "center", "center", "right", "right"]
#          a0      a1      a2        a3        a4       a5
BASE = ["left", "right", "left", None, "right", "left"]   # right: a0, a4; a3 invalid
TUNED = ["left", "left", "center", "right", "left", "right"]  # fixes a1, a2, a5; breaks a4
MAJ = ["right"] * 6


def make_inputs(d: Path, split_mode: str | None = "by_source") -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    data = d / "data"
    data.mkdir()
    articles = [{"id": f"a{i}", "instruction": "Classify.", "output": g, "outlet": f"o{i % 2}",
                 "input": " ".join(f"w{i}_{k}" for k in range(80))} for i, g in enumerate(GOLD)]
    (data / "test.jsonl").write_text("".join(json.dumps(a) + "\n" for a in articles))
    if split_mode:
        (data / "prep_meta.json").write_text(json.dumps({"splits": {"mode": split_mode},
                                                         "leakage": {"shared_outlets": {"count": 3}}}))

    def preds(name: str, labels: list, probs: bool = False) -> Path:
        rows = []
        for i, (g, p) in enumerate(zip(GOLD, labels)):
            pr = {lab: (0.8 if lab == p else 0.1) for lab in ("left", "center", "right")} if probs and p else None
            rows.append({"id": f"a{i}", "pred": p, "probs": pr, "gold": g, "valid": p is not None,
                         "outlet": f"o{i % 2}", "model": name, "adapter": None})
        path = d / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    out = {"base": preds("qwen-base", BASE), "tuned": preds("qwen-tuned", TUNED, probs=True),
           "majority": preds("majority", MAJ, probs=True), "data": data}
    (d / "majority.manifest.json").write_text(json.dumps({"model": "majority", "config": {"seed": 1}}))
    return out


def compare_cfg(inp: dict[str, Path], out: Path, **kw) -> CompareConfig:
    preds = [f"base={inp['base']}", f"tuned={inp['tuned']}", str(inp["majority"])]
    return CompareConfig(preds=preds, data=str(inp["data"]), out_dir=str(out), metrics={"n_boot": 200}, **kw)


def test_compare_writes_everything(tmp_path):
    inp = make_inputs(tmp_path)
    res = run_compare(compare_cfg(inp, tmp_path / "report"))
    out = tmp_path / "report"
    for name in ("eval_compare.csv", "metrics.json", "report.md", "report.html", "per_class_f1.png",
                 "confusion_base.png", "confusion_tuned.png", "confusion_majority.png"):
        assert (out / name).is_file(), name
        assert name in res["files"]
    assert (out / "per_class_f1.png").read_bytes()[:4] == b"\x89PNG"

    csv = pd.read_csv(out / "eval_compare.csv")
    assert list(csv.columns) == ["id", "preview", "gold", "base", "tuned", "majority"]
    assert list(csv["id"]) == [f"a{i}" for i in range(6)]
    assert list(csv["gold"]) == GOLD
    assert list(csv["base"]) == [p or "invalid" for p in BASE]
    assert all(len(p.split()) == 50 for p in csv["preview"])
    assert csv["preview"][0].startswith("w0_0 w0_1")

    assert res["changes"] == {"fixed": 3, "broken": 1, "both_right": 1, "both_wrong": 1}
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["base"]["n_invalid"] == 1 and metrics["tuned"]["accuracy"] == pytest.approx(4 / 6)
    assert metrics["majority"]["macro_f1"] == pytest.approx((0 + 0 + 0.5) / 3)  # right: P 2/6, R 1 -> F1 1/2


def test_report_tables_and_sections(tmp_path):
    inp = make_inputs(tmp_path)
    run_compare(compare_cfg(inp, tmp_path / "r", n_examples=2))
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| model | macro-F1 | 95% CI | micro-F1 | accuracy | invalid rate |" in md
    assert "| majority | 0.167 |" in md
    assert "| base |" in md and "16.7%" in md  # base's invalid rate
    assert "| model | left F1 | center F1 | right F1 |" in md
    assert "tuned fixes **3** of base's errors and breaks **1**" in md
    assert "### Fixed (first 2)" in md and "### Broken (first 1)" in md
    assert "Outlet-disjoint split" in md
    assert "<details><summary>Manifest: majority</summary>" in md
    assert "- **base**:" in md and "(no manifest)" in md
    assert "![confusion matrix: tuned](confusion_tuned.png)" in md
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(list((tmp_path / "r").glob("*.png"))) >= 4  # self-contained
    assert "<table>" in page and "Manifest: majority" in page


def test_random_split_warns_and_outlets(tmp_path):
    inp = make_inputs(tmp_path, split_mode="random")
    cfg = compare_cfg(inp, tmp_path / "r", html=False)
    run_compare(cfg.model_copy(update={"metrics": cfg.metrics.model_copy(update={"by_outlet": True})}))
    md = (tmp_path / "r" / "report.md").read_text()
    # o0 holds a0, a2, a4: tuned right on a0, a2 -> 0.667; base right on a0, a4 -> 0.667; majority on a4
    assert "| outlet | label | n | base accuracy | tuned accuracy | majority accuracy |" in md
    assert re.search(r"\| o0 \| (left|center|right) \| 3 \| 0.667 \| 0.667 \| 0.333 \|", md)
    assert "Warning: random split" in md and "upper bound" in md
    assert not (tmp_path / "r" / "report.html").exists()
    assert "unknown" in split_note(None)["warning"]


def test_without_base_tuned_or_data(tmp_path):
    inp = make_inputs(tmp_path, split_mode=None)
    res = run_compare(CompareConfig(preds=[str(inp["majority"]), str(inp["tuned"])], out_dir=str(tmp_path / "r"),
                                    metrics={"n_boot": 0}))
    assert res["changes"] is None
    csv = pd.read_csv(tmp_path / "r" / "eval_compare.csv")
    assert list(csv.columns) == ["id", "preview", "gold", "majority", "qwen-tuned"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "fixes" not in md and "| – |" in md  # no interval with n_boot 0


def test_mismatched_ids(tmp_path):
    inp = make_inputs(tmp_path)
    lines = inp["tuned"].read_text().splitlines()
    inp["tuned"].write_text("\n".join(lines[:4]) + "\n")
    with pytest.raises(NewsbiasError, match=r"different articles .*tuned: 4 ids.*4 common.*--intersect"):
        run_compare(compare_cfg(inp, tmp_path / "r"))
    res = run_compare(compare_cfg(inp, tmp_path / "r", on_mismatch="intersect"))
    assert res["n"] == 4 and res["join"]["only_in"]["base"] == 2
    assert len(pd.read_csv(tmp_path / "r" / "eval_compare.csv")) == 4
    assert "common to all files" in (tmp_path / "r" / "report.md").read_text()


def test_gold_disagreement_and_bad_specs(tmp_path):
    inp = make_inputs(tmp_path)
    rows = [json.loads(x) for x in inp["majority"].read_text().splitlines()]
    rows[2]["gold"] = "right"
    inp["majority"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(NewsbiasError, match="disagree on the gold label of 1 article "):
        run_compare(compare_cfg(inp, tmp_path / "r"))
    with pytest.raises(NewsbiasError, match="both named 'x'"):
        parse_pred_specs([f"x={inp['base']}", f"x={inp['tuned']}"])
    with pytest.raises(NewsbiasError, match="not found"):
        parse_pred_specs(["base=nowhere.jsonl"])
    with pytest.raises(NewsbiasError, match="--preds"):
        parse_pred_specs([])


def test_data_file_must_match(tmp_path):
    inp = make_inputs(tmp_path)
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "zz", "input": "text", "output": "left"}) + "\n")
    with pytest.raises(NewsbiasError, match="6 predicted ids are not in"):
        run_compare(CompareConfig(preds=[str(inp["base"])], data=str(other), out_dir=str(tmp_path / "r")))
    arts = [json.loads(x) for x in (inp["data"] / "test.jsonl").read_text().splitlines()]
    arts[0]["output"] = "right"
    (inp["data"] / "test.jsonl").write_text("".join(json.dumps(a) + "\n" for a in arts))
    with pytest.raises(NewsbiasError, match="disagree with"):
        run_compare(compare_cfg(inp, tmp_path / "r"))


def test_kaggle_style_line_number_ids(tmp_path):
    # split rows without ids are keyed by line number, as baseline writes them
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"input": f"article {i} " * 5, "output": g}) + "\n" for i, g in enumerate(GOLD)))
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"id": i + 1, "pred": "left", "probs": None, "gold": g, "valid": True,
                                     "outlet": None, "model": "m", "adapter": None}) + "\n" for i, g in enumerate(GOLD)))
    run_compare(CompareConfig(preds=[str(p)], data=str(data), out_dir=str(tmp_path / "r"), metrics={"n_boot": 0}))
    csv = pd.read_csv(tmp_path / "r" / "eval_compare.csv")
    assert csv["preview"][1].startswith("article 1")


def test_cli_compare(tmp_path, capsys):
    inp = make_inputs(tmp_path)
    out = tmp_path / "cli"
    rc = main(["compare", "--preds", f"base={inp['base']}", f"tuned={inp['tuned']}", "--data", str(inp["data"]),
               "--out", str(out), "compare.metrics.n_boot=50"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "tuned fixes 3 and breaks 1" in text and "report.md" in text
    assert (out / "report.html").is_file()
    assert main(["compare", "--preds", str(tmp_path / "missing.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_damaged_manifest_or_prep_meta(tmp_path, capsys, caplog):
    inp = make_inputs(tmp_path)
    (tmp_path / "majority.manifest.json").write_bytes(b'{"model": "maj\xff"}')
    args = ["compare", "--preds", str(inp["majority"]), "--data", str(inp["data"]), "compare.metrics.n_boot=0"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert "majority.manifest.json is not a readable JSON object; left out" in caplog.text
    (inp["data"] / "prep_meta.json").write_text("{not json")
    assert main(args + ["--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "prep_meta.json is not valid JSON" in err and "Traceback" not in err


def test_ensemble_is_the_equal_weight_mean_of_its_members(tmp_path, capsys):
    inp = make_inputs(tmp_path)
    appendix = tmp_path / "timing.md"
    appendix.write_text("## Timing\n\n| stage | s |\n|---|---|\n| train | 12 |\n\nA <b>tag</b> and `code`.\n")
    out = tmp_path / "ens"
    rc = main(["compare", "--preds", f"tuned={inp['tuned']}", str(inp["majority"]), "--data", str(inp["data"]),
               "--out", str(out), "--ensemble", "ens=tuned+majority", "--by-outlet", "compare.metrics.n_boot=50",
               f"compare.appendix={appendix}"])
    assert rc == 0, capsys.readouterr().err
    csv = pd.read_csv(out / "eval_compare.csv")
    assert list(csv.columns)[-1] == "ens"
    # tuned puts 0.8 on its label, majority 0.8 on right: the mean's argmax is right unless they agree,
    # and ties (0.45 / 0.45) break towards the first label in order (np.argmax)
    order = ["left", "center", "right"]
    expected = []
    for t in TUNED:
        mean = [((0.8 if lab == t else 0.1) + (0.8 if lab == "right" else 0.1)) / 2 for lab in order]
        expected.append(order[mean.index(max(mean))])
    assert list(csv["ens"]) == expected
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert "macro_f1_ci_outlets" in metrics["ens"]
    report = (out / "report.md").read_text()
    assert "**ens**: equal-weight mean of the probabilities of tuned + majority" in report
    assert "## Timing" in report and "| train | 12 |" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()  # the appendix's Markdown rendered, its raw HTML escaped
    assert "<h2>Timing</h2>" in page and "<td>train</td>" in page and "<code>code</code>" in page
    assert "&lt;b&gt;tag&lt;/b&gt;" in page and "## Timing" not in page
    with pytest.raises(NewsbiasError, match="not among the runs"):
        run_compare(compare_cfg(inp, tmp_path / "bad", ensembles=["x=tuned+nope"]))
    with pytest.raises(NewsbiasError, match="has rows without probabilities"):
        run_compare(compare_cfg(inp, tmp_path / "bad2", ensembles=["x=tuned+base"]))
    with pytest.raises(NewsbiasError, match="two or more runs"):
        run_compare(compare_cfg(inp, tmp_path / "bad3", ensembles=["x=tuned"]))
    with pytest.raises(NewsbiasError, match="names tuned more than once"):
        run_compare(compare_cfg(inp, tmp_path / "bad4", ensembles=["x=tuned+tuned+majority"]))


ORDER = ["left", "center", "right"]


def write_run(path: Path, gold: list[str], right: set[int], adapter: str | None = None) -> Path:
    """A prediction file that is right on the rows in ``right`` and one class off elsewhere, with probabilities."""
    rows = []
    for i, g in enumerate(gold):
        p = g if i in right else ORDER[(ORDER.index(g) + 1) % 3]
        rows.append({"id": f"a{i}", "pred": p, "probs": {lab: (0.7 if lab == p else 0.15) for lab in ORDER},
                     "gold": g, "valid": True, "outlet": f"o{i % 4}", "model": path.stem, "adapter": adapter})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def three_runs(d: Path, adapter: str | None = None) -> tuple[list[str], list[Path]]:
    """60 articles. base is right on 0-19; tuned on 0-44 except 5 (fixes 25, breaks 1); tfidf-lr on 0-54."""
    gold = [ORDER[i % 3] for i in range(60)]
    base = write_run(d / "base.jsonl", gold, set(range(20)))
    tuned = write_run(d / "tuned.jsonl", gold, set(range(45)) - {5}, adapter=adapter)
    tfidf = write_run(d / "tfidf-lr.jsonl", gold, set(range(55)))
    return gold, [base, tuned, tfidf]


def test_verdict_says_beats_worse_or_neither_by_where_the_interval_lies():
    from newsbias.report import verdict

    def test(diff, low, high):
        return {"a": "t", "b": "tfidf-lr", "diff": diff, "ci": {"confidence": 0.95, "low": low, "high": high},
                "mcnemar": {"p_value": 0.5, "only_a_right": 10, "only_b_right": 5}}
    roles = {"tuned": "t", "baseline": "tfidf-lr"}
    said = [verdict({"x": test(d, lo, hi)}, roles, "tfidf-lr") for d, lo, hi in
            ((0.05, 0.01, 0.09), (-0.05, -0.09, -0.01), (-0.01, -0.05, 0.03))]
    assert [s.split(" (")[0].split(" by ")[0] for s in said] == ["t beats TF-IDF", "t is worse than TF-IDF",
                                                                  "t does not beat TF-IDF"]
    fewer = test(0.05, 0.01, 0.09)
    fewer["mcnemar"].update(only_a_right=274, only_b_right=299)
    assert verdict({"x": fewer}, roles, "tfidf-lr").endswith(
        "], on macro-F1 only: it is right on fewer articles (274 it alone gets right, 299 tfidf-lr alone).")
    more = test(-0.05, -0.09, -0.01)
    more["mcnemar"].update(only_a_right=299, only_b_right=274)
    assert verdict({"x": more}, roles, "tfidf-lr").endswith(
        "], on macro-F1 only: it is right on more articles (299 it alone gets right, 274 tfidf-lr alone).")
    assert verdict({"x": test(0.05, 0.01, 0.09)}, {**roles, "tuned_named": False, "tuned_name": "tuned"},
                   "tfidf-lr").startswith("No run is named tuned (compare.tuned), so the best run stands in: t beats")


def test_verdict_tuned_beats_base_and_is_worse_than_tfidf(tmp_path):
    from statsmodels.stats.contingency_tables import mcnemar

    _, (base, tuned, tfidf) = three_runs(tmp_path)
    res = run_compare(CompareConfig(preds=[f"base={base}", f"tuned={tuned}", f"tfidf-lr={tfidf}"],
                                    out_dir=str(tmp_path / "r"), metrics={"n_boot": 300}))
    v = res["verdict"]
    assert re.fullmatch(r"tuned beats base by \+0\.\d{3} macro-F1 \[95% CI over outlets \+0\.\d{3}, \+0\.\d{3}; over "
                        r"articles \+0\.\d{3}, \+0\.\d{3}; accuracy 0\.733 against 0\.333, McNemar p < 0\.001\]; is "
                        r"worse than TF-IDF \(tfidf-lr\) by -0\.\d{3} macro-F1 \[95% CI over outlets -0\.\d{3}, -0\.\d{3}; "
                        r"over articles -0\.\d{3}, -0\.\d{3}; accuracy 0\.733 against 0\.\d{3}, McNemar p < 0\.001\]\.",
                        v), v  # exact: 2 * 0.5 ** 11 = 0.00098
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.splitlines()[2] == f"**Verdict:** {v}"  # right under the title
    assert f"<strong>Verdict:</strong> {html.escape(v)}" in (tmp_path / "r" / "report.html").read_text()
    assert res["changes"] == {"fixed": 25, "broken": 1, "both_right": 19, "both_wrong": 15}
    assert "tuned fixes **25** of base's errors and breaks **1**" in md

    paired = json.loads((tmp_path / "r" / "metrics.json").read_text())["paired"]
    assert paired["base"]["mcnemar"]["table"] == [[19, 25], [1, 15]]  # 26 discordant: chi-square
    assert paired["baseline"]["mcnemar"]["table"] == [[44, 0], [11, 5]]  # 11 discordant: exact binomial
    for test, exact in ((paired["base"], False), (paired["baseline"], True)):
        ref = mcnemar(np.array(test["mcnemar"]["table"]), exact=exact, correction=True)
        assert test["mcnemar"]["p_value"] == pytest.approx(ref.pvalue, rel=1e-12)
        assert test["mcnemar"]["method"].startswith("exact" if exact else "chi-square")
        assert test["ci"]["low"] <= test["diff"] <= test["ci"]["high"]
    assert paired["base"]["ci"]["low"] > 0 and paired["baseline"]["diff"] < 0
    # the outlet interval, recomputed: the same 300 resamples of the 4 outlets, macro-F1 by scikit-learn
    from sklearn.metrics import f1_score

    runs = {n: [json.loads(l) for l in p.read_text().splitlines()] for n, p in (("tuned", tuned), ("base", base))}
    outlet = np.array([int(r["outlet"][1:]) for r in runs["tuned"]])
    diffs = []
    for pick in np.random.default_rng(0).integers(0, 4, size=(300, 4)):
        rows = np.concatenate([np.flatnonzero(outlet == o) for o in pick])
        f1 = {n: f1_score([runs[n][i]["gold"] for i in rows], [runs[n][i]["pred"] for i in rows], labels=ORDER,
                          average="macro", zero_division=0) for n in runs}
        diffs.append(f1["tuned"] - f1["base"])
    by_outlet = paired["base"]["ci_outlets"]
    assert by_outlet["n_groups"] == 4 and [by_outlet["low"], by_outlet["high"]] == pytest.approx(
        np.quantile(diffs, [0.025, 0.975]), abs=1e-9)
    assert "| tuned vs base | +" in md and "| 25 | 1 |" in md


def test_verdict_falls_back_to_first_and_best_run(tmp_path):
    _, (base, tuned, _) = three_runs(tmp_path)
    res = run_compare(CompareConfig(preds=[f"zero={base}", f"lora={tuned}"], out_dir=str(tmp_path / "r"),
                                    metrics={"n_boot": 0}))
    assert res["verdict"].startswith("No run is named tuned (compare.tuned), so the best run stands in: lora beats zero by +")
    assert "no interval" in res["verdict"] and res["verdict"].endswith("no baseline run named tfidf-lr to test against.")
    assert res["changes"] is None


def test_every_png_is_written_and_not_empty(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "train_log.jsonl").write_text(
        "".join(json.dumps({"type": "train", "step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 5))
        + json.dumps({"type": "eval", "step": 4, "val_loss": 0.5, "val_macro_f1": 0.6}) + "\n")
    _, (base, tuned, tfidf) = three_runs(tmp_path, adapter=str(adapter))
    res = run_compare(CompareConfig(preds=[f"base={base}", f"tuned={tuned}", f"tfidf-lr={tfidf}"],
                                    out_dir=str(tmp_path / "r"), metrics={"n_boot": 50, "by_outlet": True}))
    pngs = [f for f in res["files"] if f.endswith(".png")]
    assert set(pngs) == {"confusion_base.png", "confusion_tuned.png", "confusion_tfidf-lr.png", "per_class_f1.png",
                         "reliability.png", "per_outlet.png", "learning_curve_tuned.png"}
    for f in pngs:
        data = (tmp_path / "r" / f).read_bytes()
        assert data[:4] == b"\x89PNG" and len(data) > 2000, f
    assert sorted(p.name for p in (tmp_path / "r").glob("*.png")) == sorted(pngs)
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(pngs)
    md = (tmp_path / "r" / "report.md").read_text()
    assert all(f"]({f})" in md for f in pngs)
    assert "Expected calibration error: base 0.367, tuned" in md  # confidence 0.7, accuracy 1/3


def _md_rows(md: str, first_header: str) -> list[list[str]]:
    lines = md[md.index(f"| {first_header} |"):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows


def _html_rows(page: str, first_header: str) -> list[list[str]]:
    table = page[page.index(f"<th>{first_header}</th>"):]
    body = table[table.index("<tbody>"):table.index("</tbody>")]
    return [[html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)] for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_md_and_html_carry_the_same_warnings_and_numbers(tmp_path):
    inp = make_inputs(tmp_path, split_mode="random")
    meta = json.loads((inp["data"] / "prep_meta.json").read_text())
    (inp["data"] / "prep_meta.json").write_text(json.dumps({**meta, "outputs": {"test.jsonl": {"sha256": "0" * 64}}}))
    rows = [json.loads(x) for x in inp["tuned"].read_text().splitlines()]
    rows[0]["gold"] = None  # skipped, so the runs also cover different ids
    inp["tuned"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compare_cfg(inp, tmp_path / "r", on_mismatch="intersect")
    run_compare(cfg.model_copy(update={"metrics": cfg.metrics.model_copy(update={"missing_gold": "skip"})}))
    md = (tmp_path / "r" / "report.md").read_text()
    page = (tmp_path / "r" / "report.html").read_text()
    md_warn = re.findall(r"^> \*\*Warning: (.+?)\.\*\* (.+)$", md, flags=re.M)
    html_warn = [tuple(html.unescape(x) for x in w)
                 for w in re.findall(r'<p class="warning"><strong>Warning: (.+?)\.</strong> (.+?)</p>', page)]
    assert [t for t, _ in md_warn] == ["random split", "split file changed", "not every article",
                                       "rows without gold skipped"]
    assert md_warn == html_warn
    assert "{'" not in md and "{" not in "".join(t for _, t in md_warn)  # no raw Python dicts
    for header in ("model", "A vs B", "id"):  # results and per-class, paired tests, fixed / broken
        assert _md_rows(md, header) == _html_rows(page, header), header
    # a1-a5: base is right on a4 only (right: P 1/2, R 1/2) -> macro-F1 (0 + 0 + 1/2) / 3
    assert _md_rows(md, "model")[0][:2] == ["base", "0.167"]
    for sentence in ("Invalid outputs count as wrong. The interval is a percentile bootstrap over articles (200",
                     "5 articles (gold: left 1, center 2, right 2) of the 6 in the split file."):
        assert sentence in md and sentence in page


def test_learning_curve_from_the_adapter_dir_or_skipped(tmp_path, caplog):
    with_log = tmp_path / "with-log"
    with_log.mkdir()
    (with_log / "train_log.jsonl").write_text(
        json.dumps({"type": "train", "step": 1, "loss": 1.1}) + "\nnot json\n"
        + json.dumps({"type": "eval", "step": 1, "val_loss": 1.0, "val_macro_f1": 0.4}) + "\n")
    without_log = tmp_path / "without-log"
    without_log.mkdir()
    gold = [ORDER[i % 3] for i in range(12)]
    a = write_run(tmp_path / "a.jsonl", gold, set(range(6)), adapter=str(without_log))
    b = write_run(tmp_path / "b.jsonl", gold, set(range(9)), adapter=str(tmp_path / "gone"))
    c = write_run(tmp_path / "c.jsonl", gold, set(range(10)))  # no adapter in the records: the manifest names it
    (tmp_path / "c.manifest.json").write_text(json.dumps({"stage": "predict", "adapter": str(with_log)}))
    res = run_compare(CompareConfig(preds=[str(a), str(b), str(c)], out_dir=str(tmp_path / "r"), metrics={"n_boot": 0}))
    assert [f for f in res["files"] if f.startswith("learning_curve")] == ["learning_curve_c.png"]
    assert (tmp_path / "r" / "learning_curve_c.png").stat().st_size > 0
    assert "line 2 is not JSON" in caplog.text
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Training" in md and f"training log `{with_log / 'train_log.jsonl'}`" in md

    res = run_compare(CompareConfig(preds=[str(a), str(b)], out_dir=str(tmp_path / "r2"), metrics={"n_boot": 0}))
    assert not [f for f in res["files"] if f.startswith("learning_curve")]
    assert "## Training" not in (tmp_path / "r2" / "report.md").read_text()


def test_learning_curve_of_a_full_fine_tune_predicted_with_adapter(tmp_path):
    """``predict --adapter DIR`` on a fully fine-tuned model records no adapter (it loads as a model) but keeps
    DIR in its config: compare finds the training log there."""
    run = tmp_path / "enc"
    run.mkdir()
    (run / "train_log.jsonl").write_text(json.dumps({"type": "eval", "step": 1, "val_macro_f1": 0.4}) + "\n")
    gold = [ORDER[i % 3] for i in range(12)]
    d = write_run(tmp_path / "d.jsonl", gold, set(range(7)))
    (tmp_path / "d.manifest.json").write_text(json.dumps({"stage": "predict", "adapter": None,
                                                          "config": {"adapter": str(run), "model": None}}))
    res = run_compare(CompareConfig(preds=[str(d)], out_dir=str(tmp_path / "r"), metrics={"n_boot": 0}))
    assert "learning_curve_d.png" in res["files"]


SHARED_WARNING = re.compile(r"^> \*\*Warning: selection split shares outlets\.\*\* (.+)$", flags=re.M)


def selection_prep(d: Path, mode: str, outlets: list[str]) -> Path:
    """A prep directory whose val.jsonl has one article per outlet in ``outlets``."""
    d.mkdir(parents=True)
    (d / "val.jsonl").write_text("".join(json.dumps({"id": f"v{i}", "input": "text", "output": "left", "outlet": o})
                                         + "\n" for i, o in enumerate(outlets)))
    (d / "prep_meta.json").write_text(json.dumps({"splits": {"mode": mode}}))
    return d


def trained_on(d: Path, prep: Path) -> Path:
    """A training output directory whose manifest.json names prep's val.jsonl and prep_meta.json."""
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"stage": "train", "data": {
        "train": {"path": str(prep / "train.jsonl"), "sha256": "0" * 64},
        "val": {"path": str(prep / "val.jsonl"), "sha256": "0" * 64},
        "prep_meta": {"path": str(prep / "prep_meta.json"), "outputs": {}}}}))
    return d


def test_a_run_fitted_on_the_test_articles_or_outlets_is_flagged(tmp_path):
    """The split may be outlet-disjoint and a run still trained on these outlets (another prep of the data)."""
    inp = make_inputs(tmp_path)  # test articles: a0, a2, a4 from o0; a1, a3, a5 from o1
    prep = selection_prep(tmp_path / "theirs", "by_source", ["o7"])
    a0 = " ".join(f"w0_{k}" for k in range(80))  # test article a0's own text; a2 below is another article's id only
    (prep / "train.jsonl").write_text("".join(json.dumps({"id": i, "input": t, "output": "left", "outlet": o}) + "\n"
                                              for i, t, o in [("a0", a0, "o0"), ("x1", "t", "o0"), ("a2", "t", "o8")]))
    lora = trained_on(tmp_path / "lora", prep)
    (tmp_path / "qwen-tuned.manifest.json").write_text(json.dumps({"stage": "predict", "adapter": str(lora)}))
    res = run_compare(compare_cfg(inp, tmp_path / "r", ensembles=["ens=tuned+majority"]))
    sel = res["selection"]
    assert sel["tuned"]["status"] == "disjoint" and sel["base"]["trained_on"] is None  # val is clean; base untrained
    t = sel["tuned"]["trained_on"]
    assert (t["test_articles_trained_on"], t["shared_outlets"], t["test_articles_from_shared_outlets"]) == (1, 1, 3)
    md = (tmp_path / "r" / "report.md").read_text()
    assert "trained on the test outlets" in md and "holds 1 of these test articles and 1 of their outlets" in md
    # the results name it, and an ensemble built on it inherits the flag
    assert "| tuned (trained on the test outlets) |" in md and "| ens (trained on the test outlets) |" in md
    assert sel["ens"]["trained_on"]["members"] == ["tuned"] and "ens averages tuned, fitted on these test" in md
    from newsbias.export import _evaluation_context, read_eval
    ev = _evaluation_context(read_eval(f"tuned={tmp_path / 'r'}", lora))
    assert ev["outlet_note"].startswith("**Not a score on unseen outlets.** tuned was fitted on")


def test_run_selected_on_shared_outlets_is_flagged(tmp_path):
    inp = make_inputs(tmp_path)  # test articles: a0, a2, a4 from o0; a1, a3, a5 from o1
    lora = trained_on(tmp_path / "lora", selection_prep(tmp_path / "random", "random", ["o0", "o0", "o1", "o9"]))
    (tmp_path / "qwen-tuned.manifest.json").write_text(json.dumps({"stage": "predict", "adapter": str(lora)}))
    # prep_meta claims by_source, but its val.jsonl shares o1: the files decide, not the recorded mode
    mislabelled = selection_prep(tmp_path / "mislabelled", "by_source", ["o1", "o5"])
    tfidf = tmp_path / "tfidf-lr.jsonl"
    tfidf.write_text(inp["majority"].read_text())
    (tmp_path / "tfidf-lr.manifest.json").write_text(json.dumps({
        "stage": "baseline", "model": "tfidf-lr", "C": {"C": 1.0, "grid": [{"C": 1.0, "val_macro_f1": 0.5}]},
        "config": {"data": str(mislabelled)}}))
    (tmp_path / "majority.manifest.json").write_text(json.dumps({"stage": "baseline", "model": "majority",
                                                                 "C": None, "config": {"data": str(mislabelled)}}))
    cfg = compare_cfg(inp, tmp_path / "r", ensembles=["ens=tuned+tfidf-lr"])
    res = run_compare(cfg.model_copy(update={"preds": [*cfg.preds, str(tfidf)]}))

    sel = json.loads((tmp_path / "r" / "metrics.json").read_text())["selection"]
    assert res["selection"] == sel
    assert {n: (s["status"], s["flagged"]) for n, s in sel.items()} == {
        "base": ("unknown", False), "tuned": ("shared", True), "majority": ("none", False),
        "tfidf-lr": ("shared", True), "ens": ("ensemble", True)}
    tuned = sel["tuned"]
    assert (tuned["what"], tuned["split"], tuned["split_mode"]) == ("checkpoint", str(tmp_path / "random" / "val.jsonl"),
                                                                    "random")
    assert (tuned["shared_outlets"], tuned["shared_outlet_examples"]) == (2, ["o0", "o1"])
    assert (tuned["split_articles_shared"], tuned["split_articles"]) == (3, 4)
    assert (tuned["test_articles_shared"], tuned["test_articles"]) == (6, 6)
    assert (sel["tfidf-lr"]["what"], sel["tfidf-lr"]["split_mode"], sel["tfidf-lr"]["shared_outlets"],
            sel["tfidf-lr"]["test_articles_shared"]) == ("C", "by_source", 1, 3)

    md = (tmp_path / "r" / "report.md").read_text()
    page = (tmp_path / "r" / "report.html").read_text()
    expected = [f"{run}: {what} chosen on val.jsonl, which shares {k} ({pct} % of its articles) with the test articles"
                " — its score rewards recognising outlets; select on an outlet-disjoint split "
                "(prep.split.mode=by_source)." for run, what, k, pct in (("tuned", "checkpoint", "2 outlets", 75),
                                                                         ("tfidf-lr", "C", "1 outlet", 50))]
    assert SHARED_WARNING.findall(md) == expected
    html_warn = re.findall(r'<p class="warning"><strong>Warning: selection split shares outlets\.</strong> (.+?)</p>',
                           page)
    assert [html.unescape(w) for w in html_warn] == expected
    assert f"- **base**: `{inp['base']}` (no manifest); selection split unknown\n" in md
    assert "**majority**:" in md and "; nothing chosen on a split (majority baseline)\n" in md
    assert "; selected as its members (tuned, tfidf-lr on outlets shared with the test articles)" in md
    assert "; checkpoint chosen on val.jsonl, which shares 2 outlets with the test articles</li>" in page


def test_outlet_disjoint_selection_is_not_flagged(tmp_path):
    inp = make_inputs(tmp_path)
    lora = trained_on(tmp_path / "lora", selection_prep(tmp_path / "by-source", "by_source", ["o7", "o8", "o8"]))
    rows = [{**json.loads(x), "adapter": str(lora)} for x in inp["tuned"].read_text().splitlines()]
    inp["tuned"].write_text("".join(json.dumps(r) + "\n" for r in rows))  # the adapter named in the records
    # no --data: the compared articles' outlets come from the predictions
    run_compare(CompareConfig(preds=[f"tuned={inp['tuned']}"], out_dir=str(tmp_path / "r"), metrics={"n_boot": 0}))
    sel = json.loads((tmp_path / "r" / "metrics.json").read_text())["selection"]["tuned"]
    assert (sel["status"], sel["flagged"], sel["shared_outlets"], sel["split_mode"]) == ("disjoint", False, 0,
                                                                                          "by_source")
    assert sel["warning"] is None
    md = (tmp_path / "r" / "report.md").read_text()
    assert not SHARED_WARNING.findall(md)
    assert "; checkpoint chosen on val.jsonl, which shares no outlet (web domain) with the test articles\n" in md


def test_a_run_that_kept_its_last_weights_chose_nothing_on_val(tmp_path):
    """eval.keep: last: val fitted the temperature only, so a val split sharing outlets is no warning."""
    inp = make_inputs(tmp_path)
    lora = trained_on(tmp_path / "lora", selection_prep(tmp_path / "random", "random", ["o0", "o0", "o1", "o9"]))
    manifest = json.loads((lora / "manifest.json").read_text())
    (lora / "manifest.json").write_text(json.dumps({**manifest, "config": {"eval": {"keep": "last"}}}))
    rows = [{**json.loads(x), "adapter": str(lora)} for x in inp["tuned"].read_text().splitlines()]
    inp["tuned"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_compare(CompareConfig(preds=[f"tuned={inp['tuned']}"], out_dir=str(tmp_path / "r"), metrics={"n_boot": 0}))
    sel = json.loads((tmp_path / "r" / "metrics.json").read_text())["selection"]["tuned"]
    assert (sel["status"], sel["flagged"]) == ("none", False) and "eval.keep: last" in sel["note"]
    assert not SHARED_WARNING.findall((tmp_path / "r" / "report.md").read_text())


def test_run_without_manifest_is_unknown_without_warning(tmp_path):
    inp = make_inputs(tmp_path)
    (tmp_path / "majority.manifest.json").write_text(json.dumps({  # C chosen on a val.jsonl that is gone
        "stage": "baseline", "model": "tfidf-lr", "C": {"C": 1.0, "grid": [{"C": 1.0}]},
        "config": {"data": str(tmp_path / "gone")}}))
    gone = tmp_path / "adapter-without-manifest"
    gone.mkdir()
    rows = [{**json.loads(x), "adapter": str(gone)} for x in inp["tuned"].read_text().splitlines()]
    inp["tuned"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_compare(compare_cfg(inp, tmp_path / "r"))
    sel = json.loads((tmp_path / "r" / "metrics.json").read_text())["selection"]
    assert {n: (s["status"], s["flagged"], s["warning"]) for n, s in sel.items()} == {
        n: ("unknown", False, None) for n in ("base", "tuned", "majority")}
    assert sel["tuned"]["note"] == "selection split unknown (no training manifest.json found beside the model)"
    assert sel["majority"]["note"] == f"selection split unknown ({tmp_path / 'gone' / 'val.jsonl'} not found)"
    md = (tmp_path / "r" / "report.md").read_text()
    page = (tmp_path / "r" / "report.html").read_text()
    assert not SHARED_WARNING.findall(md) and "selection split shares" not in page
    assert "(no manifest); selection split unknown\n" in md
    assert "(no manifest); selection split unknown</li>" in page
    assert all("selection split unknown" not in w for w in re.findall(r"^> \*\*Warning.*$", md, flags=re.M))


def test_the_calibration_section_says_whose_probabilities_were_calibrated(tmp_path):
    inp = make_inputs(tmp_path)
    (tmp_path / "qwen-tuned.manifest.json").write_text(json.dumps({"stage": "predict", "temperature": 2.5}))
    tfidf = tmp_path / "tfidf-lr.jsonl"
    tfidf.write_text(inp["majority"].read_text())
    (tmp_path / "tfidf-lr.manifest.json").write_text(json.dumps({"stage": "baseline", "calibration": None}))
    cfg = compare_cfg(inp, tmp_path / "r", ensembles=["ens=tuned+tfidf-lr"])
    run_compare(cfg.model_copy(update={"preds": [*cfg.preds, str(tfidf)]}))
    md = (tmp_path / "r" / "report.md").read_text()
    line = next(l for l in md.splitlines() if l.startswith("Expected calibration error:"))
    assert re.search(r"tuned [\d.]+ \(temperature 2\.50, fitted on val\)", line)
    assert re.search(r"majority [\d.]+,", line)  # its manifest does not say: no note
    assert re.search(r"tfidf-lr [\d.]+ \(raw softmax\)", line) and re.search(r"ens [\d.]+ \(its probabilities are the mean of its members'\)", line)
    page = html.unescape((tmp_path / "r" / "report.html").read_text())
    assert "(temperature 2.50, fitted on val)" in page and "(its probabilities are the mean of its members')" in page
    (tmp_path / "tfidf-lr.manifest.json").write_text(json.dumps({"stage": "baseline", "calibration": {
        "temperature": 20.0, "at_bound": True}}))
    run_compare(cfg.model_copy(update={"preds": [*cfg.preds, str(tfidf)], "out_dir": str(tmp_path / "r2")}))
    assert re.search(r"tfidf-lr [\d.]+ \(temperature 20\.00, fitted on val, at the bound of the fit .*nearly flat: "
                     r"in an ensemble it barely votes", (tmp_path / "r2" / "report.md").read_text())


@pytest.mark.parametrize("recorded_cwd", [True, False])
def test_relative_paths_in_manifests_are_found_from_another_directory(tmp_path, monkeypatch, recorded_cwd):
    """predict, baseline and train record paths as typed (``runs/...``); compare run elsewhere still finds the
    training log and the selection splits: under the manifest's ``cwd``, or above the manifest (a project root)."""
    proj = tmp_path / "proj"
    data = selection_prep(proj / "runs" / "data", "by_source", ["o7", "o8"])
    lora = proj / "runs" / "lora"
    lora.mkdir(parents=True)
    (lora / "manifest.json").write_text(json.dumps({"stage": "train", "data": {
        "val": {"path": "runs/data/val.jsonl"}, "prep_meta": {"path": "runs/data/prep_meta.json"}},
        **({"cwd": str(proj)} if recorded_cwd else {})}))
    (lora / "train_log.jsonl").write_text(json.dumps({"type": "train", "step": 1, "loss": 1.1}) + "\n"
                                          + json.dumps({"type": "eval", "step": 1, "val_macro_f1": 0.4}) + "\n")
    gold = [ORDER[i % 3] for i in range(12)]
    preds = proj / "runs" / "preds"
    preds.mkdir()
    tuned = write_run(preds / "tuned.jsonl", gold, set(range(8)), adapter="runs/lora")
    tfidf = write_run(preds / "tfidf-lr.jsonl", gold, set(range(9)))
    where = {"cwd": str(proj)} if recorded_cwd else {}
    (preds / "tuned.manifest.json").write_text(json.dumps({"stage": "predict", "adapter": "runs/lora", **where}))
    (preds / "tfidf-lr.manifest.json").write_text(json.dumps({
        "stage": "baseline", "model": "tfidf-lr", "C": {"C": 1.0, "grid": [{"C": 1.0, "val_macro_f1": 0.5}]},
        "config": {"data": "runs/data"}, **where}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = run_compare(CompareConfig(preds=[str(tuned), str(tfidf)], out_dir=str(tmp_path / "r"),
                                    metrics={"n_boot": 0}))
    assert "learning_curve_tuned.png" in res["files"]
    sel = res["selection"]
    assert sel["tuned"]["split"] == str(data / "val.jsonl") and sel["tuned"]["status"] == "disjoint"
    assert sel["tfidf-lr"]["split"] == str(data / "val.jsonl") and sel["tfidf-lr"]["status"] == "disjoint"


def test_a_report_rewritten_in_place_drops_its_own_stale_figures_and_keeps_a_users_files(tmp_path):
    gold = [ORDER[i % 3] for i in range(12)]
    a, b = write_run(tmp_path / "a.jsonl", gold, set(range(6))), write_run(tmp_path / "b.jsonl", gold, set(range(9)))
    out = tmp_path / "r"
    first = run_compare(CompareConfig(preds=[f"base={a}", f"tuned={b}"], out_dir=str(out), metrics={"n_boot": 0}))
    (out / "notes.png").write_bytes(b"mine")
    second = run_compare(CompareConfig(preds=[f"x={a}"], out_dir=str(out), metrics={"n_boot": 0}))
    gone = set(first["files"]) - set(second["files"])
    assert gone and not any((out / f).exists() for f in gone)
    assert all((out / f).exists() for f in second["files"]) and (out / "notes.png").read_bytes() == b"mine"
    assert json.loads((out / "metrics.json").read_text())["files"] == second["files"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(NewsbiasError, match="is a file; give a directory path"):
        run_compare(CompareConfig(preds=[f"x={a}"], out_dir=str(tmp_path / "file"), metrics={"n_boot": 0}))


def test_compare_never_overwrites_a_users_report_and_a_failed_run_leaves_the_last_one(tmp_path, monkeypatch):
    gold = [ORDER[i % 3] for i in range(12)]
    a, b = write_run(tmp_path / "a.jsonl", gold, set(range(6))), write_run(tmp_path / "b.jsonl", gold, set(range(9)))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes")
    with pytest.raises(NewsbiasError, match="holds report.md not written by newsbias compare"):
        run_compare(CompareConfig(preds=[f"x={a}"], out_dir=str(mine), metrics={"n_boot": 0}))
    assert (mine / "report.md").read_text() == "my notes"
    out = tmp_path / "r"
    run_compare(CompareConfig(preds=[f"base={a}", f"tuned={b}"], out_dir=str(out), metrics={"n_boot": 0}))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(model):
        raise KeyboardInterrupt  # killed after the CSV and figures of the new report were written

    monkeypatch.setattr("newsbias.report.render_markdown", crash)
    with pytest.raises(KeyboardInterrupt):
        run_compare(CompareConfig(preds=[f"x={a}", f"y={b}"], out_dir=str(out), metrics={"n_boot": 0}))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-new, no staging left


def test_interval_headers_say_the_configured_confidence(tmp_path):
    inp = make_inputs(tmp_path)
    cfg = compare_cfg(inp, tmp_path / "r")
    run_compare(cfg.model_copy(update={"metrics": cfg.metrics.model_copy(update={"confidence": 0.9,
                                                                                   "by_outlet": True})}))
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| model | macro-F1 | 90% CI | 90% CI (outlets) | micro-F1 |" in md and "95%" not in md
    assert "90% CI, outlets resampled (paired)" in md and "90% CI, articles resampled (paired)" in md
    by_outlet = json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"]["tuned"]["by_outlet"]
    assert {r["outlet"]: r["accuracy"] for r in by_outlet} == {"o0": 2 / 3, "o1": 2 / 3}
    assert all("macro_f1" not in r for r in by_outlet)  # over one gold label it would cap a perfect outlet at 1/3


@pytest.mark.parametrize("name", ["my run", "a/b", "x|y", "<x>"])
def test_an_invalid_run_name_is_named_as_such(tmp_path, name):
    inp = make_inputs(tmp_path)
    with pytest.raises(NewsbiasError, match=r"run name .* is not a valid name: use letters, digits"):
        parse_pred_specs([f"{name}={inp['tuned']}"])


def test_the_outlet_table_says_how_many_outlets_it_shows(tmp_path):
    inp = make_inputs(tmp_path)
    cfg = compare_cfg(inp, tmp_path / "r")
    run_compare(cfg.model_copy(update={"metrics": cfg.metrics.model_copy(update={"by_outlet": True})}))
    assert "## Largest outlets\n\nAll 2 outlets of these articles. Each outlet's articles carry its rating" in \
        (tmp_path / "r" / "report.md").read_text()
    assert "<p>All 2 outlets of these articles. Each outlet" in (tmp_path / "r" / "report.html").read_text()


def test_each_reliability_bar_is_labelled_with_its_article_count(tmp_path, monkeypatch):
    import matplotlib.axes

    from newsbias.figures import plot_reliability

    said = []
    real = matplotlib.axes.Axes.annotate
    monkeypatch.setattr(matplotlib.axes.Axes, "annotate", lambda self, text, *a, **k: said.append(text) or real(
        self, text, *a, **k))
    cal = {"ece": 0.1, "n": 8, "n_bins": 10, "bins": [{"low": 0.3, "high": 0.4, "n": 6, "accuracy": 0.5,
                                                        "confidence": 0.35},
                                                       {"low": 0.9, "high": 1.0, "n": 2, "accuracy": 1.0,
                                                        "confidence": 0.95}]}
    assert plot_reliability({"run": {"calibration": cal}}, tmp_path / "r.png")
    assert said == ["6", "2"] and (tmp_path / "r.png").stat().st_size > 0


def test_every_pair_of_runs_is_tested_for_the_cards(tmp_path):
    from newsbias.export import _verdict_on, read_eval

    _, (base, tuned, tfidf) = three_runs(tmp_path)
    run_compare(CompareConfig(preds=[f"base={base}", f"tuned={tuned}", f"tfidf-lr={tfidf}"],
                              out_dir=str(tmp_path / "r"), metrics={"n_boot": 200}))
    pairs = json.loads((tmp_path / "r" / "metrics.json").read_text())["pairs"]
    assert sorted(pairs) == ["base vs tfidf-lr", "base vs tuned", "tuned vs tfidf-lr"]
    assert all(t["ci_outlets"]["n_groups"] == 4 and t["ci"] for t in pairs.values())
    # base is no role of the verdict's pair with tfidf-lr, yet its card reads a paired test of the two
    ev = read_eval(f"base={tmp_path / 'r' / 'metrics.json'}", tmp_path)
    test = pairs["base vs tfidf-lr"]
    said = _verdict_on(ev, "tfidf-lr", 0.2, 0.5, None)
    assert f"paired difference {test['diff']:+.3f}, 95% interval over outlets [{test['ci_outlets']['low']:+.3f}" in said


def test_the_results_say_which_runs_are_no_better_than_a_uniform_guess(tmp_path):
    _, (base, tuned, tfidf) = three_runs(tmp_path)
    run_compare(CompareConfig(preds=[f"base={base}", f"tuned={tuned}", f"tfidf-lr={tfidf}"],
                              out_dir=str(tmp_path / "r"), metrics={"n_boot": 0}))
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| *uniform guess (expected)* | 0.333 |" in md and "| 1.099 |" in md
    assert "A uniform random guess scores 0.333 macro-F1 in expectation on this label mix" in md
    assert "base scores no better than that" in md


def test_the_report_says_the_articles_are_the_split_files_first(tmp_path):
    inp = make_inputs(tmp_path)
    for key in ("base", "tuned", "majority"):
        lines = Path(inp[key]).read_text().splitlines()
        Path(inp[key]).write_text("\n".join(lines[:4]) + "\n")
    run_compare(compare_cfg(inp, tmp_path / "r", html=False))
    assert "4 articles (gold: " in (md := (tmp_path / "r" / "report.md").read_text())
    assert "of the 6 in the split file (its first 4, in file order)." in md


def test_an_outlet_disjoint_split_says_what_outlet_means_and_what_spans_splits():
    from newsbias.report import split_note

    meta = {"config": {"split": {"mode": "by_source"}}, "splits": {"mode": "by_source"},
            "leakage": {"shared_outlets": {"count": 0}, "shared_source_names": {"count": 58}}}
    text = split_note(meta)["text"]
    assert "no outlet (registrable domain) appears in more than one split" in text
    assert "58 source names span splits (one organisation under several domains" in text


def test_each_model_run_says_how_much_of_an_article_it_read():
    from newsbias.report import _reads

    assert _reads({"stage": "predict", "prompt": {"max_length": 128, "truncation": "head"}}) == \
        "reads the start of each article, within 128 prompt tokens"
    assert "the start and end" in _reads({"prompt": {"max_length": 512, "truncation": "head_tail"}})
    assert _reads({"stage": "baseline"}) is None and _reads(None) is None
    assert _reads({"prompt": {"max_length": 128}, "config": {"windows": 3, "pool": "max"}}) == (
        "reads up to 3 stretches of each article (start, end and evenly between), each within 128 prompt tokens, "
        "and takes the most confident one's answer")


def test_the_csv_never_hands_a_spreadsheet_a_formula():
    from newsbias.report import spreadsheet_safe

    frame = pd.DataFrame({"id": ['=HYPERLINK("http://x")', "a1"], "preview": ["+cmd|' /C calc'!A0", "plain text"]})
    safe = spreadsheet_safe(frame)
    assert list(safe["id"]) == ['\'=HYPERLINK("http://x")', "a1"]
    assert list(safe["preview"]) == ["'+cmd|' /C calc'!A0", "plain text"]


def test_a_run_is_clear_of_chance_only_when_its_interval_is():
    from types import SimpleNamespace

    from newsbias.report import chance_note

    gold = {"left": 10, "center": 10, "right": 10}  # chance 1/3

    def run(f1, low, outlets=True):
        ci = {"low": low, "high": f1 + 0.1}
        return {"gold_counts": gold, "macro_f1": f1, "macro_f1_ci": {"low": f1 - 0.01, "high": f1 + 0.01},
                **({"macro_f1_ci_outlets": ci} if outlets else {})}

    unsure = {**run(0.9, 0.8, outlets=False), "macro_f1_ci": None}  # n_boot=0, or one article
    c = SimpleNamespace(names=["flat", "lucky", "sure", "articles-only", "unsure"],
                        metrics={"flat": run(0.30, 0.2), "lucky": run(0.40, 0.30), "sure": run(0.50, 0.40),
                                 "articles-only": run(0.45, 0.2, outlets=False), "unsure": unsure})
    note = chance_note(c)
    assert "flat scores no better than that" in note
    assert "lucky scores above it on these articles, but its interval includes it" in note
    assert "sure and articles-only score above it with their whole interval" in note
    assert "unsure scores above it on these articles, with no interval to say how surely" in note


def test_the_outlet_table_says_how_much_the_largest_outlets_hold(tmp_path):
    _, (base, tuned, tfidf) = three_runs(tmp_path)
    run_compare(CompareConfig(preds=[f"base={base}", f"tuned={tuned}", f"tfidf-lr={tfidf}"],
                              out_dir=str(tmp_path / "r"), metrics={"n_boot": 0, "by_outlet": True}))
    sizes = sorted((r["n"] for r in json.loads((tmp_path / "r" / "metrics.json").read_text())
                    ["metrics"]["tuned"]["by_outlet"]), reverse=True)
    assert len(sizes) == 4
    assert f"The 3 largest hold {sum(sizes[:3]) / sum(sizes):.0%} of the articles" in (
        tmp_path / "r" / "report.md").read_text()


def test_markdown_cells_from_the_data_cannot_break_a_table_or_run_html():
    from newsbias.templates import md

    assert md("fox|news\nweb <b>") == "fox\\|news web &lt;b>"


def test_the_accuracy_column_is_accuracy_not_micro_f1(tmp_path):
    inp = make_inputs(tmp_path)
    run_compare(compare_cfg(inp, tmp_path / "r", html=False))
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"]["base"]
    assert m["n_invalid"] > 0 and f"{m['accuracy']:.3f}" != f"{m['micro_f1']:.3f}"  # invalid answers tell them apart
    lines = (tmp_path / "r" / "report.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| model | macro-F1 |"))
    row = next(line for line in lines if line.startswith("| base |"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["accuracy"] == f"{m['accuracy']:.3f}" and cells["micro-F1"] == f"{m['micro_f1']:.3f}"


def test_a_random_split_says_shared_outlets_only_when_it_has_them():
    from newsbias.report import split_note

    def meta(shared, outlets):
        return {"splits": {"mode": "random", "outlets": outlets}, "leakage": {"shared_outlets": {"count": shared}}}

    shared = split_note(meta(5, {"train": 9, "val": 6, "test": 6}))
    assert shared["warning"] == "random split" and "Train and test share outlets (5 are shared" in shared["text"]
    unknown = split_note(meta(0, {"train": 0, "val": 0, "test": 0}))  # instruction files: no outlet field
    assert unknown["warning"] == "random split" and "name no outlet: whether train and test share" in unknown["text"]
    grouped = split_note(meta(0, {"train": 9, "val": 3, "test": 3}))  # split.group_by=outlet
    assert grouped["warning"] is None and "no outlet is in two splits" in grouped["text"]


def test_by_outlet_without_any_outlet_says_so_and_draws_no_outlet(tmp_path, caplog):
    inp = make_inputs(tmp_path)
    for key in ("base", "tuned", "majority"):  # prediction files of data with no outlet field (instruction files)
        rows = [json.loads(line) for line in Path(inp[key]).read_text().splitlines()]
        Path(inp[key]).write_text("".join(json.dumps({**r, "outlet": None}) + "\n" for r in rows[:5]))
    cfg = CompareConfig(preds=[f"base={inp['base']}", f"tuned={inp['tuned']}", str(inp["majority"])],
                        out_dir=str(tmp_path / "r"), html=False, metrics={"n_boot": 50, "by_outlet": True})
    run_compare(cfg)
    assert "no article names its outlet" in caplog.text
    md = (tmp_path / "r" / "report.md").read_text()
    assert "CI (outlets)" not in md and not (tmp_path / "r" / "per_outlet.png").exists()
    assert "macro_f1_ci_outlets" not in json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"]["tuned"]
