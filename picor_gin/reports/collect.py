"""Copies finished runs' small files into a results folder that a repository can keep: each run's
config.gin, eval.jsonl and summary.json, and the TensorBoard scalars the figures read (the eq. 9
weights, the temperatures, the policy's entropy, the critic's Q, per-task estimates and loss) as
scalars.json.
Kilobytes per run: no checkpoints, no event files, so every table and figure of a study can be
drawn again from a clone."""
from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SMALL_FILES = ("config.gin", "eval.jsonl", "summary.json")
SCALARS_FILE = "scalars.json"
# Tag prefixes kept: Fig. 4 of the paper (w_z over time), the temperatures w_z is computed from,
# each task's policy entropy, which drives its temperature, and the critic's estimates, where a
# diverging critic shows: "train/q" is the batch's mean Q and, as a prefix, each task's Q
# ("train/q/<task>"), with PPO's V ("train/value/<task>") and the critic's loss.
KEPT_TAGS = ("train/weight/", "train/alpha/", "train/entropy/", "train/q", "train/value/", "train/loss_critic")


def _logged_series(run_dir: Path) -> dict[str, list[list[float]]]:
    """Every scalar tag's [[env steps, value], ...]: from the run's TensorBoard events, or from its
    scalars.json where a results folder kept only that."""
    exported = run_dir / SCALARS_FILE
    if exported.is_file():
        return json.loads(exported.read_text())
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    # A resumed run's events restart at its checkpoint; TensorBoard drops the ones its earlier
    # attempt logged past that point, as wanted, with a warning per tag that says nothing here.
    tensorboard_log = logging.getLogger("tensorboard")
    level = tensorboard_log.level
    tensorboard_log.setLevel(logging.ERROR)
    try:
        events.Reload()
    finally:
        tensorboard_log.setLevel(level)
    return {tag: [[e.step, e.value] for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def read_scalars(run_dir: Path, prefix: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(env steps, values) per tag under `prefix`, keyed by the rest of the tag."""
    return {
        tag[len(prefix):]: (np.array([step for step, _ in points]), np.array([value for _, value in points]))
        for tag, points in _logged_series(run_dir).items() if tag.startswith(prefix)
    }


def collect(runs_root: Path, results_root: Path, kept: Sequence[str] = KEPT_TAGS) -> list[Path]:
    """Copies every finished run <runs_root>/<arm>/seed<S> to <results_root>/<arm>/seed<S>;
    returns the folders written. Unfinished runs (no summary.json) are left out, and so are
    folders set aside under another name (seed<S>.stale<N>, or any seed<S>.<why>)."""
    written = []
    for summary in sorted(runs_root.glob("*/seed*/summary.json")):
        run_dir = summary.parent
        if not re.fullmatch(r"seed\d+", run_dir.name):
            continue
        target = results_root / run_dir.parent.name / run_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for name in SMALL_FILES:
            shutil.copy2(run_dir / name, target / name)
        series = {tag: [[int(step), round(float(value), 6)] for step, value in points]
                  for tag, points in _logged_series(run_dir).items() if tag.startswith(tuple(kept))}
        (target / SCALARS_FILE).write_text(json.dumps(series, sort_keys=True) + "\n")
        written.append(target)
    return written
