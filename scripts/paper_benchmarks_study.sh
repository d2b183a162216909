#!/usr/bin/env bash
# The paper-benchmark study (docs/results.md): MT10 at 150k and the HalfCheetah group at 100k env
# steps; PiCor, its Cor X and MTSAC (gin_configs/study/).
#
#   bash scripts/paper_benchmarks_study.sh run       # start, or resume after any stop
#   bash scripts/paper_benchmarks_study.sh collect   # copy finished runs' small files to results/
#                                                    (needs this checkout's .venv: scripts/setup.sh)
#   bash scripts/paper_benchmarks_study.sh report    # print docs/results.md's tables, draw its figures
#                                                    into docs/figures/<benchmark>/, from results/ alone
#
# The runs use a clone of this repository at the commit in results/paper_benchmarks/COMMIT, in
# $STUDY_DIR (default: ../picor_study, beside the checkout), so later changes on main never reach
# a running or resumed run; run folders are under $STUDY_DIR/runs. `run` is re-entrant: the sweep
# skips finished runs (those already in results/ too) and resumes started ones from their last
# checkpoint (every 10k env steps).
# Two runs at a time, one torch thread each, at low priority.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
STUDY_DIR=${STUDY_DIR:-$(cd .. && pwd)/picor_study}
RESULTS=$REPO/results/paper_benchmarks
COMMIT=$(cat "$RESULTS/COMMIT")
CODE=$STUDY_DIR/code
RUNS=$STUDY_DIR/runs

pinned_code() {
  if [ ! -d "$CODE/.git" ]; then
    git clone --quiet --no-checkout "$REPO" "$CODE"
    git -C "$CODE" checkout --quiet --detach "$COMMIT"
  fi
  local at
  at=$(git -C "$CODE" rev-parse HEAD)
  if [ "$at" != "$COMMIT" ]; then
    echo "error: $CODE is at $at, the study at $COMMIT; move it aside to start the study anew" >&2
    exit 2
  fi
  bash "$CODE/scripts/setup.sh"
}

sweep() {  # sweep SEEDS... -- GIN_FILES...
  local seeds=()
  while [ "$1" != "--" ]; do seeds+=("$1"); shift; done
  shift
  (cd "$CODE" && nice -n 10 .venv/bin/python launch/sweep.py --root "$RUNS" --parallel 2 \
     --seeds "${seeds[@]}" --gin_files "$@")
}

case "${1:-}" in
  run)
    pinned_code
    mkdir -p "$RUNS"
    # Runs finished on an earlier machine are in results/: their summary.json makes the sweep skip them.
    for done in "$RESULTS"/*/seed*/summary.json; do
      [ -e "$done" ] || continue
      run=$RUNS/${done#"$RESULTS"/}
      run=${run%/summary.json}
      [ -d "$run" ] || { mkdir -p "$run" && cp "$(dirname "$done")"/* "$run"/; }
    done
    all=(gin_configs/study/mt10_mtsac.gin gin_configs/study/mt10_picor.gin gin_configs/study/mt10_adaX_corX.gin
         gin_configs/study/halfcheetah_mtsac.gin gin_configs/study/halfcheetah_picor.gin
         gin_configs/study/halfcheetah_adaX_corX.gin)
    # Seeds 0-2 of every arm in one sweep, so that both cores stay busy from run to run.
    sweep 0 1 2 -- "${all[@]}"
    sweep 3 4 -- gin_configs/study/mt10_picor.gin gin_configs/study/mt10_adaX_corX.gin gin_configs/study/mt10_mtsac.gin
    ;;
  collect)
    # Each finished run's config.gin, eval.jsonl, summary.json and its per-task weights and
    # temperatures, entropies and the critic's Q and loss (scalars.json): kilobytes, no checkpoints. Read with this checkout's code.
    "$REPO/.venv/bin/python" "$REPO/launch/collect.py" "$RUNS" "$RESULTS"
    ;;
  report)
    py=$REPO/.venv/bin/python
    for bench in mt10 halfcheetah; do
      arms=("$RESULTS/${bench}"_*)
      [ -e "${arms[0]}" ] || continue
      echo "## $bench"
      "$py" launch/report.py "${arms[@]}"
      "$py" launch/report.py "${arms[@]}" --per_task
      "$py" launch/report.py "${arms[@]}" --improvement
      "$py" launch/report.py "${arms[@]}" --over_tasks
      "$py" launch/report.py "${arms[@]}" --metric average_forgetting
      if [ "$bench" = mt10 ]; then
        "$py" launch/report.py "${arms[@]}" --reach 0.1
        "$py" launch/report.py "${arms[@]}" --reach 0.2
      fi
      "$py" launch/plot.py "$RESULTS/${bench}"_*/seed* --out "docs/figures/$bench"
    done
    ;;
  *)
    echo "usage: bash scripts/paper_benchmarks_study.sh run|collect|report" >&2
    exit 2
    ;;
esac
