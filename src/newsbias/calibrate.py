"""Fit a trained model's probability temperature on held-out articles (``newsbias calibrate``).

``newsbias train`` already fits one on the val articles it evaluated (``train.calibrate``). This
stage fits it again, for a model trained before that existed, on more val articles than training
scored (``train.data.val_limit``), or after a merge or ONNX export: it scores the labelled articles
with the raw softmax, fits the temperature (:meth:`newsbias.classifier.Classifier.calibrate`) and
writes it into the model's ``newsbias.json``, where every scoring path reads it. Labels never change.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from .classifier import Classifier
from .config import CalibrateConfig
from .errors import NewsbiasError, SettingError
from .export import refresh_card_temperature
from .io import read_json, sha256_file
from .metrics import FEW_FOR_TEMPERATURE
from .modeling import SETTINGS_FILE, keeps_threads, set_threads
from .records import PREP_META, TRAIN_MANIFEST, read_articles, resolve_split

log = logging.getLogger(__name__)


def settings_dir(clf: Classifier) -> Path:
    """The directory whose ``newsbias.json`` ``clf`` was loaded from: where its temperature belongs."""
    d = Path(clf.adapter or clf.source)
    if not (d.is_dir() and (d / SETTINGS_FILE).is_file()):
        raise NewsbiasError(f"{clf.source} is a base model without {SETTINGS_FILE}, so there is nowhere to keep a "
                            f"temperature; calibrate a `newsbias train` output (--adapter) or a trained model "
                            f"directory (--model)")
    if not os.access(d, os.W_OK):  # found before every article is scored, not after
        raise NewsbiasError(f"cannot write {d / SETTINGS_FILE}: the directory is not writable; copy the model "
                            f"somewhere writable and calibrate the copy")
    return d


def _is_test_split(path: Path, model_dir: Path) -> bool:
    """Whether ``path`` is a prep output's test split: by name, or by content against the prep_meta.json beside it
    and the one the model was trained from (its training manifest records that prep's outputs)."""
    trained = ((read_json(model_dir / TRAIN_MANIFEST, strict=False) or {}).get("data") or {}).get("prep_meta") or {}
    metas = [read_json(path.parent / PREP_META, strict=False) or {}, trained]
    tests = {((m.get("outputs") or {}).get("test.jsonl") or {}).get("sha256") for m in metas} - {None}
    return path.name.lower() == "test.jsonl" or (bool(tests) and sha256_file(path) in tests)


@keeps_threads
def run_calibrate(cfg: CalibrateConfig) -> dict[str, Any]:
    """Fit the temperature of the model ``cfg`` names on ``cfg.data`` and write it; returns the fit,
    the temperature it replaced, and where it was written."""
    t0 = time.time()
    if not cfg.data:
        raise NewsbiasError("no articles to calibrate on: set calibrate.data (--data) to a prep output directory "
                            "or a labelled JSONL file")
    path = resolve_split(cfg.data, cfg.split, "calibrate.data", "calibrate.split")
    articles = read_articles(path, cfg.limit, need_label=True)  # bad data fails before the model loads
    if not articles:
        raise NewsbiasError(f"{path} has no articles to calibrate on; point calibrate.data (--data) at a prep output "
                            f"whose val split has articles")
    if len(articles) < FEW_FOR_TEMPERATURE:
        log.warning("calibrating on %d articles: a temperature fitted on so few is noisy (a few hundred held-out "
                    "articles give a stable one)", len(articles))
    set_threads(cfg.threads)
    try:
        clf = Classifier.from_options(cfg.model, cfg.adapter, cfg.gguf_file, device=cfg.device, dtype=cfg.dtype)
    except SettingError as exc:
        raise exc.named(f"calibrate.{exc.key}") from None
    target = settings_dir(clf)
    if _is_test_split(path, target):
        log.warning("calibrating on %s, a test split (by its name or its content): its scores will no longer be held "
                    "out; use val", path)
    before = clf.settings.temperature
    fit = clf.calibrate([clf.article_text(a.title, a.text) for a in articles], [a.label for a in articles],
                        cfg.batch_size)
    clf.settings.calibration["data"] = {"path": str(path), "sha256": sha256_file(path)}
    clf.settings.save(target)
    if refresh_card_temperature(target, clf.settings.calibration):
        log.info("calibrate: the model card (README.md) gives the new temperature")
    log.info("calibrate: %d articles in %.1fs", len(articles), time.time() - t0)
    return {"fit": fit, "previous_temperature": before, "written": str(target / SETTINGS_FILE), "n": len(articles)}


__all__ = ["run_calibrate", "settings_dir"]
