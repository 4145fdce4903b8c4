"""The report's figures (matplotlib, Agg backend): confusion matrices, per-class F1, reliability, accuracy per
outlet and learning curves. Each function draws one PNG from ``compare``'s metrics; ``newsbias.report`` decides
which are drawn and names the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from .labels import LABELS
from .metrics import chance_f1


def _pyplot() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    _pyplot().close(fig)


def plot_confusion(metrics: dict[str, Any], title: str, path: Path) -> None:
    """Confusion matrix normalised by gold row (so the diagonal is recall), with a colour bar.

    Invalid outputs are not a column of their own: a row's shares then sum to less than 1, and
    its label says how many of the row were invalid.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    labels = metrics["labels"]
    counts = np.array(metrics["confusion_matrix"]["matrix"], dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    k = len(labels)
    fig, ax = plt.subplots(figsize=(5.4, 4.4), dpi=110)
    ConfusionMatrixDisplay(share[:, :k], display_labels=labels).plot(
        ax=ax, cmap="Blues", values_format=".2f", colorbar=True, im_kw={"vmin": 0.0, "vmax": 1.0})
    ylabels = [f"{lab}\n(n={int(totals[i, 0])}" + (f", {share[i, k]:.0%} invalid)" if share[i, k] else ")")
               for i, lab in enumerate(labels)]
    ax.set_yticks(range(k), ylabels)
    ax.set(xlabel="predicted", ylabel="gold (share of the row)", title=title)
    _save(fig, path)


def _error_bars(values: list[float], cis: list[Optional[dict[str, Any]]]) -> Optional[np.ndarray]:
    """``(2, n)`` distances below / above each value, or None without intervals."""
    if any(ci is None for ci in cis):
        return None
    bounds = np.array([[ci["low"], ci["high"]] for ci in cis if ci]).T
    vals = np.array(values)
    return np.clip(np.stack([vals - bounds[0], bounds[1] - vals]), 0.0, None)


def plot_per_class_f1(all_metrics: dict[str, dict[str, Any]], path: Path) -> None:
    """Grouped bars: per-class F1 (and macro) for every run, bootstrap error bars, and the chance level."""
    plt = _pyplot()
    groups = list(LABELS) + ["macro"]
    names = list(all_metrics)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 * len(groups) + 0.4 * len(names)), 3.8), dpi=110)
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        m = all_metrics[name]
        vals = [m["per_class"][lab]["f1"] for lab in LABELS] + [m["macro_f1"]]
        cis = [(m.get("per_class_f1_ci") or {}).get(lab) for lab in LABELS] + [m.get("macro_f1_ci")]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name,
               yerr=_error_bars(vals, cis), capsize=2, error_kw={"elinewidth": 0.8})
    chance = chance_f1(next(iter(all_metrics.values()))["gold_counts"])
    levels = [chance["per_class"][lab] for lab in LABELS] + [chance["macro"]]
    ax.hlines(levels, x - 0.45, x + 0.45, colors="black", linestyles="dashed", linewidth=1,
              label="chance (uniform guess)")
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel("F1")
    ax.set_title("Per-class F1 (error bars: bootstrap interval)")
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path)


def plot_reliability(all_metrics: dict[str, dict[str, Any]], path: Path) -> bool:
    """One reliability diagram per run with probabilities (accuracy against confidence per bin, each bar labelled
    with its number of articles); False if none."""
    runs = [n for n, m in all_metrics.items() if m.get("calibration")]
    if not runs:
        return False
    plt = _pyplot()
    cols = min(3, len(runs))
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.3 * rows), dpi=110, squeeze=False)
    for ax in axes.flat[len(runs):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, runs):
        cal = all_metrics[name]["calibration"]
        bins = cal["bins"]
        ax.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=1 / cal["n_bins"],
               edgecolor="black", linewidth=0.5, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfect calibration")
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="tab:red",
                markersize=3, label="bin mean")
        for b in bins:  # a bar of 2 articles says little: each bar names its count
            ax.annotate(str(b["n"]), ((b["low"] + b["high"]) / 2, min(b["accuracy"], 0.9) + 0.02), ha="center",
                        fontsize=5, rotation=90)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top probability)", ylabel="accuracy",
               title=f"{name}: ECE {cal['ece']:.3f} (n={cal['n']})")
        ax.title.set_fontsize("small")
    axes.flat[0].legend(fontsize="x-small", loc="upper left")
    _save(fig, path)
    return True


def plot_outlets(all_metrics: dict[str, dict[str, Any]], path: Path, top: int = 20) -> bool:
    """Accuracy per outlet (largest first) and run as a heat map; each row names the outlet's label and n."""
    names = list(all_metrics)
    first = all_metrics[names[0]].get("by_outlet")
    if not first:
        return False
    plt = _pyplot()
    rows = first[:top]
    per_run = {n: {r["outlet"]: r["accuracy"] for r in all_metrics[n].get("by_outlet") or []} for n in names}
    acc = np.array([[per_run[n].get(r["outlet"], np.nan) for n in names] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(2.2 + 0.9 * len(names), 1.2 + 0.32 * len(rows)), dpi=110)
    # a one-hue scale, as the confusion matrices use: red-to-green is unreadable with red-green colour blindness
    im = ax.imshow(acc, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i, j in np.ndindex(acc.shape):
        if not np.isnan(acc[i, j]):
            ax.text(j, i, f"{acc[i, j]:.2f}", ha="center", va="center", fontsize="x-small",
                    color="white" if acc[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), [f"{r['outlet']} ({r.get('label', '?')}, n={r['n']})" for r in rows],
                  fontsize="small")
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title(f"Accuracy per outlet (largest {len(rows)})", fontsize="medium")
    _save(fig, path)
    return True


def plot_learning_curve(rows: dict[str, list[dict[str, Any]]], title: str, path: Path) -> bool:
    """Train loss per step and val loss beside it; val macro-F1 per eval on the right. False if the log is empty."""
    train, evals = rows["train"], rows["eval"]
    if not train and not evals:
        return False
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.4), dpi=110)
    if train:
        left.plot([r["step"] for r in train], [r.get("loss") for r in train], linewidth=0.8, label="train loss")
    val = [r for r in evals if r.get("val_loss") is not None]
    if val:
        left.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss")
    left.set(xlabel="optimizer step", ylabel="loss", title="Loss")
    left.legend(fontsize="small")
    f1 = [r for r in evals if r.get("val_macro_f1") is not None]
    right.plot([r["step"] for r in f1], [r["val_macro_f1"] for r in f1], "o-", color="tab:green")
    right.set(xlabel="optimizer step", ylabel="val macro-F1", ylim=(0, 1), title="Validation macro-F1")
    fig.suptitle(title)
    _save(fig, path)
    return True
