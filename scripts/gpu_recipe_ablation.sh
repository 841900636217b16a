#!/usr/bin/env bash
# The recipe ablation's one-change variants side by side on a GPU machine (the device tool),
# from the repository root: several benchmarks/recipe_ablation.py workers share the variant list
# (each claims the next free one), results are kept as <variant>_gpu.json and copied to $OUT as
# they finish (one tarball: the device tool brings back at most 8 files), so a time-boxed call
# still brings back what finished.
#
#   run: bash scripts/gpu_recipe_ablation.sh          carry: [.gpu-wheels]
#
# Env: VARIANTS (space-separated), WORKERS (default: one per variant), TIMEBOX seconds for the
# trainings (default 500), EXTRA (more config overrides, e.g. tiny settings for a dry run on CPU).
# The GPU image has torch, torchvision, numpy, Pillow, OpenCV and matplotlib; the rest of what
# training imports comes from .gpu-wheels (pip download --only-binary=:all: --python-version 3.12).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
LOGS=$(mktemp -d)
VARIANTS=${VARIANTS:-"clear_adamw clear_lr2e3 clear_lr4e3 clear_adamw_head128 clear2k_adamw clear_wd005 clear_headgn clear_backbonegn clear_agnostic_fix clear_ts_fix"}
TIMEBOX=${TIMEBOX:-500}
EXTRA=${EXTRA:-}
n=$(echo $VARIANTS | wc -w); WORKERS=${WORKERS:-$n}
PY=${PY:-python}
. scripts/gpu_env.sh
# The data first, once (workers would race to generate it).
PYTHONPATH="benchmarks${PYTHONPATH:+:$PYTHONPATH}" $PY -c "
from recipe_ablation import VARIANTS, ensure_data
for d in sorted({VARIANTS[v][0] for v in '$VARIANTS'.split()}): ensure_data(d)
" || exit 1
start=$(date +%s)
for i in $(seq 1 "$WORKERS"); do
  $PY benchmarks/recipe_ablation.py --suffix _gpu --variants $VARIANTS \
      --set train.amp=false train.threads=1 $EXTRA > "$LOGS/worker$i.log" 2>&1 &
  sleep 1
done
collect() {
  $PY benchmarks/recipe_ablation.py --table > "$OUT/table.md" 2>&1
  git checkout -q docs/results.md 2>/dev/null  # the table goes in at home, not here
  for f in runs/recipe_ablation/*_gpu_*/metrics.jsonl; do
    [ -f "$f" ] && echo "$f: $(grep -c '"iter"' "$f") iter lines; last: $(tail -1 "$f" | cut -c1-160)"
  done > "$LOGS/progress.txt" 2>/dev/null
  cp benchmarks/results/recipe_ablation/*_gpu.json "$LOGS/" 2>/dev/null
  tar czf "$OUT/.results.tgz" -C "$LOGS" . && mv "$OUT/.results.tgz" "$OUT/results.tgz"
}
while [ -n "$(jobs -rp)" ] && [ $(( $(date +%s) - start )) -lt "$TIMEBOX" ]; do
  sleep 10; collect
done
collect
cat "$OUT/table.md"; cat "$LOGS/progress.txt"; tail -n 3 "$LOGS"/worker*.log
kill $(jobs -rp) 2>/dev/null; true
