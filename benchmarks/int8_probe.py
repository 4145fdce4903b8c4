"""Probe: does torch's dynamic int8 quantisation keep a tuned model's labels? (issue: fast CPU inference)

    .venv/bin/python benchmarks/int8_probe.py MODEL_DIR TEST_JSONL [--n 300] [--batch 16]

Scores the first ``n`` articles with the model in fp32, then with the Linear layers of its body
(the encoder, or the decoder stack without the LM head) dynamically quantised to int8, per-tensor
and per-channel weights, and prints a Markdown table: articles/s, speed ratio, labels identical to
fp32, macro-F1, largest probability change. Same process, same inputs, one run.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from itertools import islice

import numpy as np
import torch
from sklearn.metrics import f1_score

from newsbias.classifier import Classifier
from newsbias.modeling import _hf_model, score_encoded
from newsbias.records import read_articles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("test")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # torch.ao.quantization's deprecation notices
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    clf = Classifier.load(args.model, dtype="float32")
    arts = list(islice(read_articles(args.test), args.n))
    encs = [clf.builder.encode(a.text) for a in arts]
    gold = np.array([clf.labels.index(a.label) for a in arts])

    def run(model):
        t = time.perf_counter()
        p = score_encoded(model, clf.tokenizer, clf.settings, encs, args.batch, clf.builder)
        return p, time.perf_counter() - t

    ref, t0 = run(clf.model)
    print("| weights | articles/s | ratio | labels = fp32 | macro-F1 | max prob change |")
    print("|---|---|---|---|---|---|")
    print(f"| fp32 | {len(arts) / t0:.1f} | 1.00 | 100 % | {f1_score(gold, ref.argmax(1), average='macro'):.3f} | 0 |")
    for name, qc in (("int8 per-tensor", default_dynamic_qconfig), ("int8 per-channel", per_channel_dynamic_qconfig)):
        m = copy.deepcopy(clf.model)
        body = _hf_model(m).base_model if clf.settings.head == "lm" else m.encoder
        quantize_dynamic(body, {torch.nn.Linear: qc}, inplace=True)
        p, t = run(m)
        print(f"| {name} | {len(arts) / t:.1f} | {t0 / t:.2f} | {(p.argmax(1) == ref.argmax(1)).mean():.1%} | "
              f"{f1_score(gold, p.argmax(1), average='macro'):.3f} | {np.abs(p - ref).max():.2f} |")


if __name__ == "__main__":
    main()
