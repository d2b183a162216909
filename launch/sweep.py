"""Runs gin files x seeds through launch/run.py: here (subprocesses, N at a time) or on SLURM
(one job per run, a job array through submitit; docs/sweeps.md).

    python launch/sweep.py --gin_files gin_configs/tiny_picor.gin gin_configs/tiny_mtsac.gin \\
        --seeds 0 1 2 --root runs/sweep1 [--parallel 2] [--gin_bindings "Experiment.total_env_steps = 2000" ...]
    python launch/sweep.py ... --backend slurm --partition P --gpus_per_job 1 --time 72:00:00 [--dry_run]

    python launch/sweep.py --gin_files gin_configs/tiny_ktm_teacher.gin --each_task --seeds 0 1 2 --root runs/tiny_ktm_teachers

Run S of gin file F goes to <root>/<F's stem>/seed<S> (with --each_task, one arm per task of F's
TaskSubset.task_set: <root>/<F's stem>_<task>/seed<S>, binding `TaskSubset.tasks = ['<task>']`) with `--gin_bindings "Experiment.seed = S"`
after the sweep's own bindings, on every backend; its stdout and stderr are appended to
<run folder>.log, never echoed. A progress line counts the runs done, running, failed and waiting.
Re-launching the same command after a crash skips finished runs (summary.json present) and
resumes started ones with `--resume`, which keeps the config they started with. On SLURM a
preempted or timed-out job requeues itself and resumes the same way (see picor_gin/sweeps/slurm.py
for the retry rule).
Then: python launch/report.py <root>
Exit status: 0 every run done; 1 some run failed (listed with its log); 2 bad input.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from picor_gin.cli_help import DefaultsHelpFormatter, description, exit_status  # noqa: E402
from picor_gin.sweeps.plan import bad_input, plan  # noqa: E402
from picor_gin.sweeps.backends import add_backend_arguments, launch  # noqa: E402


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=description(__doc__), formatter_class=DefaultsHelpFormatter,
        epilog=f"{exit_status(__doc__)} docs/sweeps.md has the details.",
    )
    parser.add_argument("--gin_files", nargs="+", action="extend", required=True, help="one sweep arm per gin file")
    parser.add_argument("--seeds", nargs="+", action="extend", type=int, required=True,
                        help="one run per seed and arm (Experiment.seed)")
    parser.add_argument("--root", type=Path, required=True, help="runs go to ROOT/<gin file stem>/seed<S>")
    parser.add_argument("--gin_bindings", nargs="+", action="extend", default=[], help="'X.y = v' for every run")
    parser.add_argument("--each_task", action="store_true",
                        help="one arm per task of the gin file's TaskSubset.task_set (KTM-DRL's teachers)")
    add_backend_arguments(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    problem = bad_input(args.gin_files, args.seeds)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        runs = plan(args.gin_files, args.seeds, args.root, args.gin_bindings, args.each_task)
    except ValueError as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    return launch(runs, args.root, args)


if __name__ == "__main__":
    sys.exit(main())
