#!/usr/bin/env bash
# The once-per-session check on a lent NVIDIA GPU machine, in under 8 minutes, with a report
# small enough to paste into a note:
#   1. setup        bash scripts/setup.sh (torch==2.13.0: the CUDA wheel there); nvidia-smi -L,
#                   torch, torch.version.cuda, torch.cuda.get_device_name()
#   2. cuda tests   pytest -q tests -k "cuda or gpu" (exit 5, none selected, is a SKIP)
#   3. run <config> one tiny run of each backbone (SAC, TD3, PPO) and of PCGrad through
#                   launch/run.py on the GPU (1_100 env steps; SAC and TD3: 1_000 of warm-up,
#                   ~100 updates), exit 0 and summary.json, its throughput keys
#   4. compile table benchmarks/gpu_step.py: updates/s of training_step on cuda, eager vs
#                   compile_mode 'default' vs 'reduce-overhead'
#   5. ddp          with 2 or more GPUs: tiny_picor on 2 DDP processes
# Without a GPU it says what it skipped and exits 0 in seconds, installing nothing.
# Exit 1 if a step failed (or could not start within the time budget), else 0.
#
#   LEARNER=MultiTaskLearner bash benchmarks/gpu_check.sh
# Environment: LEARNER (the LightningModule's gin name, bound only in step 4),
# GPU_CHECK_BUDGET_S (default 470: no step starts past it, each step's timeout is cut to fit),
# GPU_CHECK_KEEP=1 (keep the logs and run folders; their path is printed).
set -uo pipefail

LEARNER=${LEARNER:-MultiTaskLearner}

cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)
PY="$REPO/.venv/bin/python"
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
START=$SECONDS
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 1
if [ "${GPU_CHECK_KEEP:-0}" = 1 ]; then echo "logs and run folders kept in $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 PIP_PROGRESS_BAR=off PIP_NO_INPUT=1

CONFIGS=(tiny_picor tiny_mtsac tiny_picor_td3 tiny_mtppo tiny_mtsac_pcgrad)
NAMES=() VERDICTS=()
record() { NAMES+=("$1"); VERDICTS+=("$2"); echo "   -> $2"; }
header() { echo; echo "== $1  [t=$((SECONDS - START))s]"; }
remaining() { echo $((BUDGET_S - (SECONDS - START))); }
indent() { sed 's/^/    | /'; }

# run_timed WANT LOG ERR CMD...: CMD under `timeout` for WANT s (less if the budget has less
# left), stdout to LOG, stderr to ERR ("-": to LOG too). Sets RC (999: not started, budget
# spent), TOOK and LIMIT.
run_timed() {
    local want=$1 log=$2 err=$3 left t0
    shift 3
    left=$(($(remaining) - 5))
    LIMIT=$((want < left ? want : left))
    TOOK=0
    if ((LIMIT < 15)); then RC=999; : >"$log"; return; fi
    t0=$SECONDS
    if [ "$err" = - ]; then
        timeout -k 10 "$LIMIT" "$@" >"$log" 2>&1 </dev/null
    else
        timeout -k 10 "$LIMIT" "$@" >"$log" 2>"$err" </dev/null
    fi
    RC=$?
    TOOK=$((SECONDS - t0))
}

# show_tail FILE...: the last lines of each non-empty FILE (a failed step's logs).
show_tail() {
    local file
    for file in "$@"; do [ -s "$file" ] && tail -n 20 "$file" | indent; done
    return 0
}

# failed: the FAIL verdict for RC.
failed() {
    case $RC in
        999) echo "FAIL (not started: the ${BUDGET_S}s budget is spent)" ;;
        124 | 137) echo "FAIL (timed out after ${LIMIT}s)" ;;
        *) echo "FAIL (exit $RC after ${TOOK}s)" ;;
    esac
}

# summary_line SUMMARY_JSON: its throughput keys (and updates, env steps, wall time); exit 3 if
# it counts no update.
summary_line() {
    "$PY" - "$1" <<'EOF'
import json, sys
summary = json.load(open(sys.argv[1]))
wanted = lambda k, v: isinstance(v, (int, float)) and not isinstance(v, bool) and (
    "per_s" in k or k in ("updates", "total_env_steps", "wall_time_s"))
shown = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items() if wanted(k, v)]
print("  ".join(shown) if shown else "no throughput keys; keys: " + ", ".join(summary))
sys.exit(3 if summary.get("updates") == 0 else 0)
EOF
}

summary_block() {
    local i failures=0
    echo
    echo "== summary  (${LEARNER} as the learner's gin name; $((SECONDS - START))s in all)"
    for i in "${!NAMES[@]}"; do
        printf '  %-24s %s\n' "${NAMES[$i]}" "${VERDICTS[$i]}"
        [[ ${VERDICTS[$i]} == FAIL* ]] && failures=$((failures + 1))
    done
    if ((failures)); then echo "  $failures step(s) failed"; exit 1; fi
    exit 0
}

ALL_STEPS=(setup "cuda tests" "${CONFIGS[@]/#/run }" "compile table" ddp)
skip_rest() { # skip_rest REASON FROM_INDEX: records every step from ALL_STEPS[FROM_INDEX] on as skipped
    local i
    for ((i = $2; i < ${#ALL_STEPS[@]}; i++)); do NAMES+=("${ALL_STEPS[$i]}"); VERDICTS+=("SKIP ($1)"); done
}

# ---- 0. Is there a GPU? Without one, nothing is installed or run.
header "0. GPU present?"
gpus=0
if command -v nvidia-smi >/dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
    echo "nvidia-smi -L lists $gpus GPU(s)"
else
    echo "no nvidia-smi on PATH"
fi
if ((gpus == 0)); then
    cuda=False
    if [ -x "$PY" ]; then
        cuda=$(timeout 60 "$PY" -c 'import torch; print(torch.cuda.is_available())' 2>/dev/null | tail -n 1)
        echo "existing .venv: torch.cuda.is_available() = ${cuda:-unknown}"
    else
        echo "no .venv/bin/python (not created here: that would install torch)"
    fi
    if [ "$cuda" != True ]; then
        echo "no NVIDIA GPU: skipping every step (nothing installed)"
        skip_rest "no NVIDIA GPU" 0
        summary_block
    fi
fi

# ---- 1. Set-up and versions.
header "1. setup: bash scripts/setup.sh"
run_timed 300 "$WORK/setup.log" - bash scripts/setup.sh
if ((RC == 0)); then
    setup_verdict="PASS (${TOOK}s)"
else
    show_tail "$WORK/setup.log"
    setup_verdict=$(failed)
fi
echo "nvidia-smi -L:"
nvidia-smi -L 2>&1 | indent
if [ ! -x "$PY" ]; then
    record setup "$setup_verdict; no .venv/bin/python"
    skip_rest "no .venv" 1
    summary_block
fi
timeout 90 "$PY" - >"$WORK/torch.txt" 2>&1 <<'EOF'
import torch
print(f"torch {torch.__version__}, torch.version.cuda = {torch.version.cuda}, "
      f"cuda available: {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    print(f"  cuda:{i} {torch.cuda.get_device_name(i)}")
print(f"DEVICE_COUNT={torch.cuda.device_count() if torch.cuda.is_available() else 0}")
EOF
echo "torch (.venv):"
grep -v '^DEVICE_COUNT=' "$WORK/torch.txt" | tail -n 12 | indent
NGPU=$(sed -n 's/^DEVICE_COUNT=//p' "$WORK/torch.txt")
NGPU=${NGPU:-0}
if ((NGPU == 0)); then
    [[ $setup_verdict == PASS* ]] && setup_verdict="FAIL (torch cannot use the GPU)"
    record setup "$setup_verdict"
    skip_rest "torch sees no CUDA device" 1
    summary_block
fi
record setup "$setup_verdict; torch sees $NGPU GPU(s)"

# ---- 2. The tests that need CUDA (no marker in tests/: selected by name).
header "2. cuda tests: pytest -q tests -k \"cuda or gpu\""
run_timed 150 "$WORK/pytest.log" - "$PY" -m pytest -q -p no:cacheprovider tests -k "cuda or gpu"
case $RC in
    0) record "cuda tests" "PASS ($(grep -E 'passed|failed|skipped|deselected' "$WORK/pytest.log" | tail -n 1 | tr -d '='))" ;;
    5) record "cuda tests" "SKIP (none selected by -k \"cuda or gpu\")" ;;
    *) show_tail "$WORK/pytest.log"; record "cuda tests" "$(failed)" ;;
esac

# ---- 3. One tiny run of each backbone through the real entry point.
header "3. one tiny run per backbone: launch/run.py on the GPU (1_100 env steps, ~100 updates)"
TINY=(
    --gin_bindings="Experiment.total_env_steps = 1_100"
    --gin_bindings="Experiment.eval_every_env_steps = 1_100"
    --gin_bindings="Trainer.accelerator = 'gpu'"
    --gin_bindings="Trainer.devices = 1"  # on a many-GPU machine 'auto' would start DDP
    --gin_bindings="MultiTaskData.replay_device = 'cuda'"
)
for config in "${CONFIGS[@]}"; do
    echo "-- $config"
    run_timed 120 "$WORK/run_$config.log" - "$PY" launch/run.py --gin_file="gin_configs/$config.gin" \
        "${TINY[@]}" --run_dir="$WORK/runs/$config"
    summary="$WORK/runs/$config/summary.json"
    if ((RC == 0)) && [ -f "$summary" ]; then
        if line=$(summary_line "$summary" 2>&1); then
            record "run $config" "PASS (${TOOK}s) $line"
        else
            record "run $config" "FAIL (summary.json: $line)"
        fi
    elif ((RC == 0)); then
        tail -n 20 "$WORK/run_$config.log" | indent
        record "run $config" "FAIL (exit 0 but no summary.json)"
    else
        show_tail "$WORK/run_$config.log"
        record "run $config" "$(failed)"
    fi
done

# ---- 4. Eager vs compiled updates/s on the GPU (throughput.py times on the CPU only, and
# compiles in mode 'default' only: benchmarks/gpu_step.py reuses its build and timer on cuda).
header "4. compile table: benchmarks/gpu_step.py --device cuda (${LEARNER}.compile_mode)"
reserve=$((NGPU >= 2 ? 130 : 0))  # left for step 5
want=$(($(remaining) - 5 - reserve))
want=$((want > 300 ? 300 : want))
inner=$((want - 75))  # no cell starts later: one cell (a compilation) fits in the rest
inner=$((inner < 10 ? 10 : inner))
run_timed "$want" "$WORK/gpu_step.out" "$WORK/gpu_step.err" "$PY" benchmarks/gpu_step.py --device cuda \
    --learner "$LEARNER" --updates 200 --warmup 20 --budget_s "$inner"
if ((RC == 0)); then
    indent <"$WORK/gpu_step.out"
    if grep -q 'not run' "$WORK/gpu_step.out"; then
        record "compile table" "PASS (${TOOK}s; some cells not run: time budget)"
    else
        record "compile table" "PASS (${TOOK}s)"
    fi
elif ((RC == 999)); then
    record "compile table" "$(failed)"
else
    [ -s "$WORK/gpu_step.out" ] && { echo "   what it printed:"; indent <"$WORK/gpu_step.out"; }
    echo "   its stderr's end:"
    show_tail "$WORK/gpu_step.err"
    record "compile table" "$(failed)"
fi

# ---- 5. Two DDP processes, one per GPU.
header "5. ddp: tiny_picor on 2 GPUs"
if ((NGPU < 2)); then
    record ddp "SKIP (torch.cuda.device_count() = $NGPU < 2)"
else
    # The warm-up is per process: 250 x 4 tasks x 2 = 2_000 global env steps before the first update.
    run_timed 120 "$WORK/ddp.log" - "$PY" launch/run.py --gin_file=gin_configs/tiny_picor.gin \
        --gin_bindings="Experiment.total_env_steps = 2_200" \
        --gin_bindings="Experiment.eval_every_env_steps = 2_200" \
        --gin_bindings="Trainer.accelerator = 'gpu'" \
        --gin_bindings="Trainer.devices = 2" \
        --gin_bindings="Trainer.strategy = 'ddp'" \
        --run_dir="$WORK/runs/ddp"
    if ((RC == 0)) && [ -f "$WORK/runs/ddp/summary.json" ]; then
        if line=$(summary_line "$WORK/runs/ddp/summary.json" 2>&1); then
            record ddp "PASS (${TOOK}s) $line"
        else
            record ddp "FAIL (summary.json: $line)"
        fi
    elif ((RC == 0)); then
        tail -n 20 "$WORK/ddp.log" | indent
        record ddp "FAIL (exit 0 but no summary.json)"
    else
        show_tail "$WORK/ddp.log"
        record ddp "$(failed)"
    fi
fi

summary_block
