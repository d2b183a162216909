"""The gin names that picor-gin renamed, so that a config.gin written before (an old run folder,
a gin file of one's own) is refused with the new name instead of gin's bare unknown-name error.
There are no aliases: an old config names the configurables of code that no longer exists."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

#: Old name (a binding's configurable.parameter, a reference, or a module) -> what replaces it.
RENAMED = {
    "PiCor.weighting": "PolicyCorrection.weighting",
    "PiCor.constraint": "PolicyCorrection.constraint",
    "PiCor.correction_solver": "PolicyCorrection.solver",
    "PiCor.correction_steps": "PolicyCorrection.steps (no correction: MultiTaskLearner.correction = None)",
    "PiCor.correction_optimizer": "PolicyCorrection.optimizer",
    "PiCor.lam": "PolicyCorrection.lam",
    "PiCor.c": "PolicyCorrection.c",
    "PiCor": "MultiTaskLearner (PiCor's correction: MultiTaskLearner.correction = @PolicyCorrection)",
    "NoCorrection": "MultiTaskLearner.correction = None",
    **{f"{backbone}.network": "MultiTaskLearner.network (one network for whichever backbone the learner builds)"
       for backbone in ("SAC", "TD3", "PPO")},
    "picor_gin.module": "picor_gin.learner",
    "picor_gin.constraints": "picor_gin.correction",
    "picor_gin.correction_solvers": "picor_gin.correction",
    "picor_gin.weighting": "picor_gin.correction",
    "picor_gin.experiment": "picor_gin.run.experiment",
    "picor_gin.externals": "picor_gin.run.externals",
    "picor_gin.task_sets": "picor_gin.tasks",
    "picor_gin.teachers": "picor_gin.ktm_drl",
}

_NAME = re.compile(r"[A-Za-z_][\w.]*")


def renamed_names(text: str) -> list[tuple[str, str]]:
    """(old, new) for each renamed name that `text` (gin) uses outside comments, most specific
    first: `PiCor.lam` rather than `PiCor`."""
    found = []
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        for token in _NAME.findall(code):
            for old in sorted(RENAMED, key=len, reverse=True):
                if token == old or token.startswith(old + "."):
                    if (old, RENAMED[old]) not in found:
                        found.append((old, RENAMED[old]))
                    break
    return found


def renamed_problem(gin_files: Iterable[str | Path], bindings: Iterable[str], root: Path) -> str | None:
    """One line naming the first renamed configurable in the gin files or bindings, or None."""
    for source in gin_files:
        path = Path(source) if Path(source).is_file() else root / source
        found = renamed_names(path.read_text()) if path.is_file() else []
        if found:
            old, new = found[0]
            return f"{source} uses {old}, which picor-gin renamed: it is now {new}"
    for binding in bindings:
        found = renamed_names(binding)
        if found:
            old, new = found[0]
            return f"--gin_bindings {binding!r} uses {old}, which picor-gin renamed: it is now {new}"
    return None
