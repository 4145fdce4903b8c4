"""Static (calibrated) int8 vs the ONNX fp32 export of a tuned model: speed, macro-F1, labels kept.

    .venv/bin/python benchmarks/int8_static.py MODEL_DIR DATA_DIR [--work DIR] [--n 1000]
        [--keep keep|all] [--method minmax|percentile|entropy] [--format QDQ|QOperator]

ONNX Runtime's ``quantize_static``: int8 weights per output channel, and every activation that
enters a weight product quantised with a scale fixed beforehand from 256 val articles (the
dynamic int8 that ``newsbias export --quantize int8`` ships computes that scale per batch at run
time). Activation x activation products (attention) stay fp32, and with ``--keep keep`` the MLP
output projections too, as the shipped int8 does. Both graphs score the first ``n`` test articles
at batch 16 (length-sorted, as predict does) in this one process. Prints articles/s, the ratio to
ONNX fp32, macro-F1, labels identical to fp32 and the median / largest probability change.
"""

from __future__ import annotations

import argparse
import re
import shutil
import time
from itertools import islice
from pathlib import Path

import numpy as np


def calibration_feeds(fp32_dir: Path, texts: list[str]) -> list[dict]:
    """The graph's input batches as ``predict`` builds them for ``texts``: what calibration must see."""
    from newsbias.classifier import Classifier

    clf = Classifier.load(str(fp32_dir))
    feeds, run = [], clf.model.session.run

    def recording(names, feed):
        feeds.append({k: v.copy() for k, v in feed.items()})
        return run(names, feed)

    clf.model.session.run = recording
    clf.predict_proba(texts, batch_size=16)
    return feeds


def quantize(fp32_dir: Path, out: Path, feeds: list[dict], keep: str, method: str, fmt: str) -> None:
    """``quantize_static`` of ``fp32_dir``'s graph into a copy of the export at ``out``."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from newsbias.config import INT8_KEEP_FP32
    from newsbias.onnx_model import ONNX_FILE, load_graph, node_scopes

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(feeds)

        def get_next(self):
            return next(self.batches, None)

    src = fp32_dir / ONNX_FILE
    graph = onnx.load(str(src), load_external_data=False).graph
    consts = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    act_act = [n.name for n in graph.node if n.op_type == "MatMul" and not consts & set(n.input)]
    kept = [n for n, s in node_scopes(load_graph(src)).items() if keep == "keep" and any(re.search(p, s) for p in INT8_KEEP_FP32)]
    shutil.copytree(fp32_dir, out, dirs_exist_ok=True)
    whole, pre = out / "whole.onnx", out / "pre.onnx"
    onnx.save(onnx.load(str(src)), str(whole))  # one file: the pre-processor cannot follow external data
    quant_pre_process(str(whole), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out / ONNX_FILE), Reader(), per_channel=True,
                    quant_format=QuantFormat.QDQ if fmt == "QDQ" else QuantFormat.QOperator,
                    op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=act_act + kept,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                      "entropy": CalibrationMethod.Entropy}[method],
                    extra_options={"MatMulConstBOnly": True, "CalibMovingAverage": method == "minmax"})
    for f in out.iterdir():
        if f.name in ("whole.onnx", "pre.onnx") or f.name.endswith(".data"):
            f.unlink()  # the fp32 weights: the quantised graph holds its own


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--work", default=None, help="default: MODEL_DIR-int8-static")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--keep", choices=["keep", "all"], default="keep")
    ap.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    ap.add_argument("--format", choices=["QDQ", "QOperator"], default="QDQ")
    args = ap.parse_args()
    from newsbias.classifier import Classifier
    from newsbias.config import ExportConfig
    from newsbias.export import run_export
    from newsbias.metrics import macro_f1
    from newsbias.modeling import set_threads
    from newsbias.records import read_articles

    set_threads(None)
    work = Path(args.work or args.model.rstrip("/") + "-int8-static")
    fp32, static = work / "onnx", work / f"static-{args.keep}-{args.method}-{args.format}"
    if not (fp32 / "model.onnx").is_file():
        run_export(ExportConfig(adapter=args.model, out=str(fp32), overwrite=True, format="onnx"))
    val = [a.text for a in islice(read_articles(Path(args.data) / "val.jsonl"), 256)]
    t = time.perf_counter()
    quantize(fp32, static, calibration_feeds(fp32, val), args.keep, args.method, args.format)
    print(f"calibrated and quantised in {time.perf_counter() - t:.0f} s")
    test = list(islice(read_articles(Path(args.data) / "test.jsonl"), args.n))
    texts, gold = [a.text for a in test], [a.label for a in test]
    rows = {}
    for name, d in (("ONNX fp32", fp32), (f"static int8 ({args.keep}, {args.method}, {args.format})", static)):
        clf = Classifier.load(str(d))
        clf.predict_proba(texts[:16], batch_size=16)  # warm-up
        t = time.perf_counter()
        probs = clf.predict_proba(texts, batch_size=16)
        rows[name] = (probs, len(texts) / (time.perf_counter() - t), np.array(clf.labels))
    ref, ref_rate = rows["ONNX fp32"][:2]
    print("| graph | articles/s | ratio | macro-F1 | labels = fp32 | median / max prob change |")
    print("|---|---|---|---|---|---|")
    for name, (probs, rate, labels) in rows.items():
        change = np.abs(probs - ref).max(1)
        print(f"| {name} | {rate:.1f} | {rate / ref_rate:.2f} | "
              f"{macro_f1(gold, labels[probs.argmax(1)], labels):.3f} | "
              f"{(probs.argmax(1) == ref.argmax(1)).mean():.1%} | {np.median(change):.4f} / {change.max():.3f} |")


if __name__ == "__main__":
    main()
