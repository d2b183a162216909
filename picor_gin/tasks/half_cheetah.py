"""The HalfCheetah task group: one body part scaled per task (docs/design.md, "Benchmarks and evaluation")."""
from __future__ import annotations

import hashlib
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Mapping, Sequence

import gin
import numpy as np

from picor_gin.tasks.gym import GymTasks
from picor_gin.whole_files import write_whole


#: Geoms scaled for each HalfCheetah body part, as in gym-extensions (Henderson et al., 2017,
#: "Benchmark environments for multitask learning in continuous domains"), where the task group
#: of KTM-DRL and PiCor comes from; "leg" is the shin.
HALF_CHEETAH_PARTS: dict[str, tuple[str, ...]] = {
    "torso": ("torso",),
    "thigh": ("bthigh", "fthigh"),
    "leg": ("bshin", "fshin"),
    "foot": ("bfoot", "ffoot"),
}


def _format(values: np.ndarray) -> str:
    return " ".join(repr(float(v)) for v in values)


def scaled_half_cheetah_xml(geoms: Sequence[str], factor: float) -> str:
    """Path of gymnasium's half_cheetah.xml with `geoms` scaled by `factor` about their centres.

    Radius and half-length both scale and the centre stays, as in gym-extensions, which scales
    `size`; for the torso, placed by `fromto`, the length lives in `fromto`, which gym-extensions
    left unscaled (a TODO there) and we scale too, so every part grows the same way. Joints and
    child bodies do not move. Masses follow the geoms (inertiafromgeom) and are renormalised to
    14 kg (settotalmass). The file is content-addressed under the temp folder, so concurrent
    processes share it safely.
    """
    import gymnasium.envs.mujoco  # imports mujoco; only HalfCheetah needs it

    source = Path(gymnasium.envs.mujoco.__file__).parent / "assets" / "half_cheetah.xml"
    tree = ET.parse(source)
    for name in geoms:
        geom = tree.find(f".//geom[@name='{name}']")
        if geom is None:
            raise ValueError(f"half_cheetah.xml has no geom named {name!r}")
        geom.set("size", _format(np.array(geom.get("size").split(), float) * factor))
        if geom.get("fromto") is not None:  # the torso: its length lives in fromto, not size
            ends = np.array(geom.get("fromto").split(), float).reshape(2, 3)
            centre = ends.mean(0)
            geom.set("fromto", _format((centre + (ends - centre) * factor).ravel()))
    text = ET.tostring(tree.getroot(), encoding="unicode")
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "picor_gin" / f"half_cheetah_{digest}.xml"
    if not path.exists():
        write_whole(path, text)
    return str(path)


@gin.configurable
class HalfCheetahGroup(GymTasks):
    """The HalfCheetah task group (docs/design.md, "Benchmarks and evaluation"): one body part scaled per task.

    Tasks "<part>_<label>" for each part of `HALF_CHEETAH_PARTS` (torso, thigh, leg, foot) and
    each label of `scale_factors` (big 1.25, small 0.75: 8 tasks, gym-extensions' factors), from
    gymnasium's HalfCheetah-v5 (observation 17 dims, actions in [-1, 1]^6); 1000-step episodes,
    metric: return.

    Args:
        scale_factors: label -> size factor, a dict or pairs; each factor > 0.
        max_episode_steps: time limit (1000 in the benchmark).
    """

    def __init__(
        self,
        scale_factors: Mapping[str, float] | Sequence[tuple[str, float]] = (
            ("big", 1.25), ("small", 0.75)
        ),
        max_episode_steps: int = 1000,
    ):
        factors = dict(scale_factors)
        if not factors:
            raise ValueError("HalfCheetahGroup.scale_factors must hold at least one factor")
        for label, factor in factors.items():
            if not factor > 0:
                raise ValueError(
                    f"HalfCheetahGroup.scale_factors[{label!r}] must be > 0, got {factor}"
                )
        #: task name -> (scaled geoms, factor), in task order.
        self.variants = {
            f"{part}_{label}": (geoms, factor)
            for part, geoms in HALF_CHEETAH_PARTS.items()
            for label, factor in factors.items()
        }
        self.xml_files = [scaled_half_cheetah_xml(*variant) for variant in self.variants.values()]
        super().__init__(
            env_ids=["HalfCheetah-v5"] * len(self.variants),
            make_kwargs=[{"xml_file": xml} for xml in self.xml_files],
            max_episode_steps=max_episode_steps,
            names=list(self.variants),
        )
