"""Typed, validated configuration: one pydantic model per stage, one YAML file per run.

A config file has one section per stage (``prep:``, ``train:``, ``predict:`` ...); each stage reads
its own section and ignores the others, so one file can describe a whole pipeline run. Unknown
keys and wrong types are errors that name the field (``prep.split.mode``). ``key=value``
overrides on the command line are applied before validation, so any run is reproduced by its
config file plus its overrides.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Sequence

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from .errors import ConfigError
from .labels import LABELS, NumericScheme

log = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = (
    "Classify the political leaning of this news article as one of {left|center|right}. "
    "Respond with a single word: left, center, or right."
)
Dtype = Literal["auto", "float32", "bfloat16", "float16"]
# int8 export: the MLP output projections of BERT-like encoders (layer.N.output.dense, not
# attention.output.dense) and of Llama/Qwen-like decoders (mlp.down_proj) stay fp32: their inputs,
# after GELU/SiLU gating, carry the outliers int8 rounds worst (docs/benchmarks.md)
INT8_KEEP_FP32 = (r"layer\.\d+\.output\.dense$", r"mlp\.down_proj$")
Head = Literal["lm", "cls"]
MAX_WINDOWS = 32  # windows scored per article (predict.windows, serve.windows)
Pooling = Literal["cls", "mean"]
POOLING_HELP = ("cls head only: cls = transformers' classifier ([CLS] / last token); mean = a linear head over the "
                "mean of the last hidden states (sentence encoders).")


# settings that name a file or directory: "~/runs/x" means the home directory's, in every stage alike (a literal
# "./~" directory would be one "rm -rf ~" away from disaster)
_PATH_KEYS = frozenset({"adapter", "appendix", "calibration_data", "check_data", "data", "input", "model",
                        "name_or_path", "out", "out_dir", "path", "preds", "val_path", "work_dir"})


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors; a path setting's leading ``~`` is the home directory."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @field_validator("*", mode="after")
    @classmethod
    def _home(cls, v: Any, info: ValidationInfo) -> Any:
        if info.field_name in _PATH_KEYS and isinstance(v, str) and v.startswith("~"):
            return os.path.expanduser(v)
        return v


class ColumnsConfig(StrictModel):
    """Which input column holds each field (tabular and Kaggle inputs)."""

    text: str = "text"
    label: str = "label"
    # optional fields: read when the file has the column, left empty when it does not
    id: str | None = "id"
    title: str | None = "title"
    source: str | None = "source"
    date: str | None = "date"
    url: str | None = "url"


class InputConfig(StrictModel):
    path: str = Field(description="Input file or directory (CSV, JSONL(.gz), Parquet, AllSides release dir).")
    format: Literal["auto", "kaggle", "allsides", "tabular", "instruction"] = Field(
        default="auto", description="Input format; auto guesses it from the file.")
    columns: ColumnsConfig | None = Field(
        default=None, description="Column mapping for tabular input; defaults per format otherwise.")
    on_bad_row: Literal["error", "skip"] = "error"
    encoding: str = "utf-8"
    limit: int | None = Field(default=None, ge=1, description="Read only the first N records (smoke runs).")


class LabelConfig(StrictModel):
    numeric: NumericScheme = Field(
        default="none", description="Encoding of numeric labels: '012' (0=left) or '-101' (-1=left). Never guessed.")
    mapping: dict[str, str] = Field(default_factory=dict, description="Extra raw-label spellings -> left/center/right.")
    on_unknown: Literal["error", "drop"] = "error"

    @field_validator("mapping", mode="before")
    @classmethod
    def _keys_as_text(cls, v: Any) -> Any:
        # `{1: left}` in YAML or on the command line has int keys: a raw label is text
        return {str(k): t for k, t in v.items()} if isinstance(v, dict) else v

    @field_validator("mapping")
    @classmethod
    def _maps_to_labels(cls, v: dict[str, str]) -> dict[str, str]:
        bad = {k: t for k, t in v.items() if str(t).strip().lower() not in LABELS}
        if bad:
            k, t = next(iter(bad.items()))
            raise ValueError(f"maps {k!r} to {t!r}, which is not one of {', '.join(LABELS)}")
        return {k: str(t).strip().lower() for k, t in v.items()}

    @field_validator("numeric", mode="before")
    @classmethod
    def _numeric_as_text(cls, v: Any) -> Any:
        # unquoted in YAML, 012 reads as the octal number 10 and -101 as an int: take them as meant
        return {10: "012", 12: "012", -101: "-101"}.get(v, v) if isinstance(v, int) and not isinstance(v, bool) else v


class CleanConfig(StrictModel):
    fix_text: bool = Field(default=True, description="Repair mojibake with ftfy.")
    prepend_title: bool = False
    min_chars: int = Field(default=100, ge=0)
    min_words: int = Field(default=0, ge=0)
    max_chars: int = Field(default=200_000, ge=1, description="Longer texts are dropped at read (reason too_long), "
                           "so one giant record cannot exhaust memory.")
    outlet_cues: Literal["keep", "mask", "drop"] = Field(
        default="keep", description="Outlet names, links, handles, bylines, datelines and learned per-outlet "
                                    "boilerplate: keep them, mask names/links as [outlet], or drop them all "
                                    "(see newsbias.data.cues); counts in prep_meta.json.")


class DedupConfig(StrictModel):
    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.8, gt=0.0, le=1.0, description="Estimated Jaccard similarity of word shingles.")
    shingle_words: int = Field(default=5, ge=1)
    num_perm: int = Field(default=64, ge=16, le=512)
    on_label_conflict: Literal["drop", "keep"] = Field(
        default="drop", description="Duplicates whose labels disagree: drop them all, or keep one like any duplicate.")


class PredefinedSplitConfig(StrictModel):
    train: str
    val: str
    test: str | None = Field(default=None, description="If absent, test is carved out of train (test_frac).")
    id_column: str = "ID"


class SplitConfig(StrictModel):
    mode: Literal["random", "by_source", "by_time", "predefined"] = Field(
        default="by_source", description="Split mode. by_source keeps outlets apart: the honest yardstick.")
    seed: int = Field(default=42, description="Split seed.")
    test_frac: float = Field(default=0.15, ge=0.0, lt=1.0)
    val_frac: float = Field(default=0.15, ge=0.0, lt=1.0, description="Fraction of what remains after test.")
    group_by: str | None = Field(default=None, description="Keep each value of this field in one split (with "
                                 "by_source: outlets too; an author writing for two outlets joins them).")
    predefined: PredefinedSplitConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.mode == "predefined" and self.predefined is None:
            raise ValueError("split.mode 'predefined' needs split.predefined.train / .val (paths to split files)")
        return self


class DownsampleConfig(StrictModel):
    train_cap: int | None = Field(default=None, ge=1, description="Stratified cap on the total train size.")
    per_label_cap: int | None = Field(default=None, ge=1)
    fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    strategy: Literal["proportional", "balanced"] = Field(
        default="proportional", description="How train_cap is shared among labels.")


class PrepConfig(StrictModel):
    input: InputConfig
    out_dir: str = Field(default="runs/data", description="Output directory (train/val/test JSONL, prep_meta.json); "
                                                         "the next stages' input by default.")
    labels: LabelConfig = Field(default_factory=LabelConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    downsample: DownsampleConfig = Field(default_factory=DownsampleConfig)
    eval_small: int = Field(default=15, ge=0)
    instruction: str | None = Field(
        default=None, description="Instruction written into the output rows; null = an instruction JSONL's own "
                                  "(its most common), else the built-in one.")
    workers: int = Field(default=0, ge=0, description="Processes for text cleaning (0 = one per core).")


# Each stage module owns the meaning of its section; the models live here so that one file
# validates a whole pipeline config without importing torch.
class TrainModelConfig(StrictModel):
    name_or_path: str = Field(default="Qwen/Qwen3-0.6B", description="Hugging Face hub id, local model directory "
                              "or .gguf file.")
    gguf_file: str | None = Field(default=None, description="GGUF file inside the model directory (or give "
                                     "the .gguf path itself as the model).")
    head: Head = Field(
        default="lm", description="lm: label-token scoring of a causal LM; cls: sequence-classification head.")
    pooling: Pooling = Field(default="cls", description=POOLING_HELP)
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1 ...")
    dtype: Dtype = Field(default="auto", description="auto: bf16 on GPUs that support it, fp32 on CPU.")
    attn_implementation: str | None = Field(default=None, description="eager, sdpa, flash_attention_2 ...")
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False


class TrainLoraConfig(StrictModel):
    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["auto"] = Field(
        default="auto", description="Module names, or auto (q/k/v/o_proj for LLMs, query/key/value for BERT).")
    bias: Literal["none", "all", "lora_only"] = "none"

    @field_validator("target_modules", mode="before")
    @classmethod
    def _names_from_a_string(cls, v: Any) -> Any:
        # target_modules=q_proj,v_proj on the command line: a list, not a union error about list and 'auto'
        if isinstance(v, str) and v != "auto":
            return [name.strip() for name in v.split(",") if name.strip()]
        return v


class PromptConfig(StrictModel):
    """Everything that decides the token ids of a prompt (see newsbias.prompt); saved as-is in ``newsbias.json``.

    Training writes the prompt it used next to the adapter, and predict / serve read it from there:
    their own ``prompt:`` only applies to a base model used without an adapter.
    """

    instruction: str | None = Field(
        default=None, description="Task instruction; null = the data's own instruction field, else the built-in one.")
    max_length: int = Field(default=512, ge=8, description="Tokens of prompt + label; only the article is cut.")
    truncation: Literal["head", "head_tail"] = Field(
        default="head", description="Cut a long article to its start (head), or to its start and end (head_tail).")
    head_fraction: float = Field(default=0.5, ge=0.0, le=1.0, description="Share of the budget kept from the "
                                 "article's start with truncation=head_tail.")
    chat_template: Literal["auto", "on", "off"] = Field(
        default="auto", description="Wrap the prompt in the tokenizer's chat template (auto: when it has one).")
    answer_cue: str = Field(default="Answer:", description="Text after the article; the label token follows it.")
    verbalizers: dict[str, str] = Field(
        default_factory=lambda: {label: f" {label}" for label in LABELS},
        description="Label -> text whose first token is the label's token (head lm).")

    @field_validator("verbalizers")
    @classmethod
    def _one_per_label(cls, v: dict[str, str]) -> dict[str, str]:
        missing, extra = sorted(set(LABELS) - set(v)), sorted(set(v) - set(LABELS))
        if missing or extra:
            raise ValueError(f"give exactly one verbalizer per label {list(LABELS)}"
                             + (f"; missing {missing}" if missing else "") + (f"; not a label: {extra}" if extra else ""))
        return v

    @field_validator("chat_template", mode="before")
    @classmethod
    def _yaml_bool(cls, v: Any) -> Any:
        # YAML 1.1 reads bare on/off as booleans
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    def with_instruction(self, fallback: str | None = None) -> PromptConfig:
        """This prompt with its instruction decided: its own, else ``fallback`` (the data's), else the default."""
        if self.instruction:
            return self
        return self.model_copy(update={"instruction": fallback or DEFAULT_INSTRUCTION})


class TrainDataConfig(StrictModel):
    path: str | None = Field(
        default=None, description="Prep output directory (train.jsonl, val.jsonl) or a train JSONL file; "
                                  "default: prep.out_dir of the same config.")
    val_path: str | None = Field(default=None, description="Val JSONL (default: val.jsonl next to train).")
    train_limit: int | None = Field(default=None, ge=1, description="Use only the first N train rows.")
    val_limit: int | None = Field(default=None, ge=1, description="Use only the first N val rows.")
    sampling: Literal["natural", "outlet_balanced"] = Field(
        default="natural", description="outlet_balanced: each epoch draws its articles (with replacement) with "
                                       "probability 1/n^outlet_power of their outlet's n articles, so a few large "
                                       "outlets do not dominate what is learned.")
    outlet_power: float = Field(default=1.0, ge=0.0, le=1.0, description="With sampling=outlet_balanced: 1 draws "
                                "every outlet equally often, 0.5 dampens less.")


class TrainOptimConfig(StrictModel):
    lr: float = Field(default=1e-4, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    epochs: float = Field(default=5, gt=0.0)
    max_steps: int | None = Field(default=None, ge=1, description="Optimizer steps; overrides epochs.")
    batch_size: int = Field(default=1, ge=1, description="Examples per device per micro-batch.")
    grad_accum: int = Field(default=8, ge=1)
    warmup_ratio: float = Field(default=0.05, ge=0.0, lt=1.0)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    max_grad_norm: float | None = Field(default=1.0, gt=0.0)
    class_weights: Literal["none", "balanced"] = "none"
    group_by_length: bool = True


class TrainEvalConfig(StrictModel):
    every_steps: int | None = Field(default=None, ge=1, description="Evaluate every N optimizer steps "
                                       "(null = once per epoch).")
    metric: Literal["val_macro_f1", "val_loss", "val_accuracy"] = "val_macro_f1"
    patience: int | None = Field(default=2, ge=1, description="Evaluations without improvement before "
                                    "stopping; null = never stop early.")
    keep: Literal["best", "last"] = Field(
        default="best", description="Which weights the run writes: best = the evaluation val scored highest; last = "
                                    "the last step's (for a val split too small or unlike the test outlets to pick "
                                    "checkpoints).")
    batch_size: int = Field(default=8, ge=1)


class TrainCheckpointConfig(StrictModel):
    every_steps: int | None = Field(default=None, ge=1, description="Checkpoint every N optimizer steps "
                                       "(null = at every evaluation).")
    keep: int = Field(default=2, ge=1)


class TrainAdversaryConfig(StrictModel):
    weight: float = Field(
        default=0.0, ge=0.0, description="Strength of the push against the outlet head (its ramp from 0 reaches "
                                         "this by the end of training); 0 = off. See newsbias.adversary.")
    scope: Literal["within_label", "all"] = Field(
        default="within_label", description="within_label: the adversary tells apart only outlets of the same "
                                            "leaning; all: every outlet (Baly et al. 2020), which also works "
                                            "against the label itself.")
    method: Literal["confusion", "reverse"] = Field(
        default="confusion", description="How the model is pushed: confusion = towards features on which the "
                                         "outlet head's answer is uniform over the candidate outlets (Tzeng et al. "
                                         "2015); reverse = the head's loss with its gradient reversed (Ganin & "
                                         "Lempitsky 2015, Baly et al. 2020).")
    min_articles: int = Field(default=20, ge=1, description="Outlets with fewer training articles are not the "
                                                            "adversary's targets.")
    lr: float = Field(default=1e-2, gt=0.0, description="Learning rate of the adversary's outlet head (new "
                                                        "weights: faster than a pretrained model's).")


# train's settings that say where and how a run is saved or logged, not what it learns
TRAIN_NOT_IN_RUN = ("progress", "out_dir", "checkpoint", "overwrite", "report_to")


class TrainConfig(StrictModel):
    """``train:`` section: LoRA fine-tuning on prep outputs (see newsbias.train)."""

    model: TrainModelConfig = Field(default_factory=TrainModelConfig)
    lora: TrainLoraConfig = Field(default_factory=TrainLoraConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    optim: TrainOptimConfig = Field(default_factory=TrainOptimConfig)
    eval: TrainEvalConfig = Field(default_factory=TrainEvalConfig)
    checkpoint: TrainCheckpointConfig = Field(default_factory=TrainCheckpointConfig)
    finetune: Literal["lora", "full"] = Field(
        default="lora", description="lora: train LoRA adapters (+ the cls head); full: train every weight and save "
                                    "the whole model (small encoders).")
    head_init: Literal["random", "probe"] = Field(
        default="random", description="cls head only. probe: before training, fit the head by logistic regression "
                                      "on the frozen model's pooled features of the training articles (linear "
                                      "probing, then fine-tuning: LP-FT), instead of starting from random weights.")
    wise_alphas: list[float] = Field(
        default_factory=list, description="WiSE-FT (Wortsman et al. 2022): after training, score val with the "
                                          "weights moved only this fraction of the way from where training started "
                                          "(the pretrained model and its first head; with LoRA, the adapter scaled) "
                                          "to the last step's, for each value in (0, 1), and keep whichever scores "
                                          "best, the run's own kept checkpoint included; [] = off.")
    outlet_adversary: TrainAdversaryConfig = Field(
        default_factory=TrainAdversaryConfig, description="Train features that cannot name the article's outlet: "
                                                          "a linear outlet head over the label head's input, and "
                                                          "the model pushed against it (see method).")
    calibrate: Literal["temperature", "none"] = Field(
        default="temperature", description="temperature: after training, fit one temperature on val's scores "
                                           "of the kept weights (lowest val log-loss; labels unchanged) and "
                                           "score with it, so probabilities mean what they say; none: raw softmax.")
    out_dir: str = Field(default="runs/train", description="Adapter output directory.")
    seed: int = Field(default=42, description="Seed of the weight initialisation and the data order.")
    progress: bool = True
    overwrite: bool = Field(default=False, description="Start over in an out_dir that holds another run's checkpoints.")
    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list, description="Also log train/eval records to TensorBoard (out_dir/runs) and/or "
                                          "Weights & Biases (needs the package; WANDB_MODE=offline works).")

    @field_validator("wise_alphas")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < a < 1 for a in v):
            raise ValueError(f"each value must lie strictly between 0 and 1 (1, the fine-tuned weights, is always "
                             f"scored); got {v}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _cls_only_settings(self) -> TrainConfig:
        if self.model.pooling == "mean" and self.model.head != "cls":
            raise ValueError("model.pooling=mean needs model.head=cls (the lm head reads the label token's logits)")
        if self.head_init == "probe" and self.model.head != "cls":
            raise ValueError("head_init=probe needs model.head=cls (the lm head is the model's own vocabulary "
                             "projection); set head_init=random")
        return self


class ModelSourceConfig(StrictModel):
    """Which model a stage loads, and where it runs (shared by ``predict:``, ``serve:`` and ``export:``).

    An ``adapter`` (a ``newsbias train`` output) brings its base, head and prompt; ``model`` then only
    moves the base. Without one, ``model`` is a base model or a trained model directory.
    """

    model: str | None = Field(default=None, description="Base model id, path or .gguf file, or a trained model "
                                 "directory (merged export, full fine-tune); default: the adapter's base.")
    gguf_file: str | None = Field(default=None, description="GGUF file inside the model directory (or give "
                                     "the .gguf path itself as the model).")
    adapter: str | None = Field(default=None, description="Training output directory (newsbias.json + peft files, "
                                                           "or a full fine-tune's weights); omit for zero-shot.")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1 ...")
    dtype: Dtype = Field(default="auto", description="auto: bf16 on GPUs that support it, fp32 on CPU.")


class InferenceConfig(ModelSourceConfig):
    """A model source that labels articles (``predict:``, ``serve:``), and how a base model without adapter is used."""

    head: Head = Field(
        default="lm", description="Head of a base model used without an adapter: lm (zero-shot from the label "
                                  "tokens) or cls (an untrained, seeded classifier head: the chance-level reference).")
    pooling: Pooling = Field(default="cls", description=POOLING_HELP)
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt of a base model used without an "
                                 "adapter (an adapter brings its own, from newsbias.json).")
    name: str | None = Field(default=None, description="Model name written in each record or answer (default: the "
                                                        "adapter's directory name, else the model's: its directory or file name, or a hub id's last part).")
    windows: int = Field(default=1, ge=1, le=MAX_WINDOWS, description="Score up to this many stretches of an article longer "
                         "than the prompt (head, tail, evenly spaced between) and pool them; 1 = the head only.")
    pool: Literal["mean", "max"] = Field(default="mean", description="How windows are pooled: mean of the "
                                         "probabilities, or max (the most confident window's).")
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads (null = this machine's "
                                   "physical cores); serve on a small CPU box: 1 leaves a core to the HTTP side.")

    def loader_options(self, instruction: str | None = None) -> dict[str, Any]:
        """Keyword arguments of :meth:`newsbias.classifier.Classifier.from_options` for this model.

        ``instruction`` (the data's own) is the prompt's when ``prompt.instruction`` is unset.
        """
        return {"model": self.model, "adapter": self.adapter, "gguf_file": self.gguf_file, "head": self.head,
                "pooling": self.pooling, "prompt": self.prompt.with_instruction(instruction), "device": self.device,
                "dtype": self.dtype}

    def run_name(self) -> str:
        """The name each record or answer carries: ``name``, else the adapter's directory name, else the model's."""
        source = self.adapter or self.model
        return self.name or (Path(source).name if source else "base")


class PredictConfig(InferenceConfig):
    """``predict:`` section: label every article of a file, a prep split or stdin (see newsbias.predict)."""

    input: str | None = Field(default=None, description="JSONL/CSV file, prep output directory (with `split`), or - "
                                                         "for stdin; default: prep.out_dir of the same config.")
    split: str = Field(default="test", description="Split file to read when `input` is a prep directory.")
    out: str | None = Field(default=None, description="Predictions JSONL, or - for stdout (written once every "
                                                      "article is scored); required by `newsbias predict`, not by cv.")
    mode: Literal["score", "generate"] = Field(
        default="score", description="score: label probabilities from one forward pass; generate: a few greedily "
                                     "decoded tokens, parsed (unparseable = invalid).")
    batch_size: int = Field(default=8, ge=1, description="Articles per forward pass.")
    max_new_tokens: int = Field(default=6, ge=1, le=512, description="Tokens decoded per article (mode generate).")
    include_text: bool = Field(default=False, description="Copy the article text into each record "
                                                          "(qualitative *_eval.jsonl).")
    on_bad_gold: Literal["error", "skip"] = "error"
    text_field: str | None = Field(default=None, description="Article field for JSONL/CSV input "
                                                              "(default: input, else text).")
    limit: int | None = Field(default=None, ge=1, description="Predict only the first N articles.")
    chunk_size: int = Field(default=64, ge=1, description="Articles scored and flushed to disk at a time.")
    overwrite: bool = Field(default=False, description="Replace an existing output instead of refusing.")


class CalibrateConfig(ModelSourceConfig):
    """``calibrate:`` section: fit a trained model's probability temperature on labelled held-out
    articles and write it into its ``newsbias.json`` (see newsbias.calibrate)."""

    data: str | None = Field(default=None, description="Labelled articles: a prep output directory (with `split`) "
                                                        "or a JSONL file; default: prep.out_dir of the same config.")
    split: str = Field(default="val", description="Split file to read when `data` is a prep directory: held-out "
                                                  "articles the model never trained on (val), never test.")
    limit: int | None = Field(default=None, ge=1, description="Fit on the first N articles only (default: all).")
    batch_size: int = Field(default=16, ge=1, description="Prompts per forward pass.")
    threads: int | None = Field(default=None, ge=1, description="torch intra-op threads (null = this machine's "
                                   "physical cores).")


class ExplainConfig(InferenceConfig):
    """``explain:`` section: which words moved a model's answers, and whether they were outlet cues
    (see newsbias.explain)."""

    input: str | None = Field(default=None, description="JSONL/CSV file, or a prep output directory (with `split`); "
                                                         "default: prep.out_dir of the same config.")
    split: str = Field(default="test", description="Split file to read when `input` is a prep directory.")
    out_dir: str = Field(default="runs/explain", description="Output directory (explanations.jsonl, explain.md, "
                                                             "explain.html, manifest.json).")
    limit: int = Field(default=20, ge=1, description="Explain N articles with text (one forward pass per word read: "
                                                     "up to about 100 per article at 128 tokens).")
    sample: Literal["first", "by_outlet"] = Field(
        default="first", description="first: the first `limit` articles; by_outlet: one article of each outlet in "
                                     "turn, so a few large outlets do not fill the sample.")
    span: int = Field(default=1, ge=1, le=64, description="Words left out at a time (larger = fewer passes, "
                                                          "coarser explanations).")
    batch_size: int = Field(default=16, ge=1, description="Prompts per forward pass.")
    top_k: int = Field(default=10, ge=1, description="Words listed per article and per label in the summary.")
    min_articles: int = Field(default=3, ge=1, description="A word enters the summary's per-label tables when "
                                                           "read in at least this many articles.")
    text_field: str | None = Field(default=None, description="Article field for JSONL/CSV input "
                                                              "(default: input, else text).")
    overwrite: bool = Field(default=False, description="Replace the explanations of an earlier run in out_dir.")

    @model_validator(mode="after")
    def _one_window(self) -> ExplainConfig:
        if self.windows != 1:
            raise ValueError(f"explain reads one window per article (what predict scores with windows=1), got "
                             f"windows={self.windows}; drop the setting")
        if "pool" in self.model_fields_set:
            raise ValueError("explain reads one window per article, so there is nothing to pool; drop explain.pool")
        return self


MIN_BOOT = 20  # fewer bootstrap resamples than this give no usable interval


class MetricsConfig(StrictModel):
    """How metrics are computed (shared by ``evaluate:`` and ``compare.metrics``)."""

    n_boot: int = Field(default=1000, ge=0, description="Bootstrap resamples for the macro-F1 interval (0 = none).")
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0, description="Coverage of the bootstrap interval.")
    seed: int = Field(default=0, description="Bootstrap seed; the same seed gives the same interval.")
    ece_bins: int = Field(default=15, ge=1, description="Equal-width confidence bins for the calibration error.")
    by_outlet: bool = Field(default=False, description="Add a per-outlet breakdown (n, label, accuracy, invalid answers) and the "
                                                       "macro-F1 interval that resamples whole outlets.")
    missing_gold: Literal["error", "skip"] = Field(
        default="error", description="Rows without a gold label: an error, or skipped and counted.")

    @field_validator("n_boot")
    @classmethod
    def _enough_resamples(cls, v: int) -> int:
        # a percentile interval of a handful of resamples can miss the point estimate it is drawn around
        if 0 < v < MIN_BOOT:
            raise ValueError(f"must be 0 (no interval) or at least {MIN_BOOT}")
        return v


class EvaluateConfig(MetricsConfig):
    """``evaluate:`` section: one predictions JSONL -> metrics JSON (see newsbias.metrics)."""

    preds: str | None = Field(default=None, description="Predictions JSONL (predict / baseline output).")
    out: str | None = Field(default=None, description="Metrics JSON path (default: <preds>.metrics.json).")


def _cores() -> int:
    """The logical CPUs this process may use, the default number of worker processes."""
    from .io import usable_cpus

    return usable_cpus()


class BaselineTfidfConfig(StrictModel):
    analyzer: Literal["word", "char_wb"] = Field(
        default="word", description="Terms are word n-grams, or character n-grams inside word boundaries (char_wb).")
    ngram_min: int = Field(default=1, ge=1, description="Shortest n-gram (words or characters, by analyzer).")
    ngram_max: int = Field(default=2, ge=1, description="Longest n-gram (words or characters, by analyzer).")
    min_df: int = Field(default=2, ge=1, description="Ignore terms in fewer documents than this.")
    max_df: float = Field(default=1.0, gt=0.0, le=1.0)
    max_features: int | None = Field(default=200_000, ge=1)
    sublinear_tf: bool = True
    lowercase: bool = True
    stop_words: Literal["none", "english"] = Field(
        default="none", description="english: drop scikit-learn's English stop-word list before forming n-grams.")

    @model_validator(mode="after")
    def _ngram_range(self) -> BaselineTfidfConfig:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min={self.ngram_min} is above ngram_max={self.ngram_max}; lower ngram_min or "
                             f"raise ngram_max")
        if self.stop_words != "none" and self.analyzer != "word":
            raise ValueError(f"stop_words={self.stop_words} applies to word n-grams only; set analyzer=word or "
                             f"stop_words=none")
        return self

    def terms(self) -> dict[str, Any]:
        """What decides the terms, for ``CountVectorizer`` and ``TfidfVectorizer`` alike."""
        return {"analyzer": self.analyzer, "ngram_range": (self.ngram_min, self.ngram_max),
                "lowercase": self.lowercase, "stop_words": None if self.stop_words == "none" else self.stop_words}


class BaselineLRConfig(StrictModel):
    C: float = Field(default=1.0, gt=0.0, description="Inverse regularisation strength (when C_grid is empty).")
    C_grid: list[float] = Field(
        default_factory=list, description="Candidate C values chosen by val macro-F1 (needs val.jsonl); "
                                          "empty = use C.")
    class_weight: Literal["none", "balanced"] = "balanced"
    max_iter: int = Field(default=2000, ge=1)
    solver: Literal["newton-cg", "lbfgs"] = Field(
        default="newton-cg", description="scikit-learn's LogisticRegression solver. newton-cg reaches the optimum "
        "(tol 1e-6) in about 6 Newton steps, faster than lbfgs at scikit-learn's loose 1e-4 on the demo's 200k "
        "terms; a fit stopped short of the optimum moves with float rounding (another CPU, another row "
        "order), enough to pick another C on val (docs/benchmarks.md).")
    tol: float = Field(default=1e-6, gt=0.0, description="The solver stops when its largest gradient entry falls "
                       "below this (scikit-learn's default is 1e-4: see solver).")


class BaselineConfig(StrictModel):
    """``baseline:`` section: majority-class and TF-IDF + logistic regression (see newsbias.baseline)."""

    data: str = Field(default="runs/data", description="Prep output directory (train.jsonl, val.jsonl, test.jsonl); "
                                                       "default: prep.out_dir of the same config.")
    split: str = Field(default="test", description="Split to predict: train/val/test, or a JSONL path.")
    out_dir: str = Field(default="runs/preds", description="Where majority.jsonl, tfidf-lr.jsonl (+ manifests, "
                                                         "the fitted pipeline) go.")
    models: list[Literal["majority", "tfidf-lr"]] = Field(default_factory=lambda: ["majority", "tfidf-lr"])
    tfidf: BaselineTfidfConfig = Field(default_factory=BaselineTfidfConfig)
    lr: BaselineLRConfig = Field(default_factory=BaselineLRConfig)
    prepend_title: bool = Field(default=False, description="Prefix the title (when present) to the text.")
    sampling: Literal["natural", "outlet_balanced"] = Field(
        default="natural", description="outlet_balanced: weight each training article by 1/n^outlet_power of its "
                                       "outlet's n articles, so a few large outlets do not dominate the fit.")
    outlet_power: float = Field(default=1.0, ge=0.0, le=1.0, description="With sampling=outlet_balanced: 1 gives "
                                "every outlet the same total weight, 0.5 dampens less, 0 is natural.")
    limit: int | None = Field(default=None, ge=1, description="Predict only the first N articles of the split "
                                 "(as predict.limit), so every run covers the same articles.")
    calibrate: Literal["temperature", "none"] = Field(
        default="temperature", description="tfidf-lr: fit one temperature on val.jsonl (lowest val log-loss; labels "
                                           "unchanged) and apply it to the probabilities; none: as fitted. Needs val.")
    seed: int = Field(default=42, description="Seed of the logistic regression.")
    jobs: int = Field(default_factory=_cores, ge=1,
                      description="tfidf-lr: processes that count the training texts' n-grams (the same fit; "
                                  "default: the machine's cores).")


class CvConfig(StrictModel):
    """``cv:`` section: outlet-grouped cross-validation of the baselines and the model recipe (see newsbias.cv)."""

    data: str = Field(default="runs/data", description="Prep output directory; train, val and test are pooled "
                                                       "(default: prep.out_dir of the same config).")
    folds: int = Field(default=5, ge=3, description="Number of outlet-grouped folds (each round tests on one, "
                       "validates on the next and trains on the rest, so at least 3).")
    seed: int = Field(default=0, description="Seed of the fold assignment (same seed, same folds).")
    recipes: list[Literal["majority", "tfidf-lr", "model"]] = Field(
        default_factory=lambda: ["majority", "tfidf-lr"], min_length=1, description="Recipes to cross-validate: "
        "at least one of the baselines "
        "(settings from the baseline: section) and model (the train: section trained on each round, its test fold "
        "scored with the predict: section's settings).")
    ensembles: list[str] = Field(default_factory=list, description="Runs added as NAME=RECIPE+RECIPE[+...]: the "
                                 "equal-weight mean of the recipes' probabilities on each fold (as compare's).")
    test_limit: int | None = Field(default=None, ge=1, description="Score a seeded sample of this many articles "
                                   "of each test fold (the same articles for every recipe); default: all.")
    work_dir: str | None = Field(default=None, description="Where the model recipe keeps each round's data, model "
                                 "and predictions, so an interrupted cv resumes (default: out_dir + '-rounds').")
    random_reference: bool = Field(default=True, description="Also run ungrouped stratified folds (outlets "
                                   "shared): the memorisation reference.")
    save_predictions: bool = Field(default=True, description="Write each fold's predictions under out_dir/preds.")
    jobs: int = Field(default_factory=_cores, ge=1,
                      description="Folds run at a time (processes); default: the machine's cores.")
    out_dir: str = Field(default="runs/cv", description="Where cv.json and cv.md go.")


class CompareConfig(StrictModel):
    """``compare:`` section: several prediction files -> eval_compare.csv + report (see newsbias.report)."""

    preds: list[str] = Field(default_factory=list, description="Prediction files, as PATH or NAME=PATH "
                                                               "(name the LLM runs base and tuned).")
    data: str | None = Field(default=None, description="Split JSONL with the article texts, or a prep directory "
                                                          "(then `split` picks the file); default: prep.out_dir of the "
                                                          "same config. Gives the previews and the split mode.")
    split: str = Field(default="test", description="Split file in `data` when it is a directory.")
    out_dir: str = Field(default="report", description="Output directory.")
    on_mismatch: Literal["error", "intersect"] = Field(
        default="error", description="Prediction files with different ids: an error, or use the common ids.")
    ensembles: list[str] = Field(default_factory=list, description="Runs added as NAME=RUN+RUN[+RUN...]: the "
                                 "equal-weight mean of the members' probabilities (no weights tuned).")
    base: str = Field(default="base", description="Name of the base model's run (for fixes / breaks).")
    tuned: str = Field(default="tuned", description="Name of the tuned model's run (for fixes / breaks).")
    baseline: str = Field(default="tfidf-lr", description="Name of the baseline run the verdict also tests "
                                                          "the tuned run against.")
    n_examples: int = Field(default=10, ge=0, description="Fixed / broken cases listed in the report.")
    preview_words: int = Field(default=50, ge=1)
    appendix: str | None = Field(default=None, description="A Markdown file appended to the report "
                                    "(the demo's per-stage timing table).")
    html: bool = True
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)


class ServeConfig(InferenceConfig):
    """``serve:`` section: the HTTP API and classification page (see newsbias.serve)."""

    host: str = Field(default="127.0.0.1", description="Bind address (0.0.0.0 inside a container).")
    port: int = Field(default=8000, ge=0, le=65535, description="Port.")
    max_batch: int = Field(default=16, ge=1, description="Most texts scored in one forward pass (micro-batch).")
    max_wait_ms: float = Field(default=5.0, ge=0.0, description="How long the first request of a batch waits "
                                                                "for others to join it.")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Larger request bodies get 413.")
    max_article_chars: int = Field(default=100_000, ge=1, description="Longer articles (title + text) get 413.")
    max_texts: int = Field(default=64, ge=1, description="Most articles in one request (more get 413).")
    max_connections: int = Field(default=100, ge=1, description="Open connections at once; more get 503 at once "
                                 "(a client that sends its body slowly holds one connection, not the server).")
    max_explain_waiting: int = Field(default=4, ge=1, description="Most /v1/explain requests queued behind the one "
                                     "running (one forward pass per word each); more get 503.")
    shutdown_timeout_s: float = Field(default=60.0, ge=0.0, description="On SIGTERM / Ctrl-C, how long requests "
                                      "already received may take to finish (new connections are refused meanwhile).")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"


class ExportConfig(ModelSourceConfig):
    """``export:`` section: adapter -> (merged) model dir with a model card (see newsbias.export)."""

    adapter: str = Field(description="Training output directory (newsbias.json + peft files).")
    model: str | None = Field(default=None, validation_alias=AliasChoices("model", "base_model"),
                              description="Base model path or .gguf file to merge into (default: the adapter's); "
                                          "base_model is its former name.")
    device: str = Field(default="cpu", description="Where the weights are merged: cpu, cuda ...")
    out: str = Field(description="Export directory (created; must be empty or absent unless overwrite).")
    merge: bool = Field(default=False, description="Merge the LoRA weights into the base (one safetensors model).")
    format: Literal["transformers", "onnx"] = Field(
        default="transformers", description="transformers: the adapter (merged: safetensors); onnx: the merged "
                                            "model's scoring graph for ONNX Runtime (CPU), loaded like any model.")
    quantize: Literal["none", "int8", "int8-block"] = Field(
        default="none", description="int8: int8 weights per output channel, activations per tensor (fastest); "
                                    "int8-block: int8 weights and activations in blocks of 128 inputs (closer to "
                                    "fp32, slower). ONNX graphs only (format onnx).")
    keep_fp32: list[str] = Field(default_factory=lambda: list(INT8_KEEP_FP32), description="Regexes of module names "
                                 "left in fp32 by int8 and int8-block (default: the MLP output projections; [] = "
                                 "every layer).")
    check_data: str | None = Field(default=None, description="Articles to check the ONNX graph on against the torch "
                                   "model (a prep output dir: its val split; or a file); the share of identical "
                                   "labels is recorded in newsbias.json (default: two example prompts).")
    check_n: int = Field(default=200, ge=1, description="How many check_data articles to score twice.")
    smooth: float | None = Field(default=None, gt=0, le=1, description="int8 of a decoder LM: migrate activation "
                                 "outliers into the weights first (SmoothQuant alpha; 0.85 measured best), "
                                 "calibrated on calibration_data. Same speed, more labels kept.")
    calibration_data: str | None = Field(default=None, description="Articles whose activation ranges set smooth's "
                                         "scales (a prep output dir: its train split; or a file).")
    calibration_n: int = Field(default=128, ge=1, description="How many calibration_data articles to read.")
    base_model_id: str | None = Field(default=None, description="Hub id of the base for the model card "
                                                                  "(default: the recorded base, if it is a hub id).")
    license: str | None = Field(default=None, description="License of the base (default: known for common bases).")
    datasets: list[str] = Field(default_factory=list, description="Dataset ids for the model card.")
    metrics: str | None = Field(default=None, description="Test evaluation for the card: a `newsbias evaluate` "
                                "metrics JSON or a `newsbias compare` output dir (RUN=PATH names the run).")
    card_in_adapter: bool = Field(default=False, description="Also write the model card into the adapter dir.")
    overwrite: bool = Field(default=False, description="Replace an earlier export in `out`.")
    push_to_hub: str | None = Field(default=None, description="Upload the export dir to this hub repo (owner/name).")
    private: bool = True


    @model_validator(mode="after")
    def _onnx_options(self) -> "ExportConfig":
        if self.quantize != "none" and self.format != "onnx":
            raise ValueError(f"quantize={self.quantize} needs format=onnx (--format onnx)")
        if self.format == "onnx" and self.dtype not in ("auto", "float32"):
            raise ValueError(f"format=onnx traces the fp32 model; drop dtype={self.dtype}")
        if self.check_data and self.format != "onnx":
            raise ValueError("check_data compares an ONNX graph with the torch model: it needs format=onnx")
        if self.smooth is not None and self.quantize == "none":
            raise ValueError("smooth prepares the weights for int8: add --quantize int8 or drop --smooth")
        if self.smooth is not None and not self.calibration_data:
            raise ValueError("smooth needs calibration articles: set --calibration-data (a prep output dir or a file)")
        return self


# Keys a stage reads from the prep stage's output (prep.out_dir) when the config has a prep: section
# and leaves them unset.
FROM_PREP = ("train.data.path", "predict.input", "baseline.data", "cv.data", "compare.data", "explain.input",
             "calibrate.data")


class Config(StrictModel):
    """A whole run. prep, train, predict and export fail clearly when their section is missing; the
    other stages run on defaults. Stages read prep's output unless told otherwise (:data:`FROM_PREP`)."""

    prep: PrepConfig | None = None
    train: TrainConfig | None = None
    predict: PredictConfig | None = None
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    cv: CvConfig = Field(default_factory=CvConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    export: ExportConfig | None = None
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    calibrate: CalibrateConfig = Field(default_factory=CalibrateConfig)

    @model_validator(mode="after")
    def _read_prep_output(self) -> Config:
        if self.prep is None:
            return self
        for key in FROM_PREP:
            *path, name = key.split(".")
            node: Any = self
            for part in path:
                node = getattr(node, part) if node is not None else None
            if node is not None and (name not in node.model_fields_set or getattr(node, name) is None):
                setattr(node, name, self.prep.out_dir)
        return self

    def require(self, section: str) -> Any:
        value = getattr(self, section)
        if value is None:
            raise ConfigError(f"nothing to run: the config has no '{section}:' section; give the command's flags "
                              f"(`newsbias {section} --help`) or a config file with -c")
        return value


_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _set_key(out: dict[str, Any], key: str, value: Any, item: str) -> None:
    """Set the dotted ``key`` in the nested dict ``out`` (``item`` names the override in errors)."""
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r} conflicts with an earlier override of {part!r}")
        node = nxt
    node[parts[-1]] = value


_UNSET = object()


def _get_key(tree: Mapping[str, Any], key: str) -> Any:
    """The value at the dotted ``key`` of a nested mapping, or ``_UNSET``."""
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _UNSET
        node = node[part]
    return node


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ``["prep.split.mode=random", "train.lr=2e-4"]`` into a nested dict.

    Values are parsed as YAML scalars/lists (``3`` -> int, ``null`` -> None, ``[a,b]`` -> list).
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. prep.split.mode=random)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key part")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (list, dict)) and not raw.strip().startswith(("[", "{")):
            value = raw  # "-" (stdin) or "a: b" are meant as text, not YAML block syntax
        if isinstance(value, str) and _FLOAT.match(value.strip()):
            value = float(value)  # YAML 1.1 reads 2e-4 as a string; nobody means that
        _set_key(out, key, value, item)
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Names users bring from transformers' TrainingArguments / peft's LoraConfig, and what they are here.
KNOWN_SYNONYMS = {
    "learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size", "train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum", "warmup_steps": "warmup_ratio", "lr_scheduler_type": "scheduler",
    "lora_alpha": "alpha", "lora_dropout": "dropout", "lora_r": "r", "rank": "r", "target_modules_list": "target_modules",
    "model_name_or_path": "name_or_path", "model_name": "name_or_path", "output_dir": "out_dir",
    "max_seq_length": "max_length", "max_len": "max_length", "eval_steps": "every_steps",
    "early_stopping_patience": "patience", "per_device_eval_batch_size": "batch_size",
    "lrate": "lr", "learningrate": "lr", "lr_rate": "lr", "rate": "lr",
}


def _model_at(model: type[BaseModel] | None, path: tuple) -> type[BaseModel] | None:
    """The (nested) config model at ``path`` below ``model``, or None when it cannot be followed."""
    import typing

    for part in path:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        args = [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else (args[0] if args else None)
    return model


def _fields_at(model: type[BaseModel] | None, path: tuple) -> list[str]:
    """Field names of the (nested) config model at ``path``, or [] when it cannot be followed."""
    found = _model_at(model, path)
    return list(found.model_fields) if found is not None else []


def field_info(key: str) -> FieldInfo:
    """The field of a dotted :class:`Config` key (``predict.batch_size``): type, default, description."""
    *path, name = key.split(".")
    model = _model_at(Config, tuple(path))
    if model is None or name not in model.model_fields:
        raise KeyError(f"{key} is not a config key")
    return model.model_fields[name]


def suggest_key(model: type[BaseModel] | None, loc: tuple) -> str:
    """`` — did you mean `train.optim.lr`?`` for an unknown key, or "" when nothing is close."""
    import difflib

    parent = tuple(loc[:-1])
    fields = _fields_at(model, parent)
    key = str(loc[-1])
    name = KNOWN_SYNONYMS.get(key.lower(), key)
    if name in fields:
        return f" — did you mean `{'.'.join(str(p) for p in (*parent, name))}`?"
    # the commonest slip: a right key at the wrong level (train.lr for train.optim.lr)
    deeper = _paths_named(_model_at(model, parent), name)
    if deeper:
        said = " or ".join(f"`{'.'.join(str(p) for p in (*parent, *path))}`" for path in deeper[:3])
        return f" — did you mean {said}?"
    guess = next(iter(difflib.get_close_matches(key, fields, n=1, cutoff=0.6)), None)
    return f" — did you mean `{'.'.join(str(p) for p in (*parent, guess))}`?" if guess else ""


def _paths_named(model: type[BaseModel] | None, name: str, depth: int = 3) -> list[tuple[str, ...]]:
    """Paths below ``model`` (shallowest first) that end in a field called ``name``."""
    if model is None or depth == 0:
        return []
    found = [(name,)] if name in model.model_fields else []
    for field in model.model_fields:
        found += [(field, *path) for path in _paths_named(_model_at(model, (field,)), name, depth - 1)]
    return sorted(found, key=len)


_TYPE_TAG = re.compile(r"(?:str|int|float|bool|none|list\[.*\]|dict\[.*\]|literal\[.*\]|function-\w+\[.*\])",
                       re.IGNORECASE)


def format_validation_error(err: ValidationError, where: str = "config",
                            model: type[BaseModel] | None = None,
                            typed: Callable[[tuple[Any, ...]], bool] | None = None) -> str:
    """One line naming every problem; ``typed(loc)`` says which keys came from the command line (so marked)."""
    problems, seen = [], set()
    for e in err.errors():
        # a union's branches add their type to the location (target_modules.list[str].1): keep the keys only,
        # and one problem per key (the first branch's)
        e = {**e, "loc": tuple(p for p in e["loc"] if not _TYPE_TAG.fullmatch(str(p)))}
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if loc in seen:
            continue
        seen.add(loc)
        if e["type"] == "extra_forbidden":
            problem = f"{loc}: unknown key{suggest_key(model, tuple(e['loc']))}"
        elif e["type"] == "missing":
            problem = f"{loc}: required but missing"
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) or "got " in e["msg"] else f" (got {got!r})"
            problem = f"{loc}: {e['msg'].removeprefix('Value error, ')}{got_s}"
            if e["type"] == "list_type" and isinstance(got, str):
                problem += f"; write a list: {loc}=[{got}]"
        problems.append(problem + (" (on the command line)" if typed and typed(tuple(e["loc"])) else ""))
    return f"invalid {where}: " + "; ".join(problems)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (YAML keeps the last silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if twice is not None:
            raise yaml.constructor.ConstructorError(None, None, f"the key {twice!r} is given twice in one section",
                                                    node.start_mark)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config {p} is a directory; pass a YAML file (configs/*.yaml)")
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader underneath
    except UnicodeDecodeError:
        raise ConfigError(f"config file {p} is not a text file (not UTF-8); pass a YAML config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {p} is not valid YAML{at}: {str(what)[:200]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of sections, found {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                values: Mapping[str, Any] | None = None) -> Config:
    """Load a YAML config (optional), apply ``values`` (dotted key -> value, e.g. from command-line flags),
    then the ``key=value`` overrides, and validate into a :class:`Config`."""
    data = read_yaml(path) if path else {}
    flags: dict[str, Any] = {}
    for key, value in (values or {}).items():
        _set_key(flags, key, value, key)
    typed = parse_overrides(list(overrides))
    for key, value in (values or {}).items():
        again = _get_key(typed, key)
        if again is not _UNSET and again != value:  # a script's flag as a default, the user's override on top
            log.warning("%s is given twice, as a flag (%r) and as %s=%r: the override wins", key, value, key, again)
    typed_keys = deep_merge(flags, typed)
    data = deep_merge(data, typed_keys)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        error = err
    text = _text_where_typed(error, overrides)
    if text:  # `predict.name=yes` or `=2024` read as YAML is a bool or a number; a text setting means the text
        for key, raw in text.items():
            _set_key(data, key, raw, key)
        try:
            return Config.model_validate(data)
        except ValidationError as err:
            error = err
    raise ConfigError(format_validation_error(error, f"config {path}" if path else "config", Config,
                                              lambda loc: path is not None and _holds_key(typed_keys, loc))) from None


def _text_where_typed(err: ValidationError, overrides: Sequence[str]) -> dict[str, str]:
    """The overrides' raw text for each key where a text setting was given a YAML bool or number."""
    raw = {item.split("=", 1)[0].strip(): item.split("=", 1)[1] for item in overrides if "=" in item}
    keys = {".".join(str(p) for p in e["loc"]) for e in err.errors() if e["type"] == "string_type"}
    return {k: raw[k] for k in keys if k in raw}


def _holds_key(tree: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    """Whether the nested mapping ``tree`` sets the key at ``loc`` (a validation error's location)."""
    node: Any = tree
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return bool(loc)


def dump_config(cfg: BaseModel) -> dict[str, Any]:
    """JSON-ready dict of a config, for manifests."""
    return cfg.model_dump(mode="json")


__all__ = [
    "DEFAULT_INSTRUCTION",
    "FROM_PREP",
    "TRAIN_NOT_IN_RUN",
    "LABELS",
    "Config",
    "Dtype",
    "ExportConfig",
    "Head",
    "InferenceConfig",
    "ModelSourceConfig",
    "Pooling",
    "PredictConfig",
    "PrepConfig",
    "PromptConfig",
    "ServeConfig",
    "dump_config",
    "field_info",
    "load_config",
    "parse_overrides",
]
