"""Benchmark label scoring (newsbias predict, mode=score) against the original per-article generation.

    .venv/bin/python benchmarks/predict_speed.py [--articles 4] [--seq 512] [--device cpu] [--dtype float32]
        [--batch 1] [--arch qwen3-0.6b|tiny] [--compile] [--profile] [--default-malloc]

The Qwen3-0.6B architecture with random weights (speed does not depend on the weight values),
``seq``-token inputs. Three ways, same model, same inputs, one run:

* original: batch 1, greedy ``generate`` of 6 new tokens per article (the assignment's method);
* newsbias score, batch 1: one forward pass, label logits at the answer position only;
* newsbias score, batched (``--batch``), as `predict` runs on a GPU.

Also prints the floor set by the model's FLOPs and this machine's measured matmul rate. The rate
is measured right before and right after each method (each time the best of three timings) and
that method's share of the floor uses the mean of the two: on a shared VM the rate itself drifts
by a third between minutes, and a rate taken at another moment would make the share meaningless.
The process tunes glibc's allocator as ``newsbias predict`` does (``modeling.tune_cpu_allocator``);
``--default-malloc`` leaves glibc's defaults, for the comparison.
Prints a Markdown table; with ``--profile``, then the share of one batched scoring pass spent in
each kind of operation (torch.profiler): what eager execution spends outside the matmuls.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from newsbias.modeling import resolve_device_dtype, score_ids, tune_cpu_allocator


def qwen3_config(arch: str):
    from transformers import Qwen3Config

    if arch == "tiny":
        return Qwen3Config(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True)
    return Qwen3Config(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                       tie_word_embeddings=True, rope_theta=1_000_000)


def matmul_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 5, trials: int = 3) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    c = a @ b
    best = 0.0
    for _ in range(trials):
        _sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=c)
        _sync(device)
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9)
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def forward_flops(cfg, seq: int) -> float:
    """Matmul FLOPs of one forward pass over ``seq`` tokens (no LM head: scoring needs 3 of its rows)."""
    h, L, inter = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    q = cfg.num_attention_heads * cfg.head_dim
    kv = cfg.num_key_value_heads * cfg.head_dim
    per_tok = 2 * L * (h * q + 2 * h * kv + q * h + 3 * h * inter)
    attn = 2 * L * 2 * seq * seq * q / 2  # QK^T and AV, causal half
    return per_tok * seq + attn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--articles", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=6)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--arch", default="qwen3-0.6b", choices=["qwen3-0.6b", "tiny"])
    ap.add_argument("--compile", action="store_true", help="add a row with the decoder body under torch.compile")
    ap.add_argument("--profile", action="store_true", help="print where one eager batched pass spends its time")
    ap.add_argument("--default-malloc", action="store_true", help="do not tune glibc's allocator (predict does)")
    args = ap.parse_args()
    tuned = not args.default_malloc and tune_cpu_allocator()
    from transformers import Qwen3ForCausalLM

    dev, dt = resolve_device_dtype(args.device, args.dtype)
    torch.manual_seed(0)
    cfg = qwen3_config(args.arch)
    model = Qwen3ForCausalLM(cfg).to(device=dev, dtype=dt).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(100, cfg.vocab_size, (args.articles, args.seq), generator=g).to(dev)
    mask = torch.ones_like(ids)
    label_ids = [2115, 4126, 1290] if cfg.vocab_size > 5000 else [5, 6, 7]
    with torch.no_grad():
        score_ids(model, "lm", ids[:1], mask[:1], torch.tensor([args.seq - 1]), label_ids)  # warm-up

        def timed(fn) -> tuple[float, float]:
            """(seconds, the matmul rate around them)."""
            before = matmul_gflops(dev, dt)
            _sync(dev)
            t = time.perf_counter()
            fn()
            _sync(dev)
            secs = time.perf_counter() - t
            return secs, (before + matmul_gflops(dev, dt)) / 2

        def original():
            for i in range(args.articles):
                model.generate(input_ids=ids[i:i + 1], attention_mask=mask[i:i + 1], max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)

        def score(bs: int):
            def run():
                for s in range(0, args.articles, bs):
                    n = min(bs, args.articles - s)
                    score_ids(model, "lm", ids[s:s + n], mask[s:s + n], torch.full((n,), args.seq - 1), label_ids)
            return run

        rows = [("original: generate-6, batch 1", timed(original)),
                ("newsbias score, batch 1", timed(score(1)))]
        if args.batch > 1:
            rows.append((f"newsbias score, batch {args.batch}", timed(score(args.batch))))
        if args.profile:
            with torch.profiler.profile() as prof:
                score(args.batch)()
        if args.compile:
            # fixed shapes: every batch here is [batch, seq]; a padded-length mix would recompile per length
            model.model = torch.compile(model.model, dynamic=False)
            print(f"torch.compile warm-up: {timed(score(args.batch))[0]:.0f} s", flush=True)
            rows.append((f"newsbias score, batch {args.batch}, torch.compile", timed(score(args.batch))))
    flops = forward_flops(cfg, args.seq)
    base = args.articles / rows[0][1][0]
    print(f"device: {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or 'cpu'}), "
          f"dtype {str(dt).replace('torch.', '')}, threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}, allocator {'tuned' if tuned else 'glibc default'}; "
          f"arch {args.arch}, {args.seq}-token inputs, {args.articles} articles")
    print(f"one forward = {flops / 1e9:.0f} GFLOP; FLOPs floor = matmul rate / that")
    print("| method | s/article | articles/s | vs original | matmul rate around it | % of FLOPs floor |")
    print("|---|---|---|---|---|---|")
    for name, (secs, gflops) in rows:
        aps = args.articles / secs
        print(f"| {name} | {secs / args.articles:.3f} | {aps:.3f} | {aps / base:.2f}x | {gflops:.0f} GFLOP/s | "
              f"{100 * aps * flops / (gflops * 1e9):.0f}% |")
    if args.profile:
        print_profile(prof)


def print_profile(prof) -> None:
    """Self time per operation of the profiled pass, largest first (operations over 0.5 %)."""
    ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in ops)
    print(f"\none eager batched pass, self time per operation (total {total / 1e6:.2f} s):")
    print("| operation | share | calls |")
    print("|---|---|---|")
    for e in ops:
        if e.self_cpu_time_total / total >= 0.005:
            print(f"| {e.key} | {100 * e.self_cpu_time_total / total:.1f}% | {e.count} |")


if __name__ == "__main__":
    main()
