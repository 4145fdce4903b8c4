"""Synthetic raw-article fixtures for the prep tests (importable helpers, no pytest magic)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

# 24 outlets, 8 per label: enough for an outlet-disjoint split to hold every label on every side
LABEL_OF_OUTLET = {f"{lab}-{i}.{tld}": lab for lab in ("left", "center", "right")
                   for i, tld in zip(range(8), ("com", "org", "net", "com", "org", "net", "com", "org"))}
VOCAB = [f"w{i}" for i in range(600)]


def article_text(rng: random.Random, n_words: int = 80) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n_words)) + "."


def make_articles(n: int = 240, seed: int = 0) -> list[dict]:
    """``n`` distinct articles, each from an outlet whose label it carries, with dates over 2015-2020."""
    rng = random.Random(seed)
    outlets = sorted(LABEL_OF_OUTLET)
    rows = []
    for i in range(n):
        outlet = outlets[i % len(outlets)]
        rows.append({
            "id": f"a{i:04d}",
            "title": f"Title {i}",
            "text": article_text(rng),
            "label": LABEL_OF_OUTLET[outlet],
            "source": outlet.split(".")[0].replace("-", " ").title(),
            "url": f"https://www.{outlet}/news/{i}",
            "date": f"{2015 + i % 6}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        })
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> Path:
    fields = fields or list(rows[0])
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in fields})
    return path


def kaggle_rows(rows: list[dict]) -> list[dict]:
    """The same articles in the Kaggle bias_clean.csv schema, with its five-point labels."""
    five = {"left": ["left", "leaning-left"], "center": ["center"], "right": ["right", "leaning-right"]}
    out = []
    for i, r in enumerate(rows):
        out.append({"url": r["url"], "topic": "politics", "date": r["date"], "title": r["title"],
                    "site": r["source"], "bias": five[r["label"]][i % len(five[r["label"]])], "page_text": r["text"]})
    return out
