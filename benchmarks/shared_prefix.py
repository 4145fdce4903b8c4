"""The prompt's shared prefix computed once per batch vs once per article, for scoring, generation and a LoRA step.

    .venv/bin/python benchmarks/shared_prefix.py MODEL TEST_JSONL [--n 128] [--batch 16] [--max-length 128 256 512]
        [--train-batch 8] [--train-steps 4] [--generate 64] [--new-tokens 4] [--threads N]

MODEL is anything :meth:`newsbias.classifier.Classifier.from_options` takes as ``model`` (a model
directory, or a ``.gguf`` file such as the demo's SmolLM2). Every prompt begins with the same tokens
(the chat template's system message and the instruction: 61 of the demo's 128 for SmolLM2);
:func:`newsbias.modeling.answer_hidden` runs them once per batch and lets every row attend to their
key/value cache. This script turns that off (``SHARED_PREFIX_MIN`` above any prompt's length) and on,
alternately, on the first ``n`` articles of a split, for each prompt budget (``--max-length``):

- scoring as ``predict`` scores (``Classifier.predict_proba``, length-sorted batches of ``--batch``):
  articles per second each way, identical labels, the largest probability change;
- generation as ``predict --mode generate`` runs it (``Classifier.generate``, greedy, ``--new-tokens``, on the
  first ``--generate`` articles; ``share_prefix`` on, or off: plain left-padded batches): articles per
  second each way and the share of identical answers (0 skips it);
- a LoRA training step as ``newsbias train`` takes it (configs/demo.yaml's LoRA, loss on the label
  token, ``--train-batch`` articles, dropout 0 so the two ways see the same computation): seconds
  per step each way and the largest relative difference between their gradients.

Wall-clock seconds, the two ways interleaved so a change in machine load hits both alike. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

import newsbias.modeling as modeling
from newsbias.classifier import Classifier
from newsbias.config import load_config
from newsbias.modeling import LabelLossModule, add_lora, set_threads
from newsbias.records import read_articles
from newsbias.train import Example, LabelOnlyCollator, encode_examples

sys.path.insert(0, str(Path(__file__).resolve().parent))
from length_sort import with_max_length  # noqa: E402

OFF = 10 ** 9
ROOT = Path(__file__).resolve().parents[1]


def timed(share: bool, fn, *args, **kwargs):
    """(seconds, result) of ``fn(*args, **kwargs)`` with prefix sharing on or off."""
    saved = modeling.SHARED_PREFIX_MIN
    modeling.SHARED_PREFIX_MIN = saved if share else OFF
    try:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        return time.perf_counter() - t, out
    finally:
        modeling.SHARED_PREFIX_MIN = saved


def scoring(clf: Classifier, texts: list[str], batch: int) -> dict[str, float]:
    """Articles/s each way, window by window in alternating order; labels and probabilities compared."""
    clf.predict_proba(texts[:batch], batch_size=batch)  # warm-up
    secs, probs = {True: 0.0, False: 0.0}, {True: [], False: []}
    for k, w in enumerate(range(0, len(texts), 4 * batch)):
        chunk = texts[w:w + 4 * batch]
        for share in ((True, False) if k % 2 == 0 else (False, True)):
            s, p = timed(share, clf.predict_proba, chunk, batch_size=batch)
            secs[share] += s
            probs[share].append(p)
    on, off = np.vstack(probs[True]), np.vstack(probs[False])
    return {"aps_on": len(texts) / secs[True], "aps_off": len(texts) / secs[False],
            "same": float((on.argmax(1) == off.argmax(1)).mean()), "max_diff": float(np.abs(on - off).max())}


def generation(clf: Classifier, texts: list[str], batch: int, new_tokens: int) -> dict[str, float]:
    """Articles/s of greedy generation each way, window by window in alternating order; answers compared."""
    clf.generate(texts[:batch], new_tokens, batch)  # warm-up
    secs, out = {True: 0.0, False: 0.0}, {True: [], False: []}
    for k, w in enumerate(range(0, len(texts), 2 * batch)):
        chunk = texts[w:w + 2 * batch]
        for share in ((True, False) if k % 2 == 0 else (False, True)):
            t = time.perf_counter()
            out[share] += clf.generate(chunk, new_tokens, batch, share_prefix=share)
            secs[share] += time.perf_counter() - t
    same = np.mean([a == b for a, b in zip(out[True], out[False])])
    return {"gen_on": len(texts) / secs[True], "gen_off": len(texts) / secs[False], "gen_same": float(same)}


def training(module: LabelLossModule, batches: list[dict], params: list[torch.Tensor]) -> dict[str, float]:
    """Seconds per forward + backward each way (alternating), and the gradients' largest relative difference."""
    def step(b):
        module.zero_grad()
        module(**b)[0].backward()
        return torch.cat([p.grad.flatten() for p in params])
    secs, rel = {True: 0.0, False: 0.0}, 0.0
    for k, b in enumerate(batches):
        grads = {}
        for share in ((True, False) if k % 2 == 0 else (False, True)):
            s, grads[share] = timed(share, step, b)
            secs[share] += s
        rel = max(rel, float((grads[True] - grads[False]).norm() / grads[False].norm()))
    return {"step_on": secs[True] / len(batches), "step_off": secs[False] / len(batches), "grad_rel": rel}


def train_batches(clf: Classifier, texts: list[str], labels: list[str], size: int, steps: int) -> list[dict]:
    examples = [Example(str(i), t, lab) for i, (t, lab) in enumerate(zip(texts, labels))][:size * steps]
    feats = encode_examples(clf.builder, examples, "lm")
    collate = LabelOnlyCollator(clf.tokenizer.pad_token_id)
    return [collate(feats[s:s + size]) for s in range(0, len(feats), size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("test")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-steps", type=int, default=4)
    ap.add_argument("--generate", type=int, default=64, help="articles to generate for (0: skip generation)")
    ap.add_argument("--new-tokens", type=int, default=4, help="greedy tokens per article (configs/demo.yaml's 4)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    set_threads(args.threads)
    demo = load_config(ROOT / "configs" / "demo.yaml").train.lora  # the demo's LoRA, with dropout 0 (see above)
    clf = Classifier.from_options(model=args.model, device="cpu", dtype="float32")
    arts = list(islice(read_articles(args.test), args.n))
    texts, labels = [a.text for a in arts], [a.label or "left" for a in arts]
    print(f"{args.model}: {len(texts)} articles of {args.test}, scoring batch {args.batch}, training batch "
          f"{args.train_batch} x {args.train_steps} steps, {torch.get_num_threads()} threads, wall seconds\n")
    print("| max_length | shared prefix tokens | articles/s, shared | once per article | ratio | labels identical | "
          "max prob change | generation articles/s, shared | left-padded | ratio | answers identical | "
          "LoRA step s, shared | once per article | ratio | max grad rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for budget in args.max_length:
        with_max_length(clf, budget)
        clf.model.eval()
        s = scoring(clf, texts, args.batch)
        g = generation(clf, texts[:args.generate], args.batch, args.new_tokens) if args.generate else None
        gen = (f"{g['gen_on']:.2f} | {g['gen_off']:.2f} | {g['gen_on'] / g['gen_off']:.2f} | {g['gen_same']:.1%}"
               if g else "– | – | – | –")
        lora = add_lora(clf.model, "lm", r=demo.r, alpha=demo.alpha, dropout=0.0, target_modules=demo.target_modules)
        lora.train()
        params = [p for p in lora.parameters() if p.requires_grad]
        module = LabelLossModule(lora, "lm", clf.builder.label_token_ids)
        t = training(module, train_batches(clf, texts, labels, args.train_batch, args.train_steps), params)
        clf.model = lora.unload()  # the base model back, LoRA layers removed
        prefix = len(clf.builder.lead_ids) + len(clf.builder.prefix_ids)
        print(f"| {budget} | {prefix} | {s['aps_on']:.2f} | {s['aps_off']:.2f} | {s['aps_on'] / s['aps_off']:.2f} | "
              f"{s['same']:.1%} | {s['max_diff']:.1e} | {gen} | {t['step_on']:.2f} | {t['step_off']:.2f} | "
              f"{t['step_off'] / t['step_on']:.2f} | {t['grad_rel']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
