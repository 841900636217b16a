#!/usr/bin/env bash
# The three-seed paired experiment (benchmarks/synthetic_experiment.py, the clear benchmark) on a
# GPU machine (the device tool), from the repository root: WORKERS single-thread workers share
# the 21 runs (each claims the next run no live worker holds; runs already kept in
# benchmarks/results/synthetic_experiment_clear/ are skipped), in fp32 (train.amp=false, which
# the experiment's fingerprint treats as the CPU recipe: a GPU run stands in for the CPU one and
# says its device). Finished results are copied to $OUT as they land (one tarball), so a
# time-boxed call still brings back every run that finished; at home, unpack them into
# benchmarks/results/synthetic_experiment_clear/ and run `synthetic_experiment.py --table`.
#
#   run: bash scripts/gpu_experiment.sh          carry: [.gpu-wheels]
#
# Env: WORKERS (default 10: ten trainings at once went at 0.2-0.3 s per iteration each on the
# H200 machine, about 1,400 iterations in 390 s, Python-bound; a run here is 1500 iterations and
# an evaluation, and a run cut off by the time box is lost, since runs/ does not come back),
# TIMEBOX seconds for the trainings (default 540: with the set-up it fits one 600 s call),
# SEEDS, METHODS (default: all), EXTRA (more config overrides, e.g. tiny settings for a dry
# run on CPU: such runs are kept under their own fingerprint and never overwrite a real result).
set -u
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
LOGS=$(mktemp -d)
WORKERS=${WORKERS:-10}
TIMEBOX=${TIMEBOX:-540}
SEEDS=${SEEDS:-"0 1 2"}
METHODS=${METHODS:-}
EXTRA=${EXTRA:-}
PY=${PY:-python}
KEPT=benchmarks/results/synthetic_experiment_clear
. scripts/gpu_env.sh
# The data first, once (workers would race to generate it).
PYTHONPATH="benchmarks${PYTHONPATH:+:$PYTHONPATH}" $PY -c "
import synthetic_experiment as e
e.BENCH = e.BENCHMARKS['clear']; e.ensure_data()
" || exit 1
methods=()
[ -n "$METHODS" ] && methods=(--methods $METHODS)
start=$(date +%s)
for i in $(seq 1 "$WORKERS"); do
  $PY benchmarks/synthetic_experiment.py --seeds $SEEDS "${methods[@]}" \
      --set train.amp=false train.threads=1 $EXTRA > "$LOGS/worker$i.log" 2>&1 &
  sleep 1
done
collect() {
  $PY benchmarks/synthetic_experiment.py --status --set train.amp=false $EXTRA > "$LOGS/status.md" 2>&1
  mkdir -p "$LOGS/kept"
  cp $KEPT/*.json "$LOGS/kept/" 2>/dev/null
  tar czf "$OUT/.results.tgz" -C "$LOGS" . && mv "$OUT/.results.tgz" "$OUT/results.tgz"
}
while [ -n "$(jobs -rp)" ] && [ $(( $(date +%s) - start )) -lt "$TIMEBOX" ]; do
  sleep 15; collect
done
collect
git checkout -q docs/results.md 2>/dev/null  # the table goes in at home, not here
cat "$LOGS/status.md"; tail -n 2 "$LOGS"/worker*.log
kill $(jobs -rp) 2>/dev/null; true
