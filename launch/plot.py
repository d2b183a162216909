"""Plots finished runs: python launch/plot.py RUN_OR_ROOT [RUN_OR_ROOT ...] [--out plots]

Every folder holding summary.json at or below the given paths is a finished run, as for
launch/report.py: files (a sweep's seed<S>.log), set-aside folders (seed<S>.stale<N>,
seed<S>.rank<k>) and unfinished runs (named on stderr) are skipped. Runs of one arm (the same
`Experiment.name` and config.gin but for `Experiment.seed`) form one curve with a band over their
seeds. Exit status: 0 done; 2 nothing to plot, a run without eval.jsonl, or two runs of one arm
with one seed, one line on stderr.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from picor_gin.cli_help import DefaultsHelpFormatter, description, exit_status  # noqa: E402
from picor_gin.reports.plots import plot_runs  # noqa: E402
from picor_gin.reports.runs import ReportError, require_runs  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=description(__doc__), epilog=exit_status(__doc__),
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, metavar="RUN_OR_ROOT",
                        help="run folders, or folders to search for them (a sweep's --root)")
    parser.add_argument("--out", type=Path, default=Path("plots"), help="folder for the PNG files")
    args = parser.parse_args(argv)
    try:
        run_dirs = require_runs(args.paths)
        missing = [str(run_dir) for run_dir in run_dirs if not (run_dir / "eval.jsonl").is_file()]
        if missing:
            raise ReportError(f"no eval.jsonl in {', '.join(missing)}")
        written = plot_runs(run_dirs, args.out)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
