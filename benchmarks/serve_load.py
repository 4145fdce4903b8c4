"""Load test of ``newsbias serve``: micro-batching on vs ``max_batch=1``, on 127.0.0.1 only.

    .venv/bin/python benchmarks/serve_load.py [--requests 2000] [--clients 16] [--max-batch 16]
        [--max-wait-ms 5] [--max-seconds 180] [--rounds 1] [--threads 1] [--model DIR]

Builds a tiny Qwen3-architecture model (random weights, a BPE tokenizer trained on the spot)
unless ``--model`` is given, then for each setting starts ``newsbias serve`` in a subprocess on a
free port of 127.0.0.1 and sends ``--requests`` requests from ``--clients`` concurrent httpx
clients: about 70% valid (``texts`` or ``articles``, one article each) and 30% malformed, of twelve
kinds (truncated JSON, empty or zero-width-only text, a missing field, lone surrogates, NUL, wrong
types, JSON nested 3,000 deep, bytes that are not UTF-8, a wrong content type, an oversized
article, too many articles). Checks: no 5xx, every
invalid request gets its expected 4xx, and every valid answer equals ``score_batch`` on the same
text in this process. Each run stops after ``--requests`` or ``--max-seconds``, whichever comes
first. Prints a Markdown table (p50/p99 latency over all requests, requests/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

LABELS = ["left", "center", "right"]
WORDS = ("the a of to in and for on with as by at from that this it is was were be has had have will said state "
         "city government people year report news new law court plan policy vote house senate bill tax money "
         "health school police election campaign president governor county federal public official group "
         "leaders market economy climate water energy jobs workers company business union border trade deal "
         "progressive moderate traditional").split()


def build_tiny_model(out: Path) -> Path:
    """A tiny Qwen3ForCausalLM (2 layers, hidden 64) + byte-level BPE tokenizer, saved to ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    rng = random.Random(1)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(20)) for _ in range(400)]
    corpus += [f" {w}" * 10 for w in ["left", "center", "right", "Answer", "Article", "Classify", "political"]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=1024, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=specials[1:])
    cfg = Qwen3Config(vocab_size=len(hf), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                      tie_word_embeddings=True, pad_token_id=hf.pad_token_id, eos_token_id=hf.eos_token_id,
                      bos_token_id=None)
    torch.manual_seed(0)
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    hf.save_pretrained(out)
    return out


def article_pool(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct filler articles of 20 to 150 words."""
    rng = random.Random(seed)
    return [f"Article {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 150))) + "."
            for i in range(n)]


def _invalid(kind: str, max_chars: int, rng: random.Random) -> tuple[bytes, int, dict[str, str]]:
    """(body, expected status, extra headers) of one malformed request of ``kind``."""
    js = {"content-type": "application/json"}
    if kind == "truncated JSON":
        return b'{"texts": ["unterminated', 422, js
    if kind == "empty text":
        return json.dumps({"texts": ["   "]}).encode(), 422, js
    if kind == "missing text":
        return json.dumps({"articles": [{"title": "no text"}]}).encode(), 422, js
    if kind == "lone surrogate":
        return b'{"texts": ["budget \\ud83d talks"]}', 422, js
    if kind == "NUL":
        return b'{"texts": ["budget\\u0000talks"]}', 422, js
    if kind == "zero-width only":
        return b'{"texts": ["\\u200b\\u200d\\ufeff"]}', 422, js
    if kind == "wrong type":
        return json.dumps(rng.choice([{"texts": "not a list"}, {"texts": [1, 2]}, {"articles": [{"text": 5}]},
                                      {"texts": [{"a": 1}]}, [1, 2], "texts"])).encode(), 422, js
    if kind == "deeply nested":
        return b'{"texts": ' + b"[" * 3000 + b"]" * 3000 + b"}", 422, js
    if kind == "not UTF-8":
        return b'{"texts": ["caf\xe9 politics"]}', 422, js
    if kind == "wrong content type":
        return b"texts=hello", 422, {"content-type": rng.choice(["text/plain", "application/x-www-form-urlencoded"])}
    if kind == "oversized article":
        return json.dumps({"texts": ["y" * (max_chars + 1)]}).encode(), 413, js
    if kind == "too many articles":
        return json.dumps({"texts": ["z"] * 100}).encode(), 413, js
    raise ValueError(kind)


INVALID_KINDS = ("truncated JSON", "empty text", "missing text", "lone surrogate", "NUL", "zero-width only",
                 "wrong type", "deeply nested", "not UTF-8", "wrong content type", "oversized article",
                 "too many articles")


def make_requests(n: int, pool: list[str], max_chars: int, seed: int = 0,
                  invalid_share: float = 0.3) -> list[dict[str, Any]]:
    """``{"body", "headers", "expect", "text", "kind"}``; ``invalid_share`` of them malformed, of every kind."""
    rng = random.Random(seed)
    out = []
    js = {"content-type": "application/json"}
    for i in range(n):
        text = rng.choice(pool)
        if rng.random() < invalid_share:
            kind = INVALID_KINDS[i % len(INVALID_KINDS)]
            body, status, headers = _invalid(kind, max_chars, rng)
            out.append({"body": body, "headers": headers, "expect": status, "text": None, "kind": kind})
        elif rng.random() < 0.5:
            out.append({"body": json.dumps({"texts": [text]}).encode(), "headers": js, "expect": 200, "text": text,
                        "kind": "valid"})
        else:
            out.append({"body": json.dumps({"articles": [{"id": f"r{i}", "text": text}]}).encode(), "headers": js,
                        "expect": 200, "text": text, "kind": "valid"})
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, max_batch: int, max_wait_ms: float, max_chars: int,
                 threads: int | None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "newsbias.cli", "serve", "--model", model, "--host", "127.0.0.1",
           "--port", str(port), "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--device", "cpu",
           "serve.log_level=warning", f"serve.max_article_chars={max_chars}", "serve.prompt.max_length=256"]
    if threads:
        cmd += ["--threads", str(threads)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


async def run_load(url: str, reqs: list[dict[str, Any]], clients: int, max_seconds: float,
                   ) -> tuple[list[dict[str, Any]], float]:
    """Send the requests from ``clients`` concurrent workers; returns per-request outcomes and wall time."""
    import httpx

    queue: asyncio.Queue = asyncio.Queue()
    for r in reqs:
        queue.put_nowait(r)
    outcomes: list[dict[str, Any]] = []
    t_end = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < t_end:
            try:
                r = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                resp = await client.post("/v1/classify", content=r["body"], headers=r["headers"])
                status, body = resp.status_code, resp.json()
            except (httpx.HTTPError, ValueError) as exc:
                status, body = -1, {"error": repr(exc)}
            outcomes.append({**r, "status": status, "response": body, "ms": (time.perf_counter() - t0) * 1000})

    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return outcomes, time.perf_counter() - t0


def check(outcomes: list[dict[str, Any]], reference: dict[str, np.ndarray]) -> dict[str, int]:
    """Counts of 5xx, transport errors, wrong statuses and wrong answers."""
    bad = {"5xx": 0, "errors": 0, "wrong_status": 0, "wrong_answer": 0, "valid_ok": 0}
    for o in outcomes:
        if o["status"] >= 500:
            bad["5xx"] += 1
        elif o["status"] < 0:
            bad["errors"] += 1
        elif o["status"] != o["expect"]:
            bad["wrong_status"] += 1
        elif o["expect"] == 200:
            res = o["response"]["results"][0]
            ref = reference[o["text"]]
            probs = np.array([res["probs"][l] for l in LABELS])
            close = np.allclose(probs, ref, atol=1e-4)
            top = np.sort(ref)[-2:]
            pred_ok = res["pred"] == LABELS[int(np.argmax(ref))] or top[1] - top[0] < 1e-4
            if close and pred_ok:
                bad["valid_ok"] += 1
            else:
                bad["wrong_answer"] += 1
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--max-seconds", type=float, default=180, help="Time limit of one run.")
    ap.add_argument("--rounds", type=int, default=1, help="Alternating rounds of (batched, max_batch=1).")
    ap.add_argument("--threads", type=int, default=1, help="Server's torch threads (serve.threads; 0 = torch default).")
    ap.add_argument("--model", help="Base model dir (default: build the tiny model).")
    ap.add_argument("--max-chars", type=int, default=5000, help="serve.max_article_chars for the run.")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_before = os.getloadavg()[0]

    from newsbias.config import ServeConfig
    from newsbias.serve import load_model

    tmp = tempfile.TemporaryDirectory(prefix="newsbias-serve-load-")
    model = args.model or str(build_tiny_model(Path(tmp.name) / "tiny"))
    pool = article_pool(64)
    clf = load_model(ServeConfig(model=model, device="cpu", prompt={"max_length": 256}))
    # each text alone, as `predict` would score it
    reference = {t: clf.predict_proba([t], batch_size=1)[0] for t in pool}
    reqs = make_requests(args.requests, pool, args.max_chars)
    n_valid = sum(r["expect"] == 200 for r in reqs)

    rows, failed = [], False
    settings_list = [("micro-batching", args.max_batch, args.max_wait_ms), ("batch size 1", 1, 0.0)]
    for rnd in range(args.rounds):
        for name, mb, wait in settings_list:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = start_server(model, port, mb, wait, args.max_chars, args.threads)
            try:
                wait_ready(url, proc)
                asyncio.run(run_load(url, make_requests(50, pool, args.max_chars, seed=99), args.clients, 30))
                outcomes, wall = asyncio.run(run_load(url, reqs, args.clients, args.max_seconds))
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            c = check(outcomes, reference)
            ms = np.array([o["ms"] for o in outcomes])
            batch = [o["response"].get("batch_texts", 0) for o in outcomes if o["status"] == 200]
            rows.append({"setting": name, "round": rnd + 1, "max_batch": mb, "max_wait_ms": wait,
                         "sent": len(outcomes), "valid_ok": f"{c['valid_ok']}/{n_valid}", "5xx": c["5xx"],
                         "wrong": c["wrong_status"] + c["wrong_answer"] + c["errors"],
                         "mean_batch": float(np.mean(batch)) if batch else 0.0,
                         "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                         "rps": len(outcomes) / wall})
            failed |= c["5xx"] > 0 or c["wrong_status"] + c["wrong_answer"] + c["errors"] > 0 \
                or c["valid_ok"] != n_valid or len(outcomes) != len(reqs)
    tmp.cleanup()

    print(f"\n{args.requests} requests ({n_valid} valid, {len(reqs) - n_valid} malformed), {args.clients} concurrent clients, "
          f"{platform.processor() or platform.machine()} x{os.cpu_count()} CPU, tiny Qwen3 (2 layers, hidden 64), "
          f"server torch threads {args.threads or 'default'}, "
          f"load average at start: {load_before:.2f}\n")
    print("| setting | round | max_batch | max_wait_ms | sent | valid answers correct | 5xx | wrong | "
          "mean batch | p50 ms | p99 ms | requests/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['round']} | {r['max_batch']} | {r['max_wait_ms']:g} | {r['sent']} | "
              f"{r['valid_ok']} | {r['5xx']} | {r['wrong']} | {r['mean_batch']:.1f} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['rps']:.0f} |")
    print("\nFAIL: see the table" if failed else "\nOK: no 5xx, every answer as expected")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
