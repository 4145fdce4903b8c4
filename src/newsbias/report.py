"""Side-by-side comparison of prediction files and a readable report (``newsbias compare``).

``run_compare(cfg)`` reads several prediction files for the same split (base, tuned, baselines),
joins them on id, and writes into ``cfg.out_dir``:

* ``eval_compare.csv`` — ``id, preview`` (first 50 words of the article), ``gold``, then one
  column per run with its predicted label (``invalid`` for unparseable outputs);
* ``metrics.json`` — :func:`newsbias.metrics.compute_metrics` per run, plus the join summary;
* ``confusion_<run>.png`` per run and ``per_class_f1.png``;
* ``report.md`` and a self-contained ``report.html`` (figures inlined): results table, per-class
  F1, figures, the split mode from ``prep_meta.json``, the cases where tuned fixes or breaks base,
  and each run's manifest (collapsed).

Runs are named ``NAME=PATH`` on the command line, else by the file's stem; name the LLM runs
``base`` and ``tuned`` to get the fixes / breaks section.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from .config import CompareConfig
from .errors import NewsbiasError
from .io import sha256_file, write_json
from .labels import LABELS
from .metrics import INVALID, metrics_for_frame, prediction_frame
from .records import read_articles, resolve_split

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


# ------------------------------------------------------------------------------------- inputs


def parse_pred_specs(specs: list[str]) -> list[tuple[str, Path]]:
    """``["base=runs/base.jsonl", "runs/preds/majority.jsonl"]`` -> ``[(name, path), ...]``."""
    if not specs:
        raise NewsbiasError("no prediction files given: pass --preds FILE [FILE ...] (NAME=FILE to name a run)")
    out: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not _NAME.match(name):
            name, path = Path(spec).name, spec
            name = name[:-len(".jsonl")] if name.endswith(".jsonl") else Path(name).stem
        p = Path(path)
        if not p.is_file():
            raise NewsbiasError(f"prediction file not found: {p}")
        if any(n == name for n, _ in out):
            raise NewsbiasError(f"two prediction files are both named {name!r}; name them as NAME=PATH")
        out.append((name, p))
    return out


def parse_ensemble(spec: str, runs: Sequence[str]) -> tuple[str, list[str]]:
    """``"ensemble=lm-tuned+tfidf-lr"`` -> ``("ensemble", ["lm-tuned", "tfidf-lr"])``, members checked."""
    name, sep, rhs = spec.partition("=")
    members = [m.strip() for m in rhs.split("+") if m.strip()]
    if not sep or not _NAME.match(name) or len(members) < 2:
        raise NewsbiasError(f"ensemble {spec!r} must read NAME=RUN+RUN[+RUN...] with two or more runs")
    unknown = [m for m in members if m not in runs]
    if unknown:
        raise NewsbiasError(f"ensemble {name!r} names {', '.join(unknown)}, not among the runs {', '.join(runs)}")
    if name in runs:
        raise NewsbiasError(f"ensemble name {name!r} is already a run's name; pick another")
    return name, members


def ensemble_frame(frames: dict[str, pd.DataFrame], members: Sequence[str], name: str) -> pd.DataFrame:
    """The equal-weight mean of the members' probabilities, on the articles every member scored.

    Equal weights on purpose: a tuned weight could quietly make the ensemble one of its members.
    """
    for m in members:
        if frames[m]["probs"].isna().any():
            raise NewsbiasError(f"ensemble {name!r}: run {m!r} has rows without probabilities (generate mode?); "
                                "ensembles average probabilities, so use score-mode runs")
    first = frames[members[0]].assign(key=lambda f: f["id"].astype(str))
    common = set.intersection(*(set(frames[m]["id"].astype(str)) for m in members))
    first = first[first["key"].isin(common)]
    probs = np.mean([np.stack(frames[m].assign(key=frames[m]["id"].astype(str)).set_index("key")
                              .loc[first["key"], "probs"].to_list()) for m in members], axis=0)
    return first.drop(columns="key").assign(
        probs=list(probs.tolist()), pred=probs.argmax(1), valid=True, model=name, adapter=None).reset_index(drop=True)


def read_appendix(path: Optional[str]) -> Optional[str]:
    """The Markdown of ``compare.appendix`` (e.g. the demo's timing table), or None."""
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise NewsbiasError(f"compare.appendix {p} not found; pass an existing Markdown file or drop it")
    return p.read_text(encoding="utf-8")


def manifest_path(pred_path: Path) -> Path:
    """``runs/preds/base.jsonl`` -> ``runs/preds/base.manifest.json``."""
    stem = pred_path.name[:-len(".jsonl")] if pred_path.name.endswith(".jsonl") else pred_path.stem
    return pred_path.with_name(f"{stem}.manifest.json")


def read_manifest(pred_path: Path) -> Optional[dict[str, Any]]:
    p = manifest_path(pred_path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("compare: manifest %s is not valid JSON; left out of the report", p)
        return None


def resolve_data(data: Optional[str], split: str) -> tuple[Optional[Path], Optional[Path]]:
    """``(split_file, prep_meta.json)`` for ``--data`` (a split file, or a prep directory + split)."""
    if not data:
        return None, None
    f = resolve_split(data, split, "compare.data (--data)", "compare.split")
    meta = f.parent / "prep_meta.json"
    return f, meta if meta.is_file() else None


def read_meta(path: Optional[Path]) -> Optional[dict[str, Any]]:
    """prep_meta.json (for the split mode and the sha256 of the split), or None."""
    return json.loads(path.read_text(encoding="utf-8")) if path else None


def data_texts(path: Path) -> pd.DataFrame:
    """``key`` (the article id), ``text`` and ``gold_data`` of a split file, indexed by ``key``."""
    frame = pd.DataFrame([{"key": a.id, "text": a.text, "gold_data": a.label}
                          for a in read_articles(path, require_text=False)], columns=["key", "text", "gold_data"])
    if frame.empty:
        raise NewsbiasError(f"split file {path} is empty")
    dup = frame["key"].duplicated()
    if dup.any():
        raise NewsbiasError(f"split file {path} repeats id {frame['key'][dup].iloc[0]!r}; ids must be unique")
    return frame.set_index("key", drop=False)


def check_data(texts: pd.DataFrame, joined: pd.DataFrame, path: Path) -> None:
    """The predicted articles must all be in the split file, with the same gold labels."""
    missing = set(joined["key"]) - set(texts["key"])
    if missing:
        raise NewsbiasError(f"{len(missing)} predicted ids are not in {path} (e.g. {sorted(missing)[0]}); "
                            "is --data the split that was predicted?")
    gold_data = texts.loc[joined["key"], "gold_data"].to_numpy()
    disagree = [k for k, g, d in zip(joined["key"], joined["gold"], gold_data) if d is not None and LABELS[g] != d]
    if disagree:
        raise NewsbiasError(f"gold labels in the predictions disagree with {path} for {len(disagree)} "
                            f"articles (first: id {disagree[0]}); is --data the split that was predicted?")


def preview(text: str, words: int = 50) -> str:
    return " ".join(str(text).split()[:words])


def join_predictions(frames: dict[str, pd.DataFrame], on_mismatch: str = "error") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Join runs on id (compared as strings) into one frame: ``key, gold, <run>...`` (class indices).

    Different id sets are an error that reports the counts, unless ``on_mismatch`` is
    "intersect". Gold labels that disagree between runs are always an error.
    """
    keysets = {name: set(f["id"].astype(str)) for name, f in frames.items()}
    common = set.intersection(*keysets.values())
    union = set.union(*keysets.values())
    info = {"union": len(union), "common": len(common),
            "only_in": {name: len(ks - common) for name, ks in keysets.items()}}
    if common != union:
        detail = ", ".join(f"{n}: {len(ks)} ids, {len(ks - common)} not in every file" for n, ks in keysets.items())
        if on_mismatch != "intersect":
            raise NewsbiasError(f"prediction files cover different articles ({detail}; {len(common)} common); "
                                "predict the same split with every model, or pass --intersect "
                                "(compare.on_mismatch=intersect) to compare on the common ids")
        if not common:
            raise NewsbiasError(f"prediction files share no ids ({detail})")
        log.warning("compare: using the %d ids common to all files (%s)", len(common), detail)
    joined: Optional[pd.DataFrame] = None
    for name, f in frames.items():
        part = f.assign(key=f["id"].astype(str))
        part = part[part["key"].isin(common)][["key", "gold", "pred", "line"]]
        part = part.rename(columns={"gold": f"gold:{name}", "pred": name, "line": f"line:{name}"})
        joined = part if joined is None else joined.merge(part, on="key", how="inner")
    assert joined is not None
    golds = joined[[c for c in joined.columns if c.startswith("gold:")]].to_numpy()
    bad = (golds != golds[:, :1]).any(axis=1)
    if bad.any():
        row = joined[bad].iloc[0]
        raise NewsbiasError(f"prediction files disagree on the gold label of {int(bad.sum())} articles "
                            f"(first: id {row['key']}); were they made from the same split?")
    first = next(iter(frames))
    joined["gold"] = joined[f"gold:{first}"]
    joined = joined.sort_values(f"line:{first}", kind="stable").reset_index(drop=True)
    return joined[["key", "gold", *frames]], info


# ------------------------------------------------------------------------------------ figures


def plot_confusion(metrics: dict[str, Any], title: str, path: Path) -> None:
    """Confusion matrix (rows gold, columns predicted + invalid) with counts, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(metrics["confusion_matrix"]["matrix"])
    cols = metrics["confusion_matrix"]["columns"]
    rows = metrics["labels"]
    if not cm[:, -1].any():
        cm, cols = cm[:, :-1], cols[:-1]  # no invalid outputs: keep the square matrix
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 1.6, 1.1 * len(rows) + 1.2), dpi=110)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    peak = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if peak and cm[i, j] > peak / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_per_class_f1(all_metrics: dict[str, dict[str, Any]], path: Path) -> None:
    """Grouped bars: per-class F1 (and macro) for every run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(LABELS) + ["macro"]
    names = list(all_metrics)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 0.4 * len(names)), 3.6), dpi=110)
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        m = all_metrics[name]
        vals = [m["per_class"][lab]["f1"] for lab in LABELS] + [m["macro_f1"]]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title("Per-class F1")
    ax.legend(fontsize="small", ncols=min(len(names), 4), loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------------- report


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def split_note(meta: Optional[dict[str, Any]]) -> str:
    """What the split mode means for the numbers."""
    if meta is None:
        return ("Split mode unknown (no prep_meta.json next to the data). If train and test share outlets, "
                "these numbers are an upper bound.")
    mode = (meta.get("splits") or {}).get("mode") or ((meta.get("config") or {}).get("split") or {}).get("mode")
    shared = ((meta.get("leakage") or {}).get("shared_outlets") or {}).get("count")
    if mode == "random":
        return ("**Warning: random split.** Train and test share outlets, and AllSides-style labels are per "
                "outlet, so a model can score by recognising the outlet: treat these numbers as an upper bound"
                + (f" ({shared} outlets are shared between splits)." if shared is not None else "."))
    if mode == "by_source":
        return ("Outlet-disjoint split (by_source): no outlet appears in more than one split, so these numbers "
                "measure generalisation to unseen outlets — the honest yardstick.")
    return (f"Split mode: {mode}." + (f" {shared} outlets are shared between splits, so numbers may be optimistic."
                                      if shared else ""))


def _fmt(x: Any, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def read_runs(specs: list[tuple[str, Path]], cfg: CompareConfig) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """``({run: prediction frame}, {run: read info})`` for the files and then the ensembles."""
    frames: dict[str, pd.DataFrame] = {}
    infos: dict[str, Any] = {}
    for name, path in specs:
        frames[name], infos[name] = prediction_frame(path, missing_gold=cfg.metrics.missing_gold)
    for spec in cfg.ensembles:
        name, members = parse_ensemble(spec, list(frames))
        frames[name] = ensemble_frame(frames, members, name)
        infos[name] = {"ensemble_of": members, "skipped_no_gold": []}
    return frames, infos


def compare_csv(joined: pd.DataFrame, texts: Optional[pd.DataFrame], names: Sequence[str],
                preview_words: int) -> pd.DataFrame:
    """``eval_compare.csv``: id, preview, gold, then each run's predicted label (``invalid`` if unparseable)."""
    csv = pd.DataFrame({"id": joined["key"]})
    csv["preview"] = ([preview(t, preview_words) for t in texts.loc[joined["key"], "text"]]
                      if texts is not None else "")
    csv["gold"] = [LABELS[g] for g in joined["gold"]]
    for name in names:
        csv[name] = ["invalid" if p == INVALID else LABELS[p] for p in joined[name]]
    return csv


def write_figures(all_metrics: dict[str, dict[str, Any]], out: Path) -> dict[str, str]:
    """A confusion matrix per run and the per-class F1 bars; returns ``{run: confusion file name}``."""
    figures: dict[str, str] = {}
    for i, name in enumerate(all_metrics):
        fname = f"confusion_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
        if fname in figures.values():
            fname = f"confusion_{i}_{fname[len('confusion_'):]}"
        plot_confusion(all_metrics[name], name, out / fname)
        figures[name] = fname
    plot_per_class_f1(all_metrics, out / "per_class_f1.png")
    return figures


def base_tuned_changes(joined: pd.DataFrame, csv: pd.DataFrame, names: Sequence[str],
                       cfg: CompareConfig) -> Optional[dict[str, Any]]:
    """Where ``cfg.tuned`` fixes or breaks ``cfg.base`` (counts and first examples), when both are runs."""
    if cfg.base not in names or cfg.tuned not in names:
        return None
    g, b, t = joined["gold"], joined[cfg.base], joined[cfg.tuned]
    fixed = joined[(b != g) & (t == g)].index
    broke = joined[(b == g) & (t != g)].index
    return {"fixed": len(fixed), "broken": len(broke),
            "both_right": int(((b == g) & (t == g)).sum()), "both_wrong": int(((b != g) & (t != g)).sum()),
            "fixed_examples": csv.loc[fixed[:cfg.n_examples]].to_dict("records"),
            "broken_examples": csv.loc[broke[:cfg.n_examples]].to_dict("records")}


def data_summary(path: Optional[Path], texts: Optional[pd.DataFrame],
                 meta: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """Path, sha256 and rows of the split file, and whether prep_meta.json records that sha256."""
    if path is None or texts is None:
        return None
    info: dict[str, Any] = {"path": str(path), "sha256": sha256_file(path), "rows": len(texts)}
    if meta:
        expected = (meta.get("outputs") or {}).get(path.name, {}).get("sha256")
        info["matches_prep_meta"] = None if expected is None else expected == info["sha256"]
    return info


def run_compare(cfg: CompareConfig) -> dict[str, Any]:
    """Join the prediction files, compute metrics, and write the CSV, figures and report."""
    specs = parse_pred_specs(cfg.preds)
    frames, infos = read_runs(specs, cfg)
    names = list(frames)
    joined, join_info = join_predictions(frames, cfg.on_mismatch)
    data_path, meta_path = resolve_data(cfg.data, cfg.split)
    meta = read_meta(meta_path)
    texts = data_texts(data_path) if data_path is not None else None
    if texts is not None:
        check_data(texts, joined, data_path)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = compare_csv(joined, texts, names, cfg.preview_words)
    csv.to_csv(out / "eval_compare.csv", index=False)
    # metrics on the joined rows, so every run is scored on the same articles
    keys = set(joined["key"])
    all_metrics = {name: metrics_for_frame(f[f["id"].astype(str).isin(keys)], cfg.metrics)
                   for name, f in frames.items()}
    write_json(out / "metrics.json", {"stage": "compare", "runs": {n: str(p) for n, p in specs},
                                      "join": join_info, "skipped": {n: infos[n]["skipped_no_gold"] for n in names},
                                      "metrics": all_metrics, "config": cfg.model_dump(mode="json")})
    figures = write_figures(all_metrics, out)
    changes = base_tuned_changes(joined, csv, names, cfg)
    ctx = {"cfg": cfg, "names": names, "specs": specs, "metrics": all_metrics, "join": join_info,
           "infos": infos, "figures": figures, "changes": changes,
           "manifests": {name: read_manifest(path) for name, path in specs}, "note": split_note(meta),
           "data": data_summary(data_path, texts, meta), "n": len(joined), "appendix": read_appendix(cfg.appendix)}
    (out / "report.md").write_text(render_markdown(ctx), encoding="utf-8")
    written = ["eval_compare.csv", "metrics.json", *figures.values(), "per_class_f1.png", "report.md"]
    if cfg.html:
        (out / "report.html").write_text(render_html(ctx, out), encoding="utf-8")
        written.append("report.html")
    return {"out_dir": str(out), "files": written, "n": len(joined), "join": join_info, "metrics": all_metrics,
            "changes": {k: v for k, v in changes.items() if not k.endswith("examples")} if changes else None}


def _results_rows(ctx: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    by_outlet = any(ctx["metrics"][n].get("macro_f1_ci_outlets") for n in ctx["names"])
    header = ["model", "macro-F1", "95% CI", *(["95% CI (outlets)"] if by_outlet else []), "micro-F1", "accuracy",
              "invalid rate", "ordinal MAE", "ECE", "n"]
    rows = []
    fmt_ci = lambda ci: f"[{_fmt(ci['low'])}, {_fmt(ci['high'])}]" if ci else "–"  # noqa: E731
    for name in ctx["names"]:
        m = ctx["metrics"][name]
        rows.append([name, _fmt(m["macro_f1"]), fmt_ci(m.get("macro_f1_ci")),
                     *([fmt_ci(m.get("macro_f1_ci_outlets"))] if by_outlet else []),
                     _fmt(m["micro_f1"]), _fmt(m["accuracy"]), f"{m['invalid_rate']:.1%}", _fmt(m["ordinal_mae"]),
                     _fmt(m["ece"]), m["n"]])
    return header, rows


def _per_class_rows(ctx: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["model", *[f"{lab} F1" for lab in LABELS], *[f"{lab} P / R" for lab in LABELS]]
    rows = []
    for name in ctx["names"]:
        pc = ctx["metrics"][name]["per_class"]
        rows.append([name, *[_fmt(pc[lab]["f1"]) for lab in LABELS],
                     *[f"{_fmt(pc[lab]['precision'])} / {_fmt(pc[lab]['recall'])}" for lab in LABELS]])
    return header, rows


def _example_rows(examples: list[dict[str, Any]], ctx: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    cfg = ctx["cfg"]
    return (["id", "gold", cfg.base, cfg.tuned, "preview"],
            [[e["id"], e["gold"], e[cfg.base], e[cfg.tuned], e["preview"]] for e in examples])


def _outlet_rows(ctx: dict[str, Any], top: int = 20) -> Optional[tuple[list[str], list[list[Any]]]]:
    """Accuracy per outlet (largest outlets first) for every run, when metrics.by_outlet is on."""
    first = ctx["metrics"][ctx["names"][0]].get("by_outlet")
    if not first:
        return None
    per_run = {n: {r["outlet"]: r for r in ctx["metrics"][n]["by_outlet"]} for n in ctx["names"]}
    rows = [[r["outlet"], r["n"], *[_fmt(per_run[n][r["outlet"]]["accuracy"]) for n in ctx["names"]]]
            for r in first[:top]]
    return ["outlet", "n", *[f"{n} accuracy" for n in ctx["names"]]], rows


def _support_line(ctx: dict[str, Any]) -> str:
    first = ctx["metrics"][ctx["names"][0]]
    counts = ", ".join(f"{lab} {c}" for lab, c in first["gold_counts"].items())
    return f"{ctx['n']} articles (gold: {counts})."


def render_markdown(ctx: dict[str, Any]) -> str:
    """The Markdown report."""
    cfg = ctx["cfg"]
    parts = ["# newsbias: model comparison", ""]
    parts.append(f"Data: `{ctx['data']['path']}`, " if ctx["data"] else "Data: (no --data given), ")
    parts[-1] += _support_line(ctx)
    if ctx["data"] and ctx["data"].get("matches_prep_meta") is False:
        parts.append("\n**Warning:** the split file's sha256 differs from the one in prep_meta.json.")
    parts += ["", ctx["note"], ""]
    if ctx["join"]["common"] != ctx["join"]["union"]:
        parts += [f"Compared on the {ctx['join']['common']} ids common to all files "
                  f"(of {ctx['join']['union']}; missing per file: {ctx['join']['only_in']}).", ""]
    skipped = {n: i["skipped_no_gold"] for n, i in ctx["infos"].items() if i["skipped_no_gold"]}
    if skipped:
        parts += [f"Rows without gold skipped: {skipped}.", ""]
    parts += ["## Results", "", md_table(*_results_rows(ctx)), "",
              "Invalid outputs count as wrong. The interval is a percentile bootstrap over articles "
              f"({cfg.metrics.n_boot} resamples, seed {cfg.metrics.seed})"
              + ("; \"CI (outlets)\" resamples whole outlets, the honest interval when a few outlets dominate "
                 "the test set (articles of one outlet are not independent)." if cfg.metrics.by_outlet else "."), "",
              "## Per-class F1", "", md_table(*_per_class_rows(ctx)), "",
              "![per-class F1](per_class_f1.png)", "", "## Confusion matrices", "",
              "Rows are gold labels, columns predictions.", ""]
    parts += [f"![confusion matrix: {n}]({f})" for n, f in ctx["figures"].items()]
    parts.append("")
    ch = ctx["changes"]
    if ch:
        parts += [f"## Where {cfg.tuned} differs from {cfg.base}", "",
                  f"{cfg.tuned} fixes **{ch['fixed']}** of {cfg.base}'s errors and breaks **{ch['broken']}** of "
                  f"its correct answers (both right: {ch['both_right']}, both wrong: {ch['both_wrong']}).", ""]
        for kind in ("fixed", "broken"):
            ex = ch[f"{kind}_examples"]
            if ex:
                parts += [f"### {kind.capitalize()} (first {len(ex)})", "", md_table(*_example_rows(ex, ctx)), ""]
    outlets = _outlet_rows(ctx)
    if outlets:
        parts += ["## Largest outlets", "", md_table(*outlets), ""]
    parts += ["## Runs", ""]
    for name, path in ctx["specs"]:
        man = ctx["manifests"][name]
        parts.append(f"- **{name}**: `{path}`" + ("" if man else " (no manifest)"))
    parts += [f"- **{name}**: equal-weight mean of the probabilities of {' + '.join(i['ensemble_of'])}"
              for name, i in ctx["infos"].items() if i.get("ensemble_of")]
    parts.append("")
    if ctx.get("appendix"):
        parts += [ctx["appendix"].rstrip(), ""]
    for name, man in ctx["manifests"].items():
        if man:
            parts += [f"<details><summary>Manifest: {name}</summary>", "", "```json",
                      json.dumps(man, indent=2, ensure_ascii=False), "```", "", "</details>", ""]
    return "\n".join(parts)


def _img(out: Path, fname: str, alt: str) -> str:
    data = base64.b64encode((out / fname).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def render_html(ctx: dict[str, Any], out: Path) -> str:
    """A self-contained HTML report (figures inlined as data URIs)."""
    cfg = ctx["cfg"]
    e = html.escape
    note = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", e(ctx["note"]))
    body = ["<h1>newsbias: model comparison</h1>",
            f"<p>Data: <code>{e(ctx['data']['path'])}</code>, " if ctx["data"] else "<p>Data: (no --data given), ",
            e(_support_line(ctx)) + "</p>", f"<p>{note}</p>",
            "<h2>Results</h2>", html_table(*_results_rows(ctx)),
            "<p>Invalid outputs count as wrong. The interval is a percentile bootstrap over articles.</p>",
            "<h2>Per-class F1</h2>", html_table(*_per_class_rows(ctx)), _img(out, "per_class_f1.png", "per-class F1"),
            "<h2>Confusion matrices</h2><p>Rows are gold labels, columns predictions.</p>",
            "".join(_img(out, f, f"confusion matrix: {n}") for n, f in ctx["figures"].items())]
    ch = ctx["changes"]
    if ch:
        body += [f"<h2>Where {e(cfg.tuned)} differs from {e(cfg.base)}</h2>",
                 f"<p>{e(cfg.tuned)} fixes <strong>{ch['fixed']}</strong> of {e(cfg.base)}'s errors and breaks "
                 f"<strong>{ch['broken']}</strong> of its correct answers (both right: {ch['both_right']}, "
                 f"both wrong: {ch['both_wrong']}).</p>"]
        for kind in ("fixed", "broken"):
            if ch[f"{kind}_examples"]:
                body += [f"<h3>{kind.capitalize()}</h3>", html_table(*_example_rows(ch[f"{kind}_examples"], ctx))]
    outlets = _outlet_rows(ctx)
    if outlets:
        body += ["<h2>Largest outlets</h2>", html_table(*outlets)]
    body.append("<h2>Runs</h2><ul>")
    body += [f"<li><strong>{e(n)}</strong>: <code>{e(str(p))}</code></li>" for n, p in ctx["specs"]]
    body += [f"<li><strong>{e(n)}</strong>: equal-weight mean of the probabilities of {e(' + '.join(i['ensemble_of']))}"
             f"</li>" for n, i in ctx["infos"].items() if i.get("ensemble_of")]
    body.append("</ul>")
    if ctx.get("appendix"):
        body.append(f"<h2>Appendix</h2><pre>{e(ctx['appendix'])}</pre>")
    for name, man in ctx["manifests"].items():
        if man:
            body.append(f"<details><summary>Manifest: {e(name)}</summary><pre>"
                        f"{e(json.dumps(man, indent=2, ensure_ascii=False))}</pre></details>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%;margin:4px}"
             "pre{background:#f6f6f6;padding:8px;overflow:auto}")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>newsbias report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
