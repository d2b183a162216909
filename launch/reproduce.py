"""Reproduces the paper's Table 1 (methods) or Table 2 (ablation) with one command: builds the
grid from the shipped gin files, runs or submits it, prints the table beside the paper's numbers.

    python launch/reproduce.py table2 --benchmark tiny --seeds 0 1 2 --scale 0.3        # minutes, here
    python launch/reproduce.py table1 --benchmark mt10 --seeds 0 1 2 3 4 \\
        --backend slurm --partition P --gpus_per_job 1 --time 72:00:00                   # the paper's budget

Cell C of the table runs gin_configs/[ablation/]<benchmark>_<C>.gin into <root>/<its stem>/seed<S>
(root: runs/reproduce/<table>_<benchmark>, plus _scale<S> when scaled). --scale multiplies every
budget of every gin file (Experiment.total_env_steps, eval_every_env_steps,
checkpoint_every_env_steps and MultiTaskData.warmup_env_steps_per_task) for a quick look, but
not a budget bound with --gin_bindings, and keeps at most 20 evaluations per run (a scaled
warm-up below one batch per task repeats transitions in the first batches). KTM-DRL's cell needs
its teachers trained first (docs/ktm_drl.md: a sweep, then the student), which this one-stage
grid does not schedule: it shows the paper's number and "not run". Re-launching the same command
skips finished runs and resumes the others (a root holding runs of other budgets is refused); the
table is then `launch/report.py <root> --table T --benchmark B`.
Exit status: 0 every run done; 1 some run failed (listed with its log); 2 bad input.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from picor_gin.cli_help import DefaultsHelpFormatter, description, exit_status  # noqa: E402
from picor_gin.reports import paper  # noqa: E402
from picor_gin.reports.tables import ReportError, paper_table  # noqa: E402
from picor_gin.run.config_text import parse_bindings  # noqa: E402
from picor_gin.sweeps.plan import PlannedRun, bad_input, bound_parameters, plan  # noqa: E402
from picor_gin.sweeps.backends import add_backend_arguments, launch  # noqa: E402

BUDGETS = ("Experiment.total_env_steps", "Experiment.eval_every_env_steps",
           "Experiment.checkpoint_every_env_steps", "MultiTaskData.warmup_env_steps_per_task")


TOTAL, EVAL_EVERY = BUDGETS[0], BUDGETS[1]
MAX_SCALED_EVALUATIONS = 20  # an evaluation costs the same at any scale: a quick look stays quick


def scaled_budgets(gin_file: str, bindings: Sequence[str], scale: float) -> list[str]:
    """Bindings that multiply each of the gin file's budgets by `scale` (at least 1 env step),
    with at most MAX_SCALED_EVALUATIONS evaluations; a budget the user bound is theirs, as given."""
    if scale == 1:
        return []
    own = parse_bindings("\n".join(bindings))
    values = bound_parameters(gin_file, bindings, BUDGETS)
    scaled = {name: max(1, round(values[name] * scale)) for name in BUDGETS if name not in own}
    if EVAL_EVERY in scaled:
        total = scaled.get(TOTAL, values[TOTAL])
        scaled[EVAL_EVERY] = max(scaled[EVAL_EVERY], math.ceil(total / MAX_SCALED_EVALUATIONS))
    return [f"{name} = {value}" for name, value in scaled.items()]


def grid(table: str, benchmark: str, seeds: Sequence[int], root: Path, bindings: Sequence[str],
         scale: float) -> list[PlannedRun]:
    """Every implemented cell's runs, in the paper's column order."""
    runs = []
    for cell in paper.cells(table, benchmark):
        if cell.gin_file is None:
            print(f"{'skip':<7}{cell.label}: not in this grid (its teachers come first: docs/ktm_drl.md); the table shows the paper's number", flush=True)
            continue
        runs += plan([cell.gin_file], seeds, root, [*bindings, *scaled_budgets(cell.gin_file, bindings, scale)])
    return runs


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description(__doc__), epilog=exit_status(__doc__),
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("table", choices=paper.TABLES, help="the paper's table whose arms to run")
    parser.add_argument("--benchmark", choices=paper.BENCHMARKS, required=True, help="the task set of every arm")
    parser.add_argument("--seeds", nargs="+", action="extend", type=int, required=True,
                        help="one run per seed and arm (Experiment.seed)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every budget (e.g. 0.01 for a quick look)")
    parser.add_argument("--root", type=Path, default=None,
                        help="default runs/reproduce/<table>_<benchmark>, with _scale<S> unless --scale is 1")
    parser.add_argument("--gin_bindings", nargs="+", action="extend", default=[], help="'X.y = v' for every run")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications of the table's IQM CI")
    add_backend_arguments(parser)
    args = parser.parse_args(argv)
    scaled = "" if args.scale == 1 else f"_scale{args.scale:g}"  # a quick look never mixes with the full grid
    args.root = args.root or Path("runs") / "reproduce" / f"{args.table}_{args.benchmark}{scaled}"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.scale > 0 or args.reps < 1:
        print(f"error: --scale must be > 0 and --reps >= 1, got {args.scale} and {args.reps}", file=sys.stderr)
        return 2
    gin_files = [cell.gin_file for cell in paper.cells(args.table, args.benchmark) if cell.gin_file]
    problem = bad_input(gin_files, args.seeds)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        runs = grid(args.table, args.benchmark, args.seeds, args.root, args.gin_bindings, args.scale)
    except (ValueError, TypeError, SyntaxError, KeyError) as error:  # gin refused a binding
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    code = launch(runs, args.root, args)
    if args.dry_run or not args.root.is_dir():
        return code
    try:
        table, _ = paper_table(args.root, args.table, args.benchmark, args.reps)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return code or 2
    print("\n" + table, end="")
    return code


if __name__ == "__main__":
    sys.exit(main())
