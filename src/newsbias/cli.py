"""The ``newsbias`` command: one subcommand per pipeline stage, each a thin wrapper.

Every subcommand takes ``--config FILE`` plus ``section.key=value`` overrides; a few frequent
settings also have flags, which are just overrides with a shorter spelling. Stage modules are
imported lazily so that ``newsbias --help`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from . import __version__
from .errors import NewsbiasError, one_line

EPILOG = (
    "Any config value can be overridden as section.key=value, e.g. "
    "prep.split.mode=random prep.downsample.train_cap=1200. Values are parsed as YAML."
)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE", help="YAML config file (see configs/).")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="Overrides applied on top of the config file before validation.")


def _flag_overrides(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    out = []
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out


# ----------------------------------------------------------------------------------- handlers


def _cmd_prep(args: argparse.Namespace) -> int:
    from .config import load_config
    from .data.prep import run_prep

    overrides = _flag_overrides(args, {
        "input": "prep.input.path", "format": "prep.input.format", "out": "prep.out_dir",
        "split": "prep.split.mode", "seed": "prep.split.seed",
    }) + list(args.overrides)
    cfg = load_config(args.config, overrides).require("prep")
    meta = run_prep(cfg, progress=not args.quiet)
    sizes = ", ".join(f"{k} {v}" for k, v in meta["splits"]["sizes"].items())
    print(f"prep: wrote {cfg.out_dir} ({sizes}); report in {cfg.out_dir}/prep_meta.json")
    return 0


def _add_prep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prep", help="Raw labeled articles -> clean, de-duplicated, leakage-safe train/val/test JSONL.",
        description="Read raw articles (Kaggle CSV, AllSides, any CSV/JSONL/Parquet, instruction JSONL), "
                    "normalise labels, repair text, drop duplicates, split without leakage, and write "
                    "train/val/test/eval_small JSONL plus prep_meta.json.",
        epilog=EPILOG)
    _add_common(p)
    p.add_argument("--input", metavar="PATH", help="Input file or directory (= prep.input.path).")
    p.add_argument("--format", choices=["auto", "kaggle", "allsides", "tabular", "instruction"],
                   help="Input format (= prep.input.format); auto guesses from the file.")
    p.add_argument("--out", metavar="DIR", help="Output directory (= prep.out_dir).")
    p.add_argument("--split", choices=["random", "by_source", "by_time", "predefined"],
                   help="Split mode (= prep.split.mode). by_source keeps outlets apart: the honest yardstick.")
    p.add_argument("--seed", type=int, help="Split seed (= prep.split.seed).")
    p.add_argument("--quiet", "-q", action="store_true", help="No progress bars.")
    p.set_defaults(func=_cmd_prep)


# === train subcommand (owned by the training stage) ===


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from .config import load_config

    overrides = _flag_overrides(args, {
        "model": "train.model.name_or_path", "head": "train.model.head", "data": "train.data.path",
        "out": "train.out_dir", "seed": "train.seed", "max_steps": "train.optim.max_steps",
    }) + list(args.overrides)
    if args.quiet:
        overrides.append("train.progress=false")
    if args.overwrite:
        overrides.append("train.overwrite=true")
    full = load_config(args.config, overrides)
    cfg = full.require("train")
    if cfg.data.path is None and full.prep is not None:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"path": full.prep.out_dir})})
    from .train import train

    summary = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    best = summary["best_val"]
    shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if isinstance(v, float))
    print(f"train: wrote adapter to {summary['out_dir']} after {summary['steps']} steps"
          f"{' (stopped early)' if summary['stopped_early'] else ''}; best at step {summary['best_step']}: {shown}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="LoRA fine-tuning (label-token loss or classifier head) on prep outputs.",
        description="Fine-tune a causal LM (head lm: loss on the label token only) or a sequence classifier "
                    "(head cls) with LoRA on train.jsonl, evaluate on val.jsonl (macro-F1), keep the best "
                    "checkpoint, and write a peft adapter directory plus newsbias.json and manifest.json. "
                    "Runs under torchrun / accelerate launch with several processes.",
        epilog=EPILOG)
    _add_common(p)
    p.add_argument("--model", metavar="ID_OR_DIR", help="Base model hub id or local directory (= train.model.name_or_path).")
    p.add_argument("--head", choices=["lm", "cls"], help="lm (label-token scoring) or cls (= train.model.head).")
    p.add_argument("--data", metavar="DIR", help="Prep output directory or train JSONL (= train.data.path).")
    p.add_argument("--out", metavar="DIR", help="Adapter output directory (= train.out_dir).")
    p.add_argument("--seed", type=int, help="Seed (= train.seed).")
    p.add_argument("--max-steps", dest="max_steps", type=int, help="Optimizer steps (= train.optim.max_steps).")
    p.add_argument("--resume", action="store_true", help="Continue from the last checkpoint in the output directory.")
    p.add_argument("--overwrite", action="store_true",
                   help="Start over in an output directory that holds another run's checkpoints (= train.overwrite).")
    p.add_argument("--quiet", "-q", action="store_true", help="No progress bar.")
    p.set_defaults(func=_cmd_train)

# === predict subcommand (owned by the prediction stage) ===


def _cmd_predict(args: argparse.Namespace) -> int:
    from .config import load_config
    from .predict import run_predict

    overrides = _flag_overrides(args, {
        "model": "predict.model", "adapter": "predict.adapter", "input": "predict.input", "split": "predict.split",
        "out": "predict.out", "mode": "predict.mode", "batch_size": "predict.batch_size", "name": "predict.name",
        "limit": "predict.limit", "device": "predict.device", "dtype": "predict.dtype",
    }) + (["predict.overwrite=true"] if args.overwrite else []) + (
        ["predict.include_text=true"] if args.include_text else []) + list(args.overrides)
    cfg = load_config(args.config, overrides).require("predict")
    m = run_predict(cfg, progress=not args.quiet)
    if m:
        c = m["counts"]
        print(f"predict: {c['predicted']} articles -> {cfg.out} ({c['skipped']} skipped, {c['invalid']} invalid; "
              f"{m['articles_per_s_this_run'] or 0:.2f} articles/s)")
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="Score articles with a base model (zero-shot) or base + adapter; resumable JSONL output.",
        description="Predict left/center/right for every article of a file, a prep split or stdin. mode=score "
                    "(default) reads label probabilities from one forward pass; mode=generate decodes a few "
                    "tokens greedily and parses them (unparseable = invalid). A killed run resumes when "
                    "re-run with the same arguments. Under torchrun, processes split the articles.",
        epilog=EPILOG)
    _add_common(p)
    p.add_argument("--model", metavar="ID_OR_PATH", help="Base model (= predict.model); default: the adapter's base.")
    p.add_argument("--adapter", metavar="DIR", help="Training output dir (= predict.adapter); omit for zero-shot.")
    p.add_argument("--input", metavar="PATH", help="JSONL/CSV file, prep output dir, or - for stdin (= predict.input).")
    p.add_argument("--split", help="Split file to read when --input is a prep dir (= predict.split, default test).")
    p.add_argument("--out", metavar="FILE", help="Predictions JSONL (= predict.out).")
    p.add_argument("--mode", choices=["score", "generate"], help="= predict.mode (default score).")
    p.add_argument("--batch-size", type=int, help="= predict.batch_size.")
    p.add_argument("--name", help="Model name written in each record (= predict.name).")
    p.add_argument("--limit", type=int, help="Only the first N articles (= predict.limit).")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ... (= predict.device).")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="= predict.dtype.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing output.")
    p.add_argument("--include-text", action="store_true", help="Copy article text into records (qualitative eval).")
    p.add_argument("--quiet", "-q", action="store_true", help="No progress bar.")
    p.set_defaults(func=_cmd_predict)


# === baseline / evaluate / compare subcommands (owned by those stages) ===


def _cmd_baseline(args: argparse.Namespace) -> int:
    from .config import load_config

    overrides = _flag_overrides(args, {"data": "baseline.data", "split": "baseline.split", "out": "baseline.out_dir",
                                       "seed": "baseline.seed"}) + list(args.overrides)
    full = load_config(args.config, overrides)
    from .config import BaselineConfig

    cfg = full.baseline or BaselineConfig()
    if "data" not in cfg.model_fields_set and full.prep is not None:
        cfg = cfg.model_copy(update={"data": full.prep.out_dir})  # same config file: read prep's output
    from .baseline import run_baseline

    manifests = run_baseline(cfg)
    shown = ", ".join(f"{name}.jsonl" for name in manifests)
    print(f"baseline: wrote {shown} (+ manifests) to {cfg.out_dir} for {cfg.split} "
          f"({next(iter(manifests.values()))['counts']['rows']} articles)")
    return 0


def _add_baseline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline", help="Majority-class and TF-IDF + logistic regression baselines on a prep split.",
        description="Train the majority-class and TF-IDF (word 1-2 grams) + logistic regression baselines on "
                    "train.jsonl of a prep output directory, predict a split, and write majority.jsonl and "
                    "tfidf-lr.jsonl (the shared prediction format, with probabilities), a manifest beside each, "
                    "and the fitted pipeline tfidf-lr.joblib.",
        epilog=EPILOG)
    _add_common(p)
    p.add_argument("--data", metavar="DIR", help="Prep output directory (= baseline.data).")
    p.add_argument("--split", metavar="NAME_OR_FILE", help="Split to predict: train/val/test or a JSONL (= baseline.split).")
    p.add_argument("--out", metavar="DIR", help="Output directory (= baseline.out_dir).")
    p.add_argument("--seed", type=int, help="Seed (= baseline.seed).")
    p.set_defaults(func=_cmd_baseline)


def _cmd_cv(args: argparse.Namespace) -> int:
    from .config import BaselineConfig, CvConfig, load_config

    overrides = _flag_overrides(args, {"data": "cv.data", "folds": "cv.folds", "out": "cv.out_dir",
                                       "seed": "cv.seed"}) + list(args.overrides)
    full = load_config(args.config, overrides)
    cfg = full.cv or CvConfig()
    if "data" not in cfg.model_fields_set and full.prep is not None:
        cfg = cfg.model_copy(update={"data": full.prep.out_dir})
    from .cv import run_cv

    summary = run_cv(cfg, full.baseline or BaselineConfig())
    for res in summary["grouped"]:
        print(f"cv: {res['recipe']}: mean macro-F1 {res['mean']:.3f} [{res['ci95'][0]:.3f}, {res['ci95'][1]:.3f}] "
              f"over {cfg.folds} outlet-grouped folds")
    print(f"cv: wrote {cfg.out_dir}/cv.md and cv.json ({summary['seconds']:.0f} s)")
    return 0


def _add_cv(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cv", help="Outlet-grouped cross-validation of the baselines: the yardstick for unseen outlets.",
        description="Pool train/val/test of a prep output, cut it into K folds with no outlet in two folds "
                    "(label-stratified, deterministic), run each baseline recipe with one fold as test and the "
                    "next as val, and report macro-F1 per fold, the mean and a 95% interval over folds, beside "
                    "the same recipe on random folds (outlets shared).",
        epilog=EPILOG)
    _add_common(p)
    p.add_argument("--data", metavar="DIR", help="Prep output directory (= cv.data).")
    p.add_argument("--folds", type=int, help="Number of folds (= cv.folds).")
    p.add_argument("--out", metavar="DIR", help="Output directory (= cv.out_dir).")
    p.add_argument("--seed", type=int, help="Fold seed (= cv.seed).")
    p.set_defaults(func=_cmd_cv)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .config import EvaluateConfig, load_config

    overrides = _flag_overrides(args, {"preds": "evaluate.preds", "out": "evaluate.out",
                                       "n_boot": "evaluate.n_boot", "seed": "evaluate.seed"}) + list(args.overrides)
    if args.by_outlet:
        overrides.append("evaluate.by_outlet=true")
    if args.skip_missing_gold:
        overrides.append("evaluate.missing_gold=skip")
    cfg = load_config(args.config, overrides).evaluate or EvaluateConfig()
    from .metrics import evaluate, format_summary

    m = evaluate(cfg)
    skipped = m["preds"]["skipped_no_gold"]
    print(f"evaluate: {format_summary(m)}" + (f"; skipped {skipped} rows without gold" if skipped else ""))
    print(f"evaluate: wrote {m['out']}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="Predictions JSONL -> metrics JSON (macro-F1 with bootstrap CI, confusion matrix ...).",
        description="Score a predictions file (from predict, baseline or serve): accuracy, macro/micro/weighted "
                    "F1, per-class precision/recall/F1, confusion matrix, invalid-output rate (invalid counts as "
                    "wrong), a bootstrap interval for macro-F1, ordinal MAE, calibration error when "
                    "probabilities exist, and optionally a per-outlet breakdown.",
        epilog=EPILOG)
    _add_common(p)
    p.add_argument("--preds", metavar="FILE", help="Predictions JSONL (= evaluate.preds).")
    p.add_argument("--out", metavar="FILE", help="Metrics JSON (= evaluate.out; default <preds>.metrics.json).")
    p.add_argument("--n-boot", dest="n_boot", type=int, help="Bootstrap resamples (= evaluate.n_boot).")
    p.add_argument("--seed", type=int, help="Bootstrap seed (= evaluate.seed).")
    p.add_argument("--by-outlet", dest="by_outlet", action="store_true", help="Per-outlet breakdown (= evaluate.by_outlet=true).")
    p.add_argument("--skip-missing-gold", dest="skip_missing_gold", action="store_true",
                   help="Skip and count rows without gold instead of failing (= evaluate.missing_gold=skip).")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from .config import CompareConfig, load_config

    overrides = _flag_overrides(args, {"data": "compare.data", "split": "compare.split", "out": "compare.out_dir"})
    if args.preds:
        overrides.append(f"compare.preds={json.dumps(args.preds)}")  # a JSON list is valid YAML
    if args.intersect:
        overrides.append("compare.on_mismatch=intersect")
    if args.ensemble:
        overrides.append(f"compare.ensembles={json.dumps(args.ensemble)}")
    if args.by_outlet:
        overrides.append("compare.metrics.by_outlet=true")
    overrides += list(args.overrides)
    cfg = load_config(args.config, overrides).compare or CompareConfig()
    from .report import run_compare

    res = run_compare(cfg)
    for name, m in res["metrics"].items():
        print(f"compare: {name}: macro-F1 {m['macro_f1']:.3f}, micro-F1 {m['micro_f1']:.3f}, "
              f"invalid {m['invalid_rate']:.1%}")
    if res["changes"]:
        print(f"compare: {cfg.tuned} fixes {res['changes']['fixed']} and breaks {res['changes']['broken']} "
              f"of {cfg.base}'s predictions")
    print(f"compare: wrote {', '.join(res['files'])} to {res['out_dir']} ({res['n']} articles)")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="Several prediction files -> eval_compare.csv, metrics.json, plots, report.md/html.",
        description="Join prediction files of the same split (base, tuned, baselines) on id into "
                    "eval_compare.csv (article preview, gold, one column per run) and write a report with "
                    "the results table (macro-F1 with 95% CI), per-class F1, confusion-matrix and per-class "
                    "plots, the run manifests, and the cases where tuned fixes or breaks base. Name runs as "
                    "NAME=FILE (base=..., tuned=...); otherwise the file stem is the name.",
        epilog=EPILOG)
    _add_common(p)
    p.add_argument("--preds", nargs="+", metavar="[NAME=]FILE", help="Prediction files (= compare.preds).")
    p.add_argument("--data", metavar="FILE_OR_DIR", help="Split JSONL with the articles, or a prep output "
                   "directory (= compare.data); gives the previews and the split mode.")
    p.add_argument("--split", metavar="NAME", help="Split file when --data is a directory (= compare.split).")
    p.add_argument("--out", metavar="DIR", help="Output directory (= compare.out_dir).")
    p.add_argument("--intersect", action="store_true",
                   help="Compare on the ids common to all files instead of failing (= compare.on_mismatch=intersect).")
    p.add_argument("--ensemble", nargs="+", metavar="NAME=RUN+RUN",
                   help="Add a run that averages the named runs' probabilities with equal weights (= compare.ensembles).")
    p.add_argument("--by-outlet", action="store_true",
                   help="Per-outlet breakdown and the interval that resamples whole outlets (= compare.metrics.by_outlet).")
    p.set_defaults(func=_cmd_compare)


# === serve / export subcommands (owned by serve.py, export.py) ===


def _cmd_serve(args: argparse.Namespace) -> int:
    from .config import load_config

    overrides = _flag_overrides(args, {
        "model": "serve.model", "adapter": "serve.adapter", "head": "serve.head", "name": "serve.name",
        "host": "serve.host", "port": "serve.port", "device": "serve.device", "dtype": "serve.dtype",
        "max_batch": "serve.max_batch", "max_wait_ms": "serve.max_wait_ms", "threads": "serve.threads",
    }) + list(args.overrides)
    full = load_config(args.config, overrides)
    from .config import ServeConfig

    cfg = full.serve or ServeConfig()
    if not cfg.model and not cfg.adapter:
        raise NewsbiasError("nothing to serve: pass --adapter DIR (a `newsbias train` output) and/or --model BASE")
    from .serve import load_model, run_server

    # load before binding the port: a wrong path is a one-line error, not a server answering 503
    predictor = load_model(cfg)
    print(f"serve: {cfg.adapter or cfg.model} loaded; http://{cfg.host}:{cfg.port}/ (API docs at /docs)",
          flush=True)
    run_server(cfg, predictor=predictor)
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="HTTP API (POST /v1/classify) and a classification page for one model.",
        description="Load base + adapter (or a base model zero-shot, or a merged export) once and answer "
                    "POST /v1/classify, GET /health, GET /v1/model, with OpenAPI docs at /docs and a "
                    "classification page at /. Concurrent requests are micro-batched.",
        epilog=EPILOG)
    _add_common(p)
    p.add_argument("--model", metavar="ID_OR_PATH", help="Base model or merged export (= serve.model).")
    p.add_argument("--adapter", metavar="DIR", help="Training output directory (= serve.adapter).")
    p.add_argument("--head", choices=["lm", "cls"], help="Head of a base model without adapter (= serve.head).")
    p.add_argument("--name", help="Model name in answers (= serve.name).")
    p.add_argument("--host", help="Bind address (= serve.host, default 127.0.0.1).")
    p.add_argument("--port", type=int, help="Port (= serve.port, default 8000).")
    p.add_argument("--device", help="auto, cpu, cuda ... (= serve.device).")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], help="= serve.dtype.")
    p.add_argument("--max-batch", dest="max_batch", type=int, help="Texts per micro-batch (= serve.max_batch).")
    p.add_argument("--max-wait-ms", dest="max_wait_ms", type=float,
                   help="Wait for a micro-batch to fill (= serve.max_wait_ms).")
    p.add_argument("--threads", type=int, help="torch intra-op threads (= serve.threads).")
    p.set_defaults(func=_cmd_serve)


def _cmd_export(args: argparse.Namespace) -> int:
    from .config import load_config

    overrides = _flag_overrides(args, {
        "adapter": "export.adapter", "out": "export.out", "metrics": "export.metrics",
        "push_to_hub": "export.push_to_hub", "base_model_id": "export.base_model_id", "license": "export.license",
    }) + (["export.merge=true"] if args.merge else []) + (["export.overwrite=true"] if args.overwrite else []) + (
        ["export.card_in_adapter=true"] if args.card_in_adapter else []) + list(args.overrides)
    cfg = load_config(args.config, overrides).require("export")
    from .export import run_export

    res = run_export(cfg)
    print(f"export: wrote {'merged model' if cfg.merge else 'adapter'} + model card to {res['out']}"
          + (f"; pushed to {res['pushed']}" if res.get("pushed") else ""))
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="Adapter -> export dir (optionally merged into the base) with a model card; hub upload.",
        description="Copy a trained adapter, or with --merge fold the LoRA weights (and the classifier head) "
                    "into the base model and save it as safetensors with the tokenizer and newsbias.json; "
                    "write a model card (README.md); optionally upload with --push-to-hub.",
        epilog=EPILOG)
    _add_common(p)
    p.add_argument("--adapter", metavar="DIR", help="Training output directory (= export.adapter).")
    p.add_argument("--out", metavar="DIR", help="Export directory (= export.out).")
    p.add_argument("--merge", action="store_true", help="Merge LoRA into the base (= export.merge=true).")
    p.add_argument("--eval", "--metrics", dest="metrics", metavar="[RUN=]PATH", help="Test evaluation for the card: "
                   "a `newsbias evaluate` JSON or a `newsbias compare` output dir (= export.metrics).")
    p.add_argument("--base-model-id", dest="base_model_id", metavar="ID", help="Hub id of the base for the card.")
    p.add_argument("--license", help="License of the base model for the card (= export.license).")
    p.add_argument("--push-to-hub", dest="push_to_hub", metavar="REPO", help="Upload to this hub repo (owner/name).")
    p.add_argument("--card-in-adapter", dest="card_in_adapter", action="store_true",
                   help="Also write README.md into the adapter dir.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing export dir.")
    p.set_defaults(func=_cmd_export)


# === end of stage subcommands ===


# Stages register themselves here: (adder) each adds one subparser with set_defaults(func=...).
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_prep, _add_predict, _add_train,
                                                                    _add_baseline, _add_cv, _add_evaluate, _add_compare,
                                                                    _add_serve, _add_export]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="newsbias",
        description="Fine-tune small LLMs with LoRA to classify news articles as left / center / right, "
                    "and evaluate them honestly (outlet-disjoint splits).")
    parser.add_argument("--verbose", "-v", action="store_true", help="Debug logging and full tracebacks.")
    parser.add_argument("--version", action="version", version=f"newsbias {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Like ``parse_args``, but ``key=value`` overrides may come before, between or after flags.

    argparse cannot intermix positionals and options under subparsers, so the subcommand's own
    parser does the intermixed parse.
    """
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    idx = next((i for i, tok in enumerate(argv) if not tok.startswith("-")), None)
    if sub is None or idx is None or argv[idx] not in sub.choices or any(t in ("-h", "--help") for t in argv[:idx]):
        return parser.parse_args(argv)
    top = parser.parse_args(argv[:idx])
    args = sub.choices[argv[idx]].parse_intermixed_args(argv[idx + 1:])
    args.command = argv[idx]
    args.verbose = top.verbose
    return args


def _quiet_libraries() -> None:
    """``-q``: no progress bars or load reports from transformers / huggingface_hub either."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "quiet", False):
        _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except NewsbiasError as exc:
        if args.verbose:
            raise
        print(f"newsbias {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # permissions, a full disk, a path that vanished: the OS said it in one line
        if args.verbose:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(f"newsbias {args.command}: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"newsbias {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
