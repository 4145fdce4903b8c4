"""The ``newsbias`` command: one subcommand per pipeline stage, each a thin wrapper.

Every subcommand takes ``--config FILE`` plus ``section.key=value`` overrides. Its flags are
declared once, in :data:`COMMANDS`: each is a shorter spelling of one config key, and its help,
type and choices come from that key's pydantic field. Stage modules are imported lazily so that
``newsbias --help`` does not pay for importing torch.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import types
import typing
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import LOG_FORMAT, __version__
from .config import Config, field_info, load_config
from .errors import NewsbiasError, counted, one_line
from .io import record_command_line

EPILOG = ("Any config value can be overridden as section.key=value, before, between or after the flags, e.g. "
          "{example}. Values are parsed as YAML.")
EXAMPLES = {"prep": "prep.split.mode=random prep.downsample.train_cap=1200",
            "train": "train.optim.lr=5e-4 train.lora.r=8", "predict": "predict.batch_size=16 predict.limit=100",
            "baseline": "baseline.lr.C_grid=[1,3,10]", "evaluate": "evaluate.n_boot=2000",
            "compare": "compare.metrics.n_boot=2000", "cv": "cv.folds=5 cv.recipes=[tfidf-lr]",
            "serve": "serve.max_batch=32", "export": "export.license=mit", "explain": "explain.limit=50",
            "calibrate": "calibrate.limit=2000"}


@dataclass(frozen=True)
class Flag:
    """A flag of one command: ``names`` (space-separated) give the config ``key`` a value.

    Its help is the key's field description. A switch (``const``) sets the key to that value; ``many``
    takes one or more values (a list key), and repeating it adds to them. A flag without a key
    belongs to the command itself (its handler reads it) and brings its own ``help``.
    """

    names: str
    key: Optional[str] = None
    metavar: Optional[str] = None
    const: Any = None
    many: bool = False
    help: Optional[str] = None


@dataclass(frozen=True)
class Command:
    """A subcommand: its handler ``run(args, config)``, its texts and its flags."""

    name: str
    run: Callable[[argparse.Namespace, Config], int]
    help: str
    description: str
    flags: tuple[Flag, ...]


QUIET = Flag("--quiet -q", help="No progress bars or INFO lines, and no warnings or load reports from the libraries "
             "(newsbias's own warnings stay).")


def model_flags(section: str) -> tuple[Flag, ...]:
    """The flags of a stage that loads a model (``predict``, ``serve``, ``explain``): which one, and where it runs."""
    return (Flag("--model", f"{section}.model", "ID_OR_PATH"), Flag("--adapter", f"{section}.adapter", "DIR"),
            Flag("--device", f"{section}.device"), Flag("--dtype", f"{section}.dtype"),
            Flag("--threads", f"{section}.threads"))


def _run_prep(args: argparse.Namespace, cfg: Config) -> int:
    from .data.prep import run_prep

    prep = cfg.require("prep")
    meta = run_prep(prep, progress=not args.quiet)
    sizes = ", ".join(f"{k} {v}" for k, v in meta["splits"]["sizes"].items())
    print(f"prep: wrote {prep.out_dir} ({sizes}); report in {prep.out_dir}/prep_meta.json")
    return 0


def _run_train(args: argparse.Namespace, cfg: Config) -> int:
    from .train import train

    summary = train(cfg.require("train"), resume=args.resume, progress=False if args.quiet else None)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return 0
    shown = ", ".join(f"{k} {v:.4f}" for k, v in summary["best_val"].items() if isinstance(v, float))
    what = "model" if cfg.require("train").finetune == "full" else "adapter"
    print(f"train: wrote the {what} to {summary['out_dir']} after {summary['steps']} steps"
          f"{' (stopped early)' if summary['stopped_early'] else ''}; best at step {summary['best_step']}: {shown}")
    return 0


def _run_predict(args: argparse.Namespace, cfg: Config) -> int:
    from .predict import run_predict

    predict = cfg.require("predict")
    m = run_predict(predict, progress=not args.quiet)
    if m:
        c = m["counts"]
        print(f"predict: {counted(c['predicted'], 'article')} -> {'stdout' if predict.out == '-' else predict.out} "
              f"({c['skipped']} skipped, {c['invalid']} invalid"
              + (f", {c['resumed_rows']} of them kept from the interrupted run" if c.get("resumed_rows") else "")
              + f"; {m['articles_per_s_this_run'] or 0:.2f} articles/s)" + _skipped_lines(c),
              file=sys.stderr if predict.out == "-" else sys.stdout)
    return 0


def _skipped_lines(counts: dict[str, Any], shown: int = 3) -> str:
    """The first skipped articles, one line each (the manifest lists more), so they can be found and fixed."""
    first = counts.get("skipped_first") or []
    lines = [f"\npredict: skipped {s['id']} (line {s['line']}): {s['skipped']}" for s in first[:shown]]
    if counts["skipped"] > shown:
        lines.append(f"\npredict: and {counts['skipped'] - shown} more (the manifest's counts.skipped_first lists "
                     f"up to {len(first)})")
    return "".join(lines)


def _run_baseline(args: argparse.Namespace, cfg: Config) -> int:
    from .baseline import run_baseline

    manifests = run_baseline(cfg.baseline)
    shown = ", ".join(f"{name}.jsonl" for name in manifests)
    print(f"baseline: wrote {shown} (+ manifests) to {cfg.baseline.out_dir} for {cfg.baseline.split} "
          f"({counted(next(iter(manifests.values()))['counts']['rows'], 'article')})")
    return 0


def _run_cv(args: argparse.Namespace, cfg: Config) -> int:
    from .cv import run_cv

    summary = run_cv(cfg.cv, cfg.baseline, cfg.train, cfg.predict, progress=not args.quiet)
    for res in summary["grouped"]:
        print(f"cv: {res['recipe']}: mean macro-F1 {res['mean']:.3f} [{res['ci95'][0]:.3f}, {res['ci95'][1]:.3f}] "
              f"over {cfg.cv.folds} outlet-grouped folds")
    print(f"cv: wrote {cfg.cv.out_dir}/cv.md and cv.json ({summary['seconds']:.0f} s)")
    return 0


def _run_evaluate(args: argparse.Namespace, cfg: Config) -> int:
    from .metrics import evaluate, format_summary

    m = evaluate(cfg.evaluate)
    skipped = m["preds"]["skipped_no_gold"]
    print(f"evaluate: {format_summary(m)}" + (f"; skipped {skipped} rows without gold" if skipped else ""))
    print(f"evaluate: wrote {m['out']}")
    return 0


def _run_compare(args: argparse.Namespace, cfg: Config) -> int:
    from .report import run_compare

    c = cfg.compare
    res = run_compare(c)
    for name, m in res["metrics"].items():
        print(f"compare: {name}: macro-F1 {m['macro_f1']:.3f}, micro-F1 {m['micro_f1']:.3f}, "
              f"invalid {m['invalid_rate']:.1%}")
    if res["changes"]:
        print(f"compare: {c.tuned} fixes {res['changes']['fixed']} and breaks {res['changes']['broken']} "
              f"of {c.base}'s predictions")
    print(f"compare: wrote {', '.join(res['files'])} to {res['out_dir']} ({counted(res['n'], 'article')})")
    return 0


def _run_serve(args: argparse.Namespace, cfg: Config) -> int:
    serve = cfg.serve
    from .serve import check_port, load_model, require_server_packages, run_server

    # load before binding the port: a wrong path is a one-line error, not a server answering 503; but a busy
    # port is found before the load (seconds to minutes)
    require_server_packages()
    check_port(serve.host, serve.port)
    if args.quiet and serve.log_level in ("info", "debug"):  # uvicorn's start-up lines and one per request
        serve = serve.model_copy(update={"log_level": "warning"})
    predictor = load_model(serve)
    print(f"serve: {serve.adapter or serve.model} loaded; http://{serve.host}:{serve.port}/ (API docs at /docs)",
          flush=True)
    run_server(serve, predictor=predictor)
    return 0


def _run_explain(args: argparse.Namespace, cfg: Config) -> int:
    from .explain import run_explain

    e = cfg.explain
    m = run_explain(e, progress=not args.quiet)
    s = m["summary"]
    print(f"explain: {counted(s['articles'], 'article')}; the strongest word was an outlet cue in {s['top_unit_is_cue']}, "
          f"outlet cues carry {s['cue_share_of_support']:.1%} of the support, and leaving them out changes "
          f"{s['flipped_without_cues']} of {s['articles_with_cues']} answers")
    print(f"explain: wrote {m['out_dir']}/explain.md, explain.html and explanations.jsonl")
    return 0


def _run_calibrate(args: argparse.Namespace, cfg: Config) -> int:
    from .calibrate import run_calibrate

    res = run_calibrate(cfg.calibrate)
    fit = res["fit"]
    if fit["method"] == "temperature":
        print(f"calibrate: temperature {fit['temperature']:.3f} (was {res['previous_temperature']:.3f}) from "
              f"{counted(res['n'], 'article')}: log-loss {fit['nll']:.4f} -> {fit['nll_calibrated']:.4f}, ECE {fit['ece']:.4f} "
              f"-> {fit['ece_calibrated']:.4f}")
    else:
        print(f"calibrate: no temperature fitted ({fit['reason']}); scores are the raw softmax")
    print(f"calibrate: wrote {res['written']}")
    return 0


def _run_export(args: argparse.Namespace, cfg: Config) -> int:
    from .export import run_export

    export = cfg.require("export")
    res = run_export(export)
    smoothed = f", smoothed, alpha {export.smooth}" if export.smooth else ""
    what = ("ONNX graph" + (f" ({export.quantize}{smoothed})" if export.quantize != "none" else "") if export.format == "onnx"
            else "merged model" if res["merged"] else "adapter")
    check = res.get("check")
    if check:
        what += (f" (labels identical to the torch model's on {check['same_labels']:.1%} of {check['n']} "
                 f"articles, largest probability change {check['max_abs_prob_diff']:.3f})")
    print(f"export: wrote {what} + model card to {res['out']}"
          + (f"; pushed to {res['pushed']}" if res.get("pushed") else ""))
    return 0


COMMANDS: tuple[Command, ...] = (
    Command("prep", _run_prep,
            "Raw labeled articles -> clean, de-duplicated, leakage-safe train/val/test JSONL.",
            "Read raw articles (Kaggle CSV, AllSides, any CSV/JSONL/Parquet, instruction JSONL), normalise labels, "
            "repair text, drop duplicates, split without leakage, and write train/val/test/eval_small JSONL plus "
            "prep_meta.json.",
            (Flag("--input", "prep.input.path", "PATH"), Flag("--format", "prep.input.format"),
             Flag("--out", "prep.out_dir", "DIR"), Flag("--split", "prep.split.mode"),
             Flag("--seed", "prep.split.seed"), QUIET)),
    Command("predict", _run_predict,
            "Score articles with a base model (zero-shot) or base + adapter; resumable JSONL output.",
            "Predict left/center/right for every article of a file, a prep split or stdin. mode=score (default) "
            "reads label probabilities from one forward pass; mode=generate decodes a few tokens greedily and "
            "parses them (unparseable = invalid). A killed run resumes when re-run with the same arguments. Under "
            "torchrun, processes split the articles.",
            (*model_flags("predict"), Flag("--input", "predict.input", "PATH"), Flag("--split", "predict.split"),
             Flag("--out", "predict.out", "FILE"), Flag("--mode", "predict.mode"),
             Flag("--batch-size", "predict.batch_size"), Flag("--name", "predict.name"),
             Flag("--limit", "predict.limit"),
             Flag("--overwrite", "predict.overwrite", const=True),
             Flag("--include-text", "predict.include_text", const=True), QUIET)),
    Command("train", _run_train,
            "LoRA fine-tuning (label-token loss or classifier head) on prep outputs.",
            "Fine-tune a causal LM (head lm: loss on the label token only) or a sequence classifier (head cls) with "
            "LoRA on train.jsonl, evaluate on val.jsonl (macro-F1), keep the best checkpoint, and write a peft "
            "adapter directory plus newsbias.json and manifest.json. Runs under torchrun / accelerate launch with "
            "several processes.",
            (Flag("--model", "train.model.name_or_path", "ID_OR_DIR"), Flag("--head", "train.model.head"),
             Flag("--data", "train.data.path", "DIR"), Flag("--out", "train.out_dir", "DIR"),
             Flag("--seed", "train.seed"), Flag("--max-steps", "train.optim.max_steps"),
             Flag("--resume", help="Continue from the last checkpoint in the output directory."),
             Flag("--overwrite", "train.overwrite", const=True), QUIET)),
    Command("baseline", _run_baseline,
            "Majority-class and TF-IDF + logistic regression baselines on a prep split.",
            "Train the majority-class and TF-IDF + logistic regression baselines on train.jsonl of "
            "a prep output directory, predict a split, and write majority.jsonl and tfidf-lr.jsonl (the shared "
            "prediction format, with probabilities), a manifest beside each, and the fitted pipeline "
            "tfidf-lr.joblib.",
            (Flag("--data", "baseline.data", "DIR"), Flag("--split", "baseline.split", "NAME_OR_FILE"),
             Flag("--out", "baseline.out_dir", "DIR"), Flag("--seed", "baseline.seed"), QUIET)),
    Command("cv", _run_cv,
            "Outlet-grouped cross-validation of the baselines and models: the yardstick for unseen outlets.",
            "Pool train/val/test of a prep output, cut it into K folds with no outlet in two folds "
            "(label-stratified, deterministic), run each recipe with one fold as test and the next as val, "
            "and report macro-F1 per fold, the mean and a 95% interval over folds, beside the same recipe on random "
            "folds (outlets shared). Recipes: majority and tfidf-lr (the baseline: section), and model (the train: "
            "section trained on every round, scored with the predict: section; its rounds are kept in cv.work_dir "
            "and resume when cv is re-run).",
            (Flag("--data", "cv.data", "DIR"), Flag("--folds", "cv.folds"), Flag("--out", "cv.out_dir", "DIR"),
             Flag("--seed", "cv.seed"), QUIET)),
    Command("evaluate", _run_evaluate,
            "Predictions JSONL -> metrics JSON (macro-F1 with bootstrap CI, confusion matrix ...).",
            "Score a predictions file (from predict, baseline or serve): accuracy, macro/micro/weighted F1, "
            "per-class precision/recall/F1, confusion matrix, invalid-output rate (invalid counts as wrong), a "
            "bootstrap interval for macro-F1, ordinal MAE, calibration error when probabilities exist, and "
            "optionally a per-outlet breakdown.",
            (Flag("--preds", "evaluate.preds", "FILE"), Flag("--out", "evaluate.out", "FILE"),
             Flag("--n-boot", "evaluate.n_boot"), Flag("--seed", "evaluate.seed"),
             Flag("--by-outlet", "evaluate.by_outlet", const=True),
             Flag("--skip-missing-gold", "evaluate.missing_gold", const="skip"), QUIET)),
    Command("compare", _run_compare,
            "Several prediction files -> eval_compare.csv, metrics.json, plots, report.md/html.",
            "Join prediction files of the same split (base, tuned, baselines) on id into eval_compare.csv (article "
            "preview, gold, one column per run) and write a report with the results table (macro-F1 with 95% CI), "
            "per-class F1, confusion-matrix and per-class plots, the run manifests, and the cases where tuned fixes "
            "or breaks base. Name runs as NAME=FILE (base=..., tuned=...); otherwise the file stem is the name.",
            (Flag("--preds", "compare.preds", "[NAME=]FILE", many=True),
             Flag("--data", "compare.data", "FILE_OR_DIR"), Flag("--split", "compare.split", "NAME"),
             Flag("--out", "compare.out_dir", "DIR"), Flag("--intersect", "compare.on_mismatch", const="intersect"),
             Flag("--ensemble", "compare.ensembles", "NAME=RUN+RUN", many=True),
             Flag("--by-outlet", "compare.metrics.by_outlet", const=True), QUIET)),
    Command("serve", _run_serve,
            "HTTP API (POST /v1/classify) and a classification page for one model.",
            "Load base + adapter (or a base model zero-shot, or a merged export) once and answer POST /v1/classify, "
            "POST /v1/explain (which words moved one answer), GET /health, GET /v1/model, with OpenAPI docs at /docs "
            "and a classification page at /. Concurrent classify requests are micro-batched.",
            (*model_flags("serve"), Flag("--head", "serve.head"), Flag("--name", "serve.name"),
             Flag("--host", "serve.host"), Flag("--port", "serve.port"),
             Flag("--max-batch", "serve.max_batch"), Flag("--max-wait-ms", "serve.max_wait_ms"), QUIET)),
    Command("explain", _run_explain,
            "Which words moved a model's answers, and were they outlet cues (names, links, bylines)?",
            "Leave out each word the model reads, one at a time, and rescore: a word's effect on a label is the "
            "probability the label loses without it. Flags the article's own outlet cues (its outlet's name and "
            "domain, links and handles, bylines, datelines), rescores each article without all of them, and writes "
            "explanations.jsonl, explain.md and explain.html with a summary and the top words per label.",
            (*model_flags("explain"), Flag("--input", "explain.input", "PATH"), Flag("--split", "explain.split"),
             Flag("--out", "explain.out_dir", "DIR"), Flag("--limit", "explain.limit"),
             Flag("--sample", "explain.sample"), Flag("--span", "explain.span"),
             Flag("--batch-size", "explain.batch_size"),
             Flag("--overwrite", "explain.overwrite", const=True), QUIET)),
    Command("calibrate", _run_calibrate,
            "Fit a trained model's probability temperature on val and write it into its newsbias.json.",
            "Score labelled held-out articles (a prep directory's val split by default) with the raw softmax, fit "
            "the one temperature T with the lowest log-loss of softmax(logits / T), and write it into the model's "
            "newsbias.json, which predict, serve, explain and export read. No label changes. newsbias train "
            "already does this on the val articles it scored; use this for more articles or an older model.",
            (*model_flags("calibrate"), Flag("--data", "calibrate.data", "DIR_OR_FILE"),
             Flag("--split", "calibrate.split", "NAME"), Flag("--limit", "calibrate.limit"),
             Flag("--batch-size", "calibrate.batch_size"), QUIET)),
    Command("export", _run_export,
            "Adapter -> export dir (optionally merged into the base) with a model card; hub upload.",
            "Copy a trained adapter, or with --merge fold the LoRA weights (and the classifier head) into the base "
            "model and save it as safetensors with the tokenizer and newsbias.json (with --format onnx: the merged "
            "model's scoring graph for ONNX Runtime, --quantize int8 or int8-block for int8 weights); write a model card "
            "(README.md); optionally upload with --push-to-hub.",
            (Flag("--adapter", "export.adapter", "DIR"), Flag("--out", "export.out", "DIR"),
             Flag("--merge", "export.merge", const=True), Flag("--model --base-model", "export.model", "PATH"),
             Flag("--format", "export.format"),
             Flag("--quantize", "export.quantize"), Flag("--check-data", "export.check_data", "DIR_OR_FILE"),
             Flag("--smooth", "export.smooth", "ALPHA"),
             Flag("--calibration-data", "export.calibration_data", "DIR_OR_FILE"),
             Flag("--eval --metrics", "export.metrics", "[RUN=]PATH"),
             Flag("--base-model-id", "export.base_model_id", "ID"), Flag("--license", "export.license"),
             Flag("--push-to-hub", "export.push_to_hub", "REPO"),
             Flag("--card-in-adapter", "export.card_in_adapter", const=True),
             Flag("--overwrite", "export.overwrite", const=True), QUIET)),
)


def _value_kwargs(annotation: Any) -> dict[str, Any]:
    """argparse ``type`` / ``choices`` for a field's type: ``int | None`` -> int, a Literal -> its values."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _value_kwargs(inner[0]) if len(inner) == 1 else {}
    if origin is list:
        return _value_kwargs(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return {"choices": list(typing.get_args(annotation))}
    return {"type": annotation} if annotation in (int, float) else {}


def _help(flag: Flag) -> str:
    """The flag's help: its field's description and the key it sets (argparse %-formats help texts)."""
    if flag.key is None:
        return str(flag.help).replace("%", "%%")
    info = field_info(flag.key)
    text = info.description
    if not text:
        raise ValueError(f"config key {flag.key} has no description to serve as the help of {flag.names}")
    if flag.const is not None:
        shown = str(flag.const).lower() if isinstance(flag.const, bool) else flag.const
        where = f"{flag.key}={shown}"
    elif "default" not in text and isinstance(info.default, (str, int, float)) and not isinstance(info.default, bool):
        where = f"{flag.key}; default {info.default}"
    else:
        where = flag.key
    text = text[:-1] if text.endswith(".") and not text.endswith("...") else text
    return f"{text} (= {where}).".replace("%", "%%")


def _add_flag(p: argparse.ArgumentParser, flag: Flag) -> None:
    names = flag.names.split()
    if flag.key is None:
        p.add_argument(*names, action="store_true", help=_help(flag))
    elif flag.const is not None:
        p.add_argument(*names, dest=flag.key, action="store_const", const=flag.const, help=_help(flag))
    else:
        kwargs = _value_kwargs(field_info(flag.key).annotation)
        metavar = flag.metavar or (None if "choices" in kwargs else names[0].lstrip("-").replace("-", "_").upper())
        # "extend": a repeated list flag (--ensemble a=X+Y --ensemble b=X+Z) adds to the list, not replaces it
        many = {"nargs": "+", "action": "extend"} if flag.many else {}
        p.add_argument(*names, dest=flag.key, metavar=metavar, help=_help(flag), **many, **kwargs)


def _flag_values(args: argparse.Namespace, flags: tuple[Flag, ...]) -> dict[str, Any]:
    """The config values the given flags set (dotted key -> value)."""
    return {f.key: getattr(args, f.key) for f in flags if f.key and getattr(args, f.key) is not None}


def _build() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each command's own parser."""
    parser = argparse.ArgumentParser(
        prog="newsbias", allow_abbrev=False,
        description="Fine-tune small LLMs with LoRA to classify news articles as left / center / right, "
                    "and evaluate them honestly (outlet-disjoint splits).")
    parser.add_argument("--verbose", "-v", action="store_true", help="Debug logging and full tracebacks.")
    parser.add_argument("--version", action="version", version=f"newsbias {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands = {}
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help.replace("%", "%%"), description=cmd.description,
                           epilog=EPILOG.format(example=EXAMPLES.get(cmd.name, f"{cmd.name}.KEY=VALUE")),
                           allow_abbrev=False)
        p.add_argument("--config", "-c", metavar="FILE", help="YAML config file (see configs/).")
        p.add_argument("overrides", nargs="*", metavar="section.key=value",
                       help="Overrides applied on top of the config file before validation.")
        for flag in cmd.flags:
            _add_flag(p, flag)
        p.set_defaults(spec=cmd)
        commands[cmd.name] = p
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    """The ``newsbias`` argument parser (every command's flags come from :data:`COMMANDS`)."""
    return _build()[0]


def _is_override(token: str) -> bool:
    """``section.key=value`` with a config section first (``compare.metrics.n_boot=100``), not ``NAME=PATH``."""
    key, eq, _ = token.partition("=")
    return bool(eq) and "." in key and key.split(".", 1)[0] in Config.model_fields and " " not in key


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Like ``parse_args``, but ``key=value`` overrides may come before, between or after flags.

    argparse cannot intermix positionals and options under subparsers, so the subcommand's own
    parser does the intermixed parse.
    """
    parser, commands = _build()
    idx = next((i for i, tok in enumerate(argv) if not tok.startswith("-")), None)
    if idx is None or argv[idx] not in commands or any(t in ("-h", "--help") for t in argv[:idx]):
        return parser.parse_args(argv)
    top = parser.parse_args(argv[:idx])
    rest = argv[idx + 1:]
    # a flag taking several values (--preds, --ensemble) would swallow overrides after it: they go first
    overrides = [t for t in rest if _is_override(t)]
    args = commands[argv[idx]].parse_intermixed_args(overrides + [t for t in rest if not _is_override(t)])
    args.command = argv[idx]
    args.verbose = top.verbose
    return args


def _quiet_libraries() -> None:
    """``-q``: no progress bars, load reports or warnings from the libraries either (newsbias's own warnings stay).

    transformers and huggingface_hub read these variables when imported, so a stage that never imports them
    does not pay for it here.
    """
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", module=r"(?!newsbias)")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def os_error_message(exc: OSError) -> str:
    """One line for an error the OS raised, with what to do for the common ones."""
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device{' (writing' + where + ')' if where else ''}: free some space or write "
                f"the output elsewhere, then run the command again")
    if exc.errno == errno.EEXIST:
        return f"{where.strip() or 'the output'} exists and is not a directory: give a directory path (new or empty)"
    if exc.errno == errno.EROFS:
        return f"cannot write{where}: the file system is read-only; write the output elsewhere"
    return f"cannot access{where}: {exc.strerror or exc}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    quiet = getattr(args, "quiet", False)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
                        format=LOG_FORMAT)
    spec: Optional[Command] = getattr(args, "spec", None)
    if spec is None:
        build_parser().print_help()
        return 2
    if quiet:
        _quiet_libraries()
    record_command_line(args.command, list(sys.argv[1:] if argv is None else argv))
    try:
        return int(spec.run(args, load_config(args.config, args.overrides, _flag_values(args, spec.flags))) or 0)
    except NewsbiasError as exc:
        if args.verbose:
            raise
        print(f"newsbias {args.command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # permissions, a full disk, a path that vanished: the OS said it in one line
        if args.verbose:
            raise
        print(f"newsbias {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        # safetensors reports a failed write (a full disk) as its own exception, not as an OSError
        if args.verbose or type(exc).__name__ != "SafetensorError":
            raise
        print(f"newsbias {args.command}: error: cannot write the weights: {one_line(str(exc), 300)}; free some space "
              f"or write elsewhere", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"newsbias {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
