"""Tables final performance over seeds: python launch/report.py RUN_OR_ROOT... [--metric M] [--out [FILE]]

Every folder holding summary.json at or below the given paths is a finished run (files, set-aside
seed<S>.stale<N> and seed<S>.rank<k> folders and unfinished runs are skipped, the last named on
stderr). Runs of one arm, the same `Experiment.name` and config.gin but for `Experiment.seed`, form
one row: number of seeds, the final metric's mean ± std over seeds, and its interquartile mean (IQM)
with a 95% percentile-bootstrap confidence interval (rliable). Arms sharing a name are labelled by
the bindings that tell them apart, e.g. `tiny_picor [MultiTaskLearner.correction = None]`. Where
the runs' env steps (summary.json's total_env_steps) differ, a note under the table names each arm's.

    python launch/report.py runs/sweep1                  # prints the markdown table
    python launch/report.py runs/sweep1 --out            # ... and writes it to ./report.md
    python launch/report.py runs/a runs/b --metric mean_return --out results/table.md
    python launch/report.py runs/reproduce/table1_mt10 --table table1 --benchmark mt10
    python launch/report.py runs/ktm_study --reach 0.9     # env steps to a mean_score of 0.9
    python launch/report.py results/paper_benchmarks/mt10_* --per_task   # each task's final success
    python launch/report.py results/paper_benchmarks/mt10_* --improvement   # P(X > Y) per pair of arms
    python launch/report.py results/paper_benchmarks/halfcheetah_* --over_tasks   # IQM over runs x tasks

--table prints a root that launch/reproduce.py filled in the paper's table shape: one column per
method (Table 1) or ablation cell (Table 2), the paper's number above ours, "not run" where no run
finished (KTM-DRL's two-stage pipeline is not in reproduce.py's grid); the benchmark fixes the metric (MT10: mean_success
in %, HalfCheetah: mean_return, tiny: mean_score).

--improvement tables, for each pair of arms, the probability of improvement P(X > Y) (Agarwal et
al. 2021): per task, the chance that a run of X ends above a run of Y (ties count half), averaged
over tasks, with its stratified-bootstrap CI. 0.5 is no difference; rliable's authors read a lower
bound above 0.5 as a significant improvement. It needs a metric with a value per task.

--over_tasks tables rliable's aggregate IQM: the middle half of every (run, task) final value,
pooled, with a bootstrap that resamples runs within each task. The default table's IQM is over
seeds of each run's mean over tasks, which trims nothing below 4 seeds.

Notes under a table name the arms with 3 seeds or fewer (their interval is the range of their
seeds, not a 95% interval), task sets that differ, and env steps that differ.

--metric defaults to the first of mean_success, mean_score, mean_return that every run reports;
average_forgetting (how far the tasks fell below their own best, averaged over the run) is lower-is-better.
--reps and --seed fix the bootstrap, so the same runs always give the same table.
Exit status: 0 done; 2 nothing to report (no run found, or the metric is null or not finite in a
run) or two runs of one arm with one seed (a copied folder would count twice), one line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from picor_gin.cli_help import DefaultsHelpFormatter, description, exit_status  # noqa: E402
from picor_gin.reports.paper import BENCHMARKS, TABLES  # noqa: E402
from picor_gin.reports.tables import LOWER_IS_BETTER, METRICS, ReportError, build_report, paper_table  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__), epilog=exit_status(__doc__),
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_ROOT",
                        help="run folders, or folders to search for them (a sweep's --root)")
    parser.add_argument("--metric", choices=METRICS + LOWER_IS_BETTER, default=None,
                        help=f"the metric to table; unset: the first of {', '.join(METRICS)} every run reports")
    parser.add_argument("--out", type=Path, nargs="?", const=Path("report.md"), default=None, metavar="FILE",
                        help="also write the table to FILE (report.md when FILE is left out)")
    parser.add_argument("--reach", type=float, default=None, metavar="THRESHOLD",
                        help="table the env steps of each run's first evaluation with the metric >= THRESHOLD")
    parser.add_argument("--per_task", action="store_true", help="table the final metric of each task instead")
    parser.add_argument("--improvement", action="store_true",
                        help="table each pair of arms' probability of improvement P(X > Y) over tasks instead")
    parser.add_argument("--over_tasks", action="store_true",
                        help="table each arm's IQM over runs x tasks (rliable's aggregate IQM) instead")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--table", choices=TABLES, default=None, help="the paper's table shape (one root)")
    parser.add_argument("--benchmark", choices=BENCHMARKS, default=None, help="with --table")
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error(f"--reps must be >= 1, got {args.reps}")
    if (args.table is None) != (args.benchmark is None) or (args.table and (len(args.paths) > 1 or args.metric)):
        parser.error("--table and --benchmark go together, with one root and no --metric")
    tables = (("--reach", args.reach is not None), ("--per_task", args.per_task), ("--improvement", args.improvement),
              ("--over_tasks", args.over_tasks), ("--table", args.table is not None))
    asked = [flag for flag, given in tables if given]
    if len(asked) > 1:
        parser.error(f"{' and '.join(asked)} are different tables: ask for one")
    try:
        if args.table is None:
            table, _ = build_report(args.paths, args.metric, args.reps, args.seed, args.reach, args.per_task,
                                    args.improvement, args.over_tasks)
        else:
            table, _ = paper_table(args.paths[0], args.table, args.benchmark, args.reps, args.seed)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(table, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
        print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
