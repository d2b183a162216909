"""Which run folders a report or figure reads, and which of them are one arm.

Discovery is shared by launch/report.py and launch/plot.py, so both see the same runs from the
same paths. An arm is an `Experiment.name` together with the run's operative config (config.gin)
without `Experiment.seed`: runs that share a name but not a config (a binding on the command line,
reproduce.py's --scale) are different experiments, and pooling them would report a mixture as seeds."""
from __future__ import annotations

import collections
import dataclasses
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence

from picor_gin.run.config_text import parse_bindings

SEED_KEY = "Experiment.seed"
NAME_KEY = "Experiment.name"
# The sweep's set-aside folders: a run that died before its first checkpoint (.stale<N>), and
# the scratch folder of a DDP rank other than 0 (.rank<k>); neither is a run of its own.
SET_ASIDE = re.compile(r"\.(stale|rank)\d+$")
Bindings = tuple[tuple[str, str], ...]  # (key, value as gin text), sorted by key
Arms = dict[str, list[Path]]  # arm label -> its run folders (group_by_arm)


class ReportError(ValueError):
    """Nothing to report, or runs that cannot be reported together: one line for the user."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A run's name, seed and every other binding of its config.gin (key -> value as gin text)."""

    name: str
    seed: object
    bindings: Bindings


def read_config(run_dir: Path) -> RunConfig:
    """Parses the run's config.gin with gin's own parser (values may span lines); imports are left
    out, as they only follow from the configurables the bindings name."""
    path = run_dir / "config.gin"
    if not path.is_file():
        raise ReportError(f"no config.gin in {run_dir}")
    try:
        values = parse_bindings(path.read_text())
    except SyntaxError as error:
        raise ReportError(f"{path}: not a gin config ({error.msg})") from error
    name = values.pop(NAME_KEY, run_dir.name)
    seed = values.pop(SEED_KEY, None)
    return RunConfig(str(name), seed, tuple(sorted((key, repr(value)) for key, value in values.items())))


def _run_folders(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """(finished, unfinished) run folders at or below `paths`: a folder with config.gin or
    summary.json is a run, finished once summary.json is there. Files (a sweep's seed<S>.log) and
    set-aside folders are skipped; a folder reached twice counts once."""
    found: dict[Path, Path] = {}
    for path in paths:
        if not path.exists():
            raise ReportError(f"no such file or folder: {path}")
        for marker in (*path.rglob("config.gin"), *path.rglob("summary.json")):
            run_dir = marker.parent
            if not SET_ASIDE.search(run_dir.name):
                found.setdefault(run_dir.resolve(), run_dir)
    runs = sorted(found.values())
    return [r for r in runs if (r / "summary.json").is_file()], [r for r in runs if not (r / "summary.json").is_file()]


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Finished run folders at or below `paths`, sorted; names the unfinished ones in one line on
    stderr, so a run that died is not silently missing from a table or a figure."""
    finished, unfinished = _run_folders(paths)
    if unfinished:
        print(f"skipped {len(unfinished)} unfinished run(s) (no summary.json): {', '.join(map(str, unfinished))}",
              file=sys.stderr)
    return finished


def require_runs(paths: Sequence[Path]) -> list[Path]:
    """find_runs, refusing to make an empty table or figure."""
    run_dirs = find_runs(paths)
    if not run_dirs:
        raise ReportError(f"no run folder (with summary.json) below {', '.join(map(str, paths))}")
    return run_dirs


def _distinguishing_keys(arms: list[Bindings]) -> list[str]:
    """The bindings that tell arms of one name apart: those bound in every arm with different
    values (MultiTaskLearner.correction), not the configurables that only follow from them
    (PolicyCorrection.*), unless the former alone leave two arms alike."""
    configs = [dict(arm) for arm in arms]
    differing = sorted(key for key in set().union(*configs) if len({c.get(key) for c in configs}) > 1)
    shared = [key for key in differing if all(key in c for c in configs)]
    if len({tuple(c[key] for key in shared) for c in configs}) == len(configs):
        return shared
    return differing


def _labels(arms: list[tuple[str, Bindings]]) -> dict[tuple[str, Bindings], str]:
    """Arm -> its label: the name alone where one config has it, else the name and its telling bindings."""
    by_name = collections.defaultdict(list)
    for name, bindings in arms:
        by_name[name].append(bindings)
    labels = {}
    for name, configs in by_name.items():
        keys = _distinguishing_keys(configs) if len(configs) > 1 else []
        for bindings in configs:
            shown = [f"{key} = {value}" for key, value in bindings if key in keys]
            labels[name, bindings] = f"{name} [{', '.join(shown)}]" if shown else name
    return labels


def group_by_arm(run_dirs: Iterable[Path]) -> Arms:
    """Arm label -> its run folders, sorted by label; refuses two runs of one arm with one seed,
    which would count one run twice (a copied folder) and shrink the spread over seeds."""
    arms: dict[tuple[str, Bindings], dict[object, Path]] = collections.defaultdict(dict)
    for run_dir in run_dirs:
        config = read_config(run_dir)
        seeds = arms[config.name, config.bindings]
        if config.seed in seeds:
            raise ReportError(f"{seeds[config.seed]} and {run_dir} are both seed {config.seed} of one arm "
                              f"({config.name}, same config): keep one")
        seeds[config.seed] = run_dir
    labels = _labels(list(arms))
    return {labels[arm]: sorted(seeds.values()) for arm, seeds in sorted(arms.items(), key=lambda item: labels[item[0]])}
