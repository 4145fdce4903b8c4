"""Length-sorted vs input-order batching on the real lengths of a test split (issue: fast CPU inference).

    .venv/bin/python benchmarks/length_sort.py MODEL_DIR TEST_JSONL [--n 128] [--batch 16] [--window 64]
        [--max-length 128 512 2048] [--threads 1] [--layers N]

MODEL_DIR is anything :meth:`newsbias.classifier.Classifier.load` takes (a ``newsbias train`` output,
a trained model directory). For each prompt budget (``--max-length``; the prompt is rebuilt with it,
so the lengths are the split's own articles cut to that budget) the first ``n`` articles are scored
as ``predict`` scores them: ``--window`` articles at a time (``predict.chunk_size``), ``--batch``
per forward pass, once with batches grouped by length (what predict and serve do) and once in input
order. The two orders alternate window by window so a change in machine load hits both alike, and
the speed is CPU seconds of this process (``time.process_time``; with ``--threads 1``, the default,
other processes on the machine barely move it). ``--layers N`` keeps the first N transformer layers:
every layer does the same work per token, so the sorted/input-order ratio is the whole model's, in a
fraction of the time (long prompts on a 135M model take seconds per article on one core).

Prints a Markdown table: share of articles cut, padded tokens computed per real token in each order,
articles/s in each order, the speed ratio, identical labels and the largest probability change.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from itertools import islice

import numpy as np
import torch

from newsbias.classifier import Classifier
from newsbias.modeling import prompt_builder, set_threads
from newsbias.records import read_articles


def keep_layers(model: torch.nn.Module, n: int) -> int:
    """Cut the model's stack of transformer layers to its first ``n`` (decoder or encoder); returns how many it had."""
    stacks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 1]
    stack = max(stacks, key=len)
    had = len(stack)
    del stack[n:]
    return had


def with_max_length(clf: Classifier, budget: int) -> None:
    """Rebuild ``clf``'s prompt with ``budget`` tokens, so its articles are cut to that length."""
    clf.settings = dataclasses.replace(clf.settings, prompt=clf.settings.prompt.model_copy(
        update={"max_length": budget}))
    clf.builder = prompt_builder(clf.tokenizer, clf.settings)


def padded_per_real(lengths: list[int], batch: int, window: int, sort: bool) -> float:
    """Tokens a batched forward computes (each batch padded to its longest prompt) per real prompt token."""
    computed = 0
    for w in range(0, len(lengths), window):
        chunk = lengths[w:w + window]
        if sort:
            chunk = sorted(chunk, reverse=True)
        computed += sum(max(chunk[b:b + batch]) * len(chunk[b:b + batch]) for b in range(0, len(chunk), batch))
    return computed / sum(lengths)


def measure(clf: Classifier, texts: list[str], batch: int, window: int) -> dict[str, float]:
    """Score ``texts`` in both orders, window by window; times, probabilities and padding of each."""
    encs = [clf.builder.encode(t) for t in texts]
    lengths = [len(e.input_ids) for e in encs]
    clf.predict_proba(texts[:batch], batch_size=batch)  # warm-up: first-call allocations are not batching's cost
    probs: dict[bool, list[np.ndarray]] = {True: [], False: []}
    secs = {True: 0.0, False: 0.0}
    for k, w in enumerate(range(0, len(texts), window)):
        chunk = texts[w:w + window]
        for sort in ((True, False) if k % 2 == 0 else (False, True)):
            t = time.process_time()
            probs[sort].append(clf.predict_proba(chunk, batch_size=batch, length_sorted=sort))
            secs[sort] += time.process_time() - t
    ps, pi = np.vstack(probs[True]), np.vstack(probs[False])
    return {"cut": float(np.mean([e.truncated for e in encs])), "median_len": float(np.median(lengths)),
            "pad_sorted": padded_per_real(lengths, batch, window, True),
            "pad_input": padded_per_real(lengths, batch, window, False),
            "aps_sorted": len(texts) / secs[True], "aps_input": len(texts) / secs[False],
            "same": float((ps.argmax(1) == pi.argmax(1)).mean()), "max_diff": float(np.abs(ps - pi).max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("test")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--window", type=int, default=64, help="articles scored at a time (predict.chunk_size)")
    ap.add_argument("--max-length", type=int, nargs="+", default=[128, 512, 1024])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--layers", type=int, default=None, help="keep only the first N transformer layers")
    args = ap.parse_args()
    set_threads(args.threads)
    clf = Classifier.load(args.model, dtype="float32")
    if args.layers:
        keep_layers(clf.model, args.layers)
    texts = [a.text for a in islice(read_articles(args.test), args.n)]
    layers = f", first {args.layers} layers" if args.layers else ""
    print(f"{args.model}{layers}: {len(texts)} articles of {args.test}, batch {args.batch}, window {args.window}, "
          f"{torch.get_num_threads()} threads, CPU seconds\n")
    print("| max_length | median prompt tokens | cut | computed/real tokens, sorted | input order | "
          "articles per CPU-s, sorted | input order | ratio | labels identical | max prob change |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for budget in args.max_length:
        with_max_length(clf, budget)
        r = measure(clf, texts, args.batch, args.window)
        print(f"| {budget} | {r['median_len']:.0f} | {r['cut']:.0%} | {r['pad_sorted']:.2f} | {r['pad_input']:.2f} | "
              f"{r['aps_sorted']:.2f} | {r['aps_input']:.2f} | {r['aps_sorted'] / r['aps_input']:.2f} | "
              f"{r['same']:.1%} | {r['max_diff']:.1e} |", flush=True)


if __name__ == "__main__":
    main()
