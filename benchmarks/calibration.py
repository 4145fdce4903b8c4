"""What the val-fitted temperature does to the demo's probabilities on test, and to its ensembles.

    .venv/bin/python benchmarks/calibration.py [--demo runs/demo] [--bins 15]

Every trained run of ``make demo`` scores with one temperature fitted on val (``train.calibrate``,
``baseline.calibrate``). This script reads the demo's prediction files, recovers each run's raw
probabilities from the calibrated ones (``softmax(T * log p)``: one division undone, up to the
6-decimal rounding of the files) and prints, per run, the temperature, the val log-loss and ECE the
fit saw, and on the test articles the log-loss and expected calibration error without and with it;
then the demo's equal-weight ensembles (``compare.ensembles`` of ``configs/demo.yaml``) averaged
from raw and from calibrated members: macro-F1 and ECE. Untrained runs (``*-base``) have no
temperature and are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from newsbias.config import load_config
from newsbias.metrics import (apply_temperature, expected_calibration_error, macro_f1, paired_macro_f1_difference,
                              prediction_frame)
from newsbias.report import ensemble_frame, parse_ensemble

ROOT = Path(__file__).resolve().parents[1]
# where each trained run of the demo keeps its temperature
SOURCES = {"tfidf-lr": ("preds/tfidf-lr.manifest.json", "calibration"),
           "lm-tuned": ("lm-adapter/newsbias.json", "calibration"),
           "enc-tuned": ("encoder/newsbias.json", "calibration")}


def fitted(demo: Path, run: str) -> dict:
    path, key = SOURCES[run]
    return json.loads((demo / path).read_text(encoding="utf-8")).get(key) or {"temperature": 1.0}


def scores(frame: pd.DataFrame, bins: int) -> dict[str, float]:
    p = np.stack(frame["probs"].to_list())
    p = p / p.sum(1, keepdims=True)  # the files round each probability to 6 decimals
    return {"macro_f1": macro_f1(frame["gold"], p.argmax(1), range(3)),
            "nll": log_loss(frame["gold"], np.clip(p, 1e-7, 1), labels=[0, 1, 2]),
            "ece": expected_calibration_error(p, frame["gold"].to_numpy(), bins)["ece"]}


def versus_tfidf(ens: pd.DataFrame, tfidf: pd.DataFrame) -> dict[str, float]:
    """The ensemble's macro-F1 minus TF-IDF's on the same articles, with the paired bootstrap interval."""
    t = tfidf.set_index(tfidf["id"].astype(str)).loc[ens["id"].astype(str)]
    d = paired_macro_f1_difference(ens["gold"].to_numpy(), ens["pred"].to_numpy(), t["pred"].to_numpy())
    return {"diff": d["diff"], "low": d["ci"]["low"], "high": d["ci"]["high"]}


def uncalibrated(frame: pd.DataFrame, t: float) -> pd.DataFrame:
    """``frame`` with the temperature undone: ``softmax(t * log p)``."""
    p = np.clip(np.stack(frame["probs"].to_list()), 5e-7, 1)  # a recorded 0 is a probability below 5e-7
    return frame.assign(probs=list(apply_temperature(np.log(p), 1 / t).tolist()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", default="runs/demo", help="the output directory of make demo")
    ap.add_argument("--bins", type=int, default=15)
    a = ap.parse_args()
    demo = Path(a.demo)
    cal = {r: prediction_frame(demo / "preds" / f"{r}.jsonl")[0] for r in SOURCES}
    temps = {r: fitted(demo, r) for r in SOURCES}
    raw = {r: uncalibrated(f, temps[r]["temperature"]) for r, f in cal.items()}
    print("| run | temperature | val log-loss raw → calibrated | val ECE raw → calibrated | test log-loss raw → "
          "calibrated | test ECE raw → calibrated | test macro-F1 |")
    print("|---|---:|---|---|---|---|---:|")
    for r in SOURCES:
        t, s0, s1 = temps[r], scores(raw[r], a.bins), scores(cal[r], a.bins)
        val = (f"{t['nll']:.3f} → {t['nll_calibrated']:.3f} | {t['ece']:.3f} → {t['ece_calibrated']:.3f}"
               if t.get("method") == "temperature" else "– | –")
        print(f"| {r} | {t['temperature']:.3f} | {val} | {s0['nll']:.3f} → {s1['nll']:.3f} | "
              f"{s0['ece']:.3f} → {s1['ece']:.3f} | {s1['macro_f1']:.3f} |")
    specs = load_config(ROOT / "configs" / "demo.yaml").compare.ensembles
    print("\n| ensemble (equal weights) | raw members: macro-F1, vs tfidf-lr [95% CI, paired] | calibrated members: "
          "macro-F1, vs tfidf-lr [95% CI, paired] | ECE raw → calibrated |")
    print("|---|---|---|---|")
    for spec in specs:
        name, members = parse_ensemble(spec, list(SOURCES))
        cells, ece = [], []
        for frames in (raw, cal):
            ens = ensemble_frame(frames, members, name)
            s = scores(ens, a.bins)
            d = versus_tfidf(ens, frames["tfidf-lr"])
            cells.append(f"{s['macro_f1']:.3f}, {d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
            ece.append(s["ece"])
        print(f"| {name} = {' + '.join(members)} | {cells[0]} | {cells[1]} | {ece[0]:.3f} → {ece[1]:.3f} |")

if __name__ == "__main__":
    main()
