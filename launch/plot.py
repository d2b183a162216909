"""Plots run folders: python launch/plot.py RUN_DIR [RUN_DIR ...] [--out plots]

Runs sharing an `Experiment.name` form one curve with a band over their seeds.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from picor_gin.reports.plots import plot_runs  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("plots"), help="folder for the PNG files")
    args = parser.parse_args()
    missing = [str(d) for d in args.run_dirs if not (d / "eval.jsonl").is_file()]
    if missing:
        print(f"error: no eval.jsonl in {', '.join(missing)}", file=sys.stderr)
        return 2
    for path in plot_runs(args.run_dirs, args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
