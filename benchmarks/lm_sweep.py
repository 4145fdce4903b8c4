"""Settings sweep for LoRA on a causal LM, run through ``newsbias.train.train``; prints a Markdown table.

    .venv/bin/python benchmarks/lm_sweep.py --model MODEL.gguf --data runs/full --out runs/sweep \
        [--grid demo|smoke] [--workers 4] [--budget-s 420] [--val-n 1000] [--test-n 1500]

Every configuration is one real ``newsbias train`` run (label-only loss, chat template, the
project's prompt builder) on the first ``train_limit`` rows of the prep output's ``train.jsonl``,
with val macro-F1 (outlet-disjoint val, the selection yardstick) every ``eval.every_steps``; the
best-on-val adapter is then scored on the first ``--test-n`` test articles. Zero-shot rows score
the base model the same way. Results are appended to ``OUT/results.jsonl`` as each run ends, so
a run cut short keeps what finished; ``--budget-s`` stops starting new configurations after that
many seconds. On a GPU, ``--workers`` processes share the device (a 135M model leaves it idle
between kernel launches, so several runs overlap well).

The grid is the demo's search space: learning rate, LoRA targets and rank, tokens per article,
batch size, articles seen, class weights, chat template, and the classification head.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

ATTN = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = ATTN + ["gate_proj", "up_proj", "down_proj"]


def grid(name: str) -> list[tuple[str, dict[str, Any]]]:
    """(run name, dotted overrides of the base configuration), most informative first."""
    if name == "smoke":
        return [("zero-shot", {"zero_shot": True}),
                ("lr1e-3-all", {"optim.lr": 1e-3, "lora.target_modules": ALL_LINEAR, "data.train_limit": 16})]
    runs: list[tuple[str, dict[str, Any]]] = [("zero-shot-128", {"zero_shot": True}),
                                               ("zero-shot-256", {"zero_shot": True, "prompt.max_length": 256})]
    for lr in (3e-4, 1e-3, 2e-3, 4e-3):
        for tname, targets in (("attn", ATTN), ("all", ALL_LINEAR)):
            runs.append((f"lr{lr:g}-{tname}", {"optim.lr": lr, "lora.target_modules": targets}))
    anchor = {"optim.lr": 1e-3, "lora.target_modules": ALL_LINEAR}
    variants: list[tuple[str, dict[str, Any]]] = [
        ("n6000", {"data.train_limit": 6000}),
        ("len256-n6000", {"prompt.max_length": 256, "data.train_limit": 6000}),
        ("len256-n3200", {"prompt.max_length": 256, "data.train_limit": 3200}),
        ("len64", {"prompt.max_length": 64}), ("len96", {"prompt.max_length": 96}),
        ("len192", {"prompt.max_length": 192}), ("len256", {"prompt.max_length": 256}),
        ("n800", {"data.train_limit": 800}), ("n3200", {"data.train_limit": 3200}),
        ("n400", {"data.train_limit": 400}),
        ("r4", {"lora.r": 4, "lora.alpha": 8}), ("r64", {"lora.r": 64, "lora.alpha": 128}),
        ("r16-alpha16", {"lora.alpha": 16}),
        ("bs4", {"optim.batch_size": 4}), ("bs16-lr2e-3", {"optim.batch_size": 16, "optim.lr": 2e-3}),
        ("no-class-weights", {"optim.class_weights": "none"}),
        ("n800-2epochs", {"data.train_limit": 800, "optim.epochs": 2}),
        ("seed1", {"seed": 1}), ("seed2", {"seed": 2}),
        ("no-chat-template", {"prompt.chat_template": "off"}),
        ("constant-lr", {"optim.scheduler": "constant"}), ("dropout0", {"lora.dropout": 0.0}),
        ("cls-head", {"model.head": "cls"}), ("cls-head-lr2e-3", {"model.head": "cls", "optim.lr": 2e-3}),
        ("lr2e-3-len256", {"optim.lr": 2e-3, "prompt.max_length": 256}),
        ("lr2e-3-n3200", {"optim.lr": 2e-3, "data.train_limit": 3200}),
        ("lr5e-4-n3200", {"optim.lr": 5e-4, "data.train_limit": 3200}),
        ("lr2e-3-r64", {"optim.lr": 2e-3, "lora.r": 64, "lora.alpha": 128}),
    ]
    runs += [(f"all-{v}", {**anchor, **o}) for v, o in variants]
    return runs


def base_config(args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    return {"model": {"name_or_path": args.model, "head": "lm", "device": args.device, "dtype": "float32"},
            "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ATTN},
            "prompt": {"max_length": 128},
            "data": {"path": args.data, "train_limit": 1600, "val_limit": args.val_n},
            "optim": {"lr": 1e-3, "epochs": 1, "batch_size": 8, "grad_accum": 1, "class_weights": "balanced"},
            "eval": {"every_steps": args.eval_every, "patience": None, "batch_size": 32},
            "checkpoint": {"every_steps": 1_000_000, "keep": 1},
            "out_dir": str(out_dir), "seed": 42, "progress": False}


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


def score_split(model, tok, settings, path: Path, n: int) -> float:
    from newsbias.metrics import macro_f1
    from newsbias.modeling import score_batch

    rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines()[:n] if l.strip()]
    probs = score_batch(model, tok, settings, [r["input"] for r in rows], batch_size=32)
    return macro_f1([r["output"] for r in rows], [settings.labels[i] for i in probs.argmax(1)], settings.labels)


def run_one(args: argparse.Namespace, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    import torch

    from newsbias.config import TrainConfig
    from newsbias.modeling import ModelSettings, load_for_inference, load_model_and_tokenizer
    from newsbias.prompt import PromptSettings
    from newsbias.train import train

    t0 = time.time()
    out_dir = Path(args.out) / "runs" / name
    cfg_d = base_config(args, out_dir)
    zero_shot = bool(overrides.pop("zero_shot", False))
    for k, v in overrides.items():
        set_dotted(cfg_d, k, v)
    cfg = TrainConfig.model_validate(cfg_d)
    data = Path(args.data)
    rec: dict[str, Any] = {"name": name, "overrides": overrides}
    if zero_shot:
        model, tok = load_model_and_tokenizer(cfg.model.name_or_path, device=args.device, dtype="float32")
        settings = ModelSettings(head="lm", base_model=cfg.model.name_or_path,
                                 prompt=PromptSettings(max_length=cfg.prompt.max_length))
        rec["val_f1"] = score_split(model, tok, settings, data / "val.jsonl", args.val_n)
    else:
        summary = train(cfg, progress=False)
        log = [json.loads(l) for l in (out_dir / "train_log.jsonl").read_text().splitlines()]
        evals = [r for r in log if r["type"] == "eval"]
        rec.update(steps=summary["steps"], best_step=summary["best_step"],
                   val_f1=summary["best_val"].get("val_macro_f1"), final_val_f1=evals[-1]["val_macro_f1"],
                   val_curve=[(r["step"], round(r["val_macro_f1"], 4)) for r in evals],
                   last_train_loss=sum(r["loss"] for r in log if r["type"] == "train"
                                       and r["step"] > summary["steps"] - 20) / min(20, summary["steps"]))
        model, tok, settings = load_for_inference(out_dir, device=args.device, dtype="float32")
    rec["test_f1"] = score_split(model, tok, settings, data / "test.jsonl", args.test_n)
    rec["seconds"] = round(time.time() - t0, 1)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rec


def worker(args: argparse.Namespace, queue, t_start: float, threads: int) -> None:
    import logging

    import torch

    torch.set_num_threads(threads)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    out = Path(args.out) / "results.jsonl"
    while True:
        item = queue.get()
        if item is None or time.time() - t_start > args.budget_s:
            return
        name, overrides = item
        try:
            rec = run_one(args, name, dict(overrides))
        except Exception as exc:  # one failed configuration must not stop the sweep
            rec = {"name": name, "overrides": overrides, "error": f"{type(exc).__name__}: {exc}"}
        line = json.dumps(rec) + "\n"
        with out.open("a", encoding="utf-8") as f:  # one short append per run: lines do not interleave
            f.write(line)
        print(f"[{time.time() - t_start:6.0f}s] {line.strip()}", flush=True)


def convert(model: str, out_dir: Path) -> str:
    """A GGUF file is dequantised once into a plain HF directory, so each run loads it quickly."""
    from newsbias.modeling import is_gguf, load_model_and_tokenizer

    if not is_gguf(model):
        return model
    if not (out_dir / "config.json").is_file():
        m, tok = load_model_and_tokenizer(model, device="cpu", dtype="float32")
        m.save_pretrained(str(out_dir))
        tok.save_pretrained(str(out_dir))
    return str(out_dir)


def table(path: Path) -> str:
    recs = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    recs.sort(key=lambda r: -(r.get("val_f1") or -1))
    lines = ["| run | val macro-F1 (best) | val (final) | test macro-F1 | steps (best) | s | overrides |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in recs:
        if "error" in r:
            lines.append(f"| {r['name']} | error | | | | | {r['error'][:120]} |")
            continue
        ov = ", ".join(f"{k}={v if not isinstance(v, list) else len(v)}" for k, v in r["overrides"].items())
        lines.append(f"| {r['name']} | {r['val_f1']:.3f} | {r.get('final_val_f1', float('nan')):.3f} | "
                     f"{r['test_f1']:.3f} | {r.get('steps', 0)} ({r.get('best_step', '-')}) | {r['seconds']:.0f} "
                     f"| {ov} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="HF directory, hub id or .gguf file")
    ap.add_argument("--data", required=True, help="prep output directory (train/val/test.jsonl)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--grid", default="demo", choices=["demo", "smoke"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget-s", type=float, default=1e9)
    ap.add_argument("--val-n", type=int, default=1000)
    ap.add_argument("--test-n", type=int, default=1500)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--only", nargs="*", help="run only these grid names")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    args.model = convert(args.model, out / "model")
    done = set()
    if (out / "results.jsonl").is_file():
        done = {json.loads(l)["name"] for l in (out / "results.jsonl").read_text().splitlines() if l.strip()}
    todo = [g for g in grid(args.grid) if g[0] not in done and (not args.only or g[0] in args.only)]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for item in todo:
        queue.put(item)
    for _ in range(args.workers):
        queue.put(None)
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    procs = [ctx.Process(target=worker, args=(args, queue, t_start, threads)) for _ in range(args.workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    import torch

    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"\n{len(todo)} configurations queued, {time.time() - t_start:.0f} s, {args.workers} workers on {dev}; "
          f"model {args.model}; val = first {args.val_n} of {args.data}/val.jsonl, test = first {args.test_n}\n")
    print(table(out / "results.jsonl"))


if __name__ == "__main__":
    main()
