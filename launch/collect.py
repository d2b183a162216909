"""Copies finished runs' small files into a results folder kept in the repository:
python launch/collect.py RUNS_ROOT RESULTS_ROOT

Each <RUNS_ROOT>/<arm>/seed<S> with a summary.json goes to <RESULTS_ROOT>/<arm>/seed<S>:
config.gin, eval.jsonl, summary.json and scalars.json (the per-task weights, temperatures and
policy entropies, the critic's mean and per-task estimates and its loss, from TensorBoard), so launch/report.py and
launch/plot.py draw every table and figure from RESULTS_ROOT alone. Exit status: 0 done; 2 RUNS_ROOT is not a folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from picor_gin.cli_help import DefaultsHelpFormatter, description, exit_status  # noqa: E402
from picor_gin.reports.collect import collect  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=description(__doc__), epilog=exit_status(__doc__), formatter_class=DefaultsHelpFormatter
    )
    parser.add_argument("runs_root", type=Path, help="a sweep's --root, holding <arm>/seed<S> run folders")
    parser.add_argument("results_root", type=Path, help="where <arm>/seed<S>/ copies of the small files go")
    args = parser.parse_args(argv)
    if not args.runs_root.is_dir():
        print(f"error: no such folder: {args.runs_root}", file=sys.stderr)
        return 2
    for target in collect(args.runs_root, args.results_root):
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
