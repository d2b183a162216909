"""Task sets: the benchmarks a multi-task run trains on, as TorchRL environments.

A task set names its tasks and builds, for one task, a (possibly batched) TorchRL env whose
"observation" already carries the one-hot task id (DESIGN.md section 1), so networks, collectors
and evaluation need no task-specific code.

Benchmarks (DESIGN.md section 4): `PointGoals` (the tiny set), `MetaWorldMT10` / `MetaWorldMT50`
(fixed goals, success flag), `HalfCheetahGroup` (8 morphology variants) and `GymTasks` (any list of
gymnasium ids). The gymnasium ones share one path, `gym_task_env`: gymnasium env -> actions
rescaled to [-1, 1] -> one-hot appended -> gymnasium vector env of `num_envs` copies -> TorchRL
`GymWrapper` -> DoubleToFloat, StepCounter (the time limit: truncation, not termination), RewardSum.
"""
from __future__ import annotations

import abc
import functools
import hashlib
import math
import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import gin
import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import (
    Compose,
    DoubleToFloat,
    EnvBase,
    GymWrapper,
    RewardSum,
    StepCounter,
    TransformedEnv,
    default_info_dict_reader,
)


class TaskSet(abc.ABC):
    """A fixed list of tasks sharing observation and action spaces."""

    names: list[str]
    max_episode_steps: int
    #: Whether episodes report ("next", "success"); Meta-World does, PointGoals does not.
    has_success: bool = False

    @property
    def num_tasks(self) -> int:
        return len(self.names)

    @abc.abstractmethod
    def make_env(self, task_id: int, num_envs: int = 1, seed: int = 0) -> EnvBase:
        """Builds task `task_id`'s env with `num_envs` parallel copies (batch size [num_envs])."""

    def normalized_score(self, task_id: int, episode_return: float) -> float | None:
        """Maps a return to the task's normalized score; None where the set defines none."""
        return None

    def task_id(self, name: str) -> int:
        """Index of the task called `name`; a clear error lists the valid names."""
        if name not in self.names:
            raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(self.names)}")
        return self.names.index(name)


class PointGoalsEnv(EnvBase):
    """A 2-D point walking to one goal (DESIGN.md section 6), batched and stateless.

    The position is read back from the first two entries of the incoming observation, so the
    env keeps no state of its own and partial resets of a batch are trivial.
    """

    def __init__(
        self,
        goal: torch.Tensor,
        task_id: int,
        num_tasks: int,
        num_envs: int = 1,
        step_size: float = 0.1,
        bound: float = 2.0,
    ):
        super().__init__(batch_size=torch.Size([num_envs]))
        self.goal = goal.to(torch.float32)
        self.step_size = step_size
        self.bound = bound
        self.task_onehot = torch.nn.functional.one_hot(
            torch.tensor(task_id), num_tasks
        ).to(torch.float32)
        self.observation_spec = Composite(
            observation=Unbounded(shape=(num_envs, 2 + num_tasks)), shape=(num_envs,)
        )
        self.action_spec = Bounded(low=-1.0, high=1.0, shape=(num_envs, 2))
        self.reward_spec = Unbounded(shape=(num_envs, 1))

    def _observation(self, position: torch.Tensor) -> torch.Tensor:
        return torch.cat([position, self.task_onehot.expand(*position.shape[:-1], -1)], -1)

    def _reset(self, tensordict: TensorDictBase | None) -> TensorDictBase:
        position = torch.zeros(*self.batch_size, 2)
        reset = None if tensordict is None else tensordict.get("_reset", None)
        if reset is not None and tensordict.get("observation", None) is not None:
            # Envs not being reset keep their position (partial reset of a batch).
            kept = tensordict.get("observation")[..., :2]
            position = torch.where(reset, position, kept)
        return TensorDict(
            {"observation": self._observation(position)}, batch_size=self.batch_size
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        position = tensordict.get("observation")[..., :2]
        action = tensordict.get("action").clamp(-1.0, 1.0)
        position = (position + self.step_size * action).clamp(-self.bound, self.bound)
        reward = -(position - self.goal).norm(dim=-1, keepdim=True)
        never_done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return TensorDict(
            {
                "observation": self._observation(position),
                "reward": reward,
                "done": never_done,
                "terminated": never_done.clone(),
            },
            batch_size=self.batch_size,
        )

    def _set_seed(self, seed: int | None) -> None:
        """Dynamics and start state are deterministic: nothing to seed."""


@gin.configurable
class PointGoals(TaskSet):
    """The tiny task set: goals evenly spaced on the unit circle (east, north, west, south, ...).

    From the same state the tasks ask for opposite actions and only the one-hot id tells them
    apart, so a shared policy must genuinely separate them. Score (DESIGN.md section 6):
    (R - R_stay) / (R_oracle - R_stay), 1 optimal, 0 standing still.
    """

    def __init__(self, num_tasks: int = 4, episode_steps: int = 30, step_size: float = 0.1):
        if num_tasks < 1:
            raise ValueError(f"PointGoals.num_tasks must be >= 1, got {num_tasks}")
        if episode_steps < 1:
            raise ValueError(f"PointGoals.episode_steps must be >= 1, got {episode_steps}")
        self.names = [f"goal{z}" for z in range(num_tasks)]
        self.max_episode_steps = episode_steps
        self.step_size = step_size
        angles = torch.arange(num_tasks, dtype=torch.float64) * (2 * math.pi / num_tasks)
        self.goals = torch.stack([angles.cos(), angles.sin()], -1).to(torch.float32)
        self._reference_returns = [
            (self._scripted_return(z, oracle=False), self._scripted_return(z, oracle=True))
            for z in range(num_tasks)
        ]

    def make_env(self, task_id: int, num_envs: int = 1, seed: int = 0) -> EnvBase:
        base = PointGoalsEnv(
            self.goals[task_id], task_id, self.num_tasks, num_envs, self.step_size
        )
        env = TransformedEnv(base, Compose(StepCounter(self.max_episode_steps), RewardSum()))
        env.set_seed(seed)
        return env

    def normalized_score(self, task_id: int, episode_return: float) -> float:
        stay, oracle = self._reference_returns[task_id]
        return (episode_return - stay) / (oracle - stay)

    def _scripted_return(self, task_id: int, oracle: bool) -> float:
        """Return of standing still, or of walking straight to the goal at full speed."""
        goal = self.goals[task_id]

        def policy(td: TensorDictBase) -> TensorDictBase:
            offset = goal - td["observation"][..., :2]
            distance = offset.norm(dim=-1, keepdim=True).clamp_min(self.step_size)
            return td.set("action", offset / distance if oracle else torch.zeros_like(offset))

        rollout = self.make_env(task_id).rollout(self.max_episode_steps, policy)
        return rollout["next", "reward"].sum().item()


# --- The shared gymnasium -> TorchRL path ----------------------------------------------------


def _append_task_onehot(observation: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    return np.concatenate([observation, onehot])


def _prepare_gym_env(
    make: Callable[[], gym.Env], task_id: int, num_tasks: int
) -> gym.Env:
    """One copy of a task's gymnasium env: actions in [-1, 1], one-hot task id appended."""
    env = make()
    env = _unit_box_actions(env)
    (dim,) = _flat_box_shape(env.observation_space, "observation")
    onehot = np.eye(num_tasks, dtype=np.float64)[task_id]
    # Declared unbounded: Meta-World's goal entries lie outside its declared observation bounds.
    space = gym.spaces.Box(-np.inf, np.inf, shape=(dim + num_tasks,), dtype=np.float64)
    return gym.wrappers.TransformObservation(
        env, functools.partial(_append_task_onehot, onehot=onehot), space
    )


def _flat_box_shape(space: gym.Space, what: str) -> tuple[int]:
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"task sets need a flat Box {what} space, got {space}")
    return space.shape


def _unit_box_actions(env: gym.Env) -> gym.Env:
    """Rescales a bounded Box action space to [-1, 1], the SAC actor's tanh range."""
    space = env.action_space
    _flat_box_shape(space, "action")
    if np.all(space.low == -1.0) and np.all(space.high == 1.0):
        return env  # Meta-World and HalfCheetah already act in [-1, 1]
    if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise ValueError(f"task sets need finite action bounds to rescale to [-1, 1], got {space}")
    return gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))


def gym_task_env(
    make: Callable[[], gym.Env],
    task_id: int,
    num_tasks: int,
    num_envs: int,
    seed: int,
    max_episode_steps: int,
    reads_success: bool = False,
) -> EnvBase:
    """Builds one task's TorchRL env, batch size [num_envs], from a gymnasium env factory.

    The copies run in one gymnasium `SyncVectorEnv` with auto-reset disabled, so TorchRL decides
    partial resets; this gives batch [num_envs] for any num_envs, 1 included, and measured 1.2x
    (1 copy) to 1.7x (4 copies) the steps per second of TorchRL's SerialEnv of single envs.

    Args:
        make: builds one copy of the task's gymnasium env (picklable: a `functools.partial`).
        task_id, num_tasks: the one-hot task id appended to "observation".
        num_envs: parallel copies, the env's batch size.
        seed: seeds copy i with seed + i (gymnasium's vector env convention).
        max_episode_steps: StepCounter's time limit; it sets ("next", "truncated"), never
            ("next", "terminated"), so the TD target keeps bootstrapping at the limit.
        reads_success: copies info["success"] (Meta-World's flag) to ("next", "success"),
            float32 0/1 of shape [num_envs].

    Returns:
        A TorchRL env whose "observation" is float32 [num_envs, obs_dim + num_tasks] and whose
        "action" is in [-1, 1]; it carries ("next", "episode_reward") for the collector.
    """
    prepare = functools.partial(_prepare_gym_env, make, task_id, num_tasks)
    vector_env = gym.vector.SyncVectorEnv(
        [prepare] * num_envs, autoreset_mode=gym.vector.AutoresetMode.DISABLED
    )
    env = GymWrapper(vector_env)
    if reads_success:
        # An explicit spec: without one TorchRL probes the env with a dummy rollout.
        spec = Composite(
            success=Unbounded((num_envs,), dtype=torch.float64), shape=(num_envs,)
        )
        env.set_info_dict_reader(default_info_dict_reader(["success"], spec=spec))
    env = TransformedEnv(
        env, Compose(DoubleToFloat(), StepCounter(max_episode_steps), RewardSum())
    )
    env.set_seed(seed)
    return env


def _check_episode_steps(owner: str, max_episode_steps: int) -> None:
    if max_episode_steps < 1:
        raise ValueError(f"{owner}.max_episode_steps must be >= 1, got {max_episode_steps}")


# --- Meta-World ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _metaworld_fixed_tasks(benchmark: str, goal_seed: int) -> tuple[tuple[str, type, Any], ...]:
    """(env name, env class, Task) per env of metaworld's `benchmark`, the first of its goals.

    `metaworld.MT10(seed=goal_seed)` draws 50 goals per env from a seeded RNG (about 6 s for
    MT10, 30 s for MT50 on one core), hence the cache: one draw per process and goal seed.
    """
    import metaworld  # slow to import; only Meta-World task sets need it

    suite = getattr(metaworld, benchmark)(seed=goal_seed)
    return tuple(
        (name, env_cls, next(t for t in suite.train_tasks if t.env_name == name))
        for name, env_cls in suite.train_classes.items()
    )


def _make_metaworld_env(env_cls: type, task: Any, max_episode_steps: int) -> gym.Env:
    env = env_cls()
    env.set_task(task)  # freezes the goal: every reset starts from the same object and goal
    env.max_path_length = max_episode_steps  # Meta-World refuses to step past it
    return env


class MetaWorldTasks(TaskSet):
    """A Meta-World multi-task benchmark with fixed goals (DESIGN.md section 4).

    One task per env of the benchmark, each with one goal: the first of the goals that
    metaworld's benchmark class draws with `goal_seed`, so a run, its evaluations and any rebuild
    with the same `goal_seed` see the same goal. The observation is Meta-World's 39 dims (hand,
    gripper, objects, previous frame, goal position) then the one-hot task id; actions are in
    [-1, 1]^4; episodes are truncated at `max_episode_steps` (500 in the benchmark), never
    terminated on success. `info["success"]` is reported as ("next", "success").

    Subclasses name the benchmark; `goal_seed` is independent of `Experiment.seed` on purpose:
    runs with different seeds face the same goals.
    """

    benchmark: ClassVar[str]
    has_success = True

    def __init__(
        self,
        goal_seed: int = 0,
        max_episode_steps: int = 500,
        tasks: Sequence[str] | None = None,
    ):
        """Args: tasks: a subset of the benchmark's env names, in this order; None keeps all."""
        _check_episode_steps(type(self).__name__, max_episode_steps)
        self.goal_seed = goal_seed
        self.max_episode_steps = max_episode_steps
        by_name = {entry[0]: entry for entry in _metaworld_fixed_tasks(self.benchmark, goal_seed)}
        for name in tasks or ():
            if name not in by_name:
                raise ValueError(
                    f"{type(self).__name__}.tasks: unknown task {name!r}; valid tasks: {', '.join(by_name)}"
                )
        self._tasks = tuple(by_name[name] for name in (tasks or by_name))
        self.names = [name for name, _, _ in self._tasks]

    def make_env(self, task_id: int, num_envs: int = 1, seed: int = 0) -> EnvBase:
        _, env_cls, task = self._tasks[task_id]
        make = functools.partial(_make_metaworld_env, env_cls, task, self.max_episode_steps)
        return gym_task_env(
            make, task_id, self.num_tasks, num_envs, seed, self.max_episode_steps,
            reads_success=True,
        )


@gin.configurable
class MetaWorldMT10(MetaWorldTasks):
    """Meta-World MT10: the 10 v3 tasks of the PiCor paper's Table 1 (reach ... window-close)."""

    benchmark = "MT10"


@gin.configurable
class MetaWorldMT50(MetaWorldTasks):
    """Meta-World MT50: all 50 v3 tasks (goal drawing takes ~30 s once per process)."""

    benchmark = "MT50"


# --- Any gymnasium ids, and the HalfCheetah task group built on it ---------------------------


@gin.configurable
class GymTasks(TaskSet):
    """Tasks from gymnasium ids, so users bring their own benchmark.

    Every task must share the observation and action shapes; bounded Box actions are rescaled
    to [-1, 1]. No normalized score and no success flag.

    Args:
        env_ids: one gymnasium id per task, e.g. ["HalfCheetah-v5", "HalfCheetah-v5"].
        make_kwargs: optional keyword arguments of `gymnasium.make`, one dict per task
            (e.g. {"xml_file": ...} or {"forward_reward_weight": 2.0}).
        max_episode_steps: time limit of every task; None takes each id's registered limit.
        names: task names; None uses the ids, which then must be distinct.
    """

    def __init__(
        self,
        env_ids: Sequence[str] = gin.REQUIRED,
        make_kwargs: Sequence[Mapping[str, Any]] | None = None,
        max_episode_steps: int | None = None,
        names: Sequence[str] | None = None,
    ):
        owner = type(self).__name__
        env_ids = list(env_ids)
        if not env_ids:
            raise ValueError(f"{owner}.env_ids must name at least one task")
        make_kwargs = [{}] * len(env_ids) if make_kwargs is None else list(make_kwargs)
        names = list(env_ids if names is None else names)
        for what, values in [("make_kwargs", make_kwargs), ("names", names)]:
            if len(values) != len(env_ids):
                raise ValueError(
                    f"{owner}.{what} has {len(values)} entries for {len(env_ids)} env_ids"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"{owner}: task names must be distinct, got {names}; pass names=")
        if max_episode_steps is not None:
            _check_episode_steps(owner, max_episode_steps)
        self.names = names
        self._makes = [
            functools.partial(
                gym.make, env_id, max_episode_steps=max_episode_steps,
                disable_env_checker=True, **kwargs,
            )
            for env_id, kwargs in zip(env_ids, make_kwargs)
        ]
        self._episode_steps = self._check_tasks(owner)
        self.max_episode_steps = max(self._episode_steps)

    def _check_tasks(self, owner: str) -> list[int]:
        """Builds each task once: shapes must agree; returns each task's time limit."""
        shapes, limits = [], []
        for name, make in zip(self.names, self._makes):
            try:
                env = make()
            except gym.error.Error as error:  # e.g. an unknown or misspelt id
                raise ValueError(f"{owner}: task {name!r}: {error}") from error
            obs = _flat_box_shape(env.observation_space, f"{name!r} observation")
            action = _flat_box_shape(env.action_space, f"{name!r} action")
            limit = env.spec.max_episode_steps if env.spec is not None else None
            env.close()
            if limit is None:
                raise ValueError(f"{owner}: task {name!r} has no time limit; set max_episode_steps")
            shapes.append((obs, action))
            limits.append(limit)
        for z, (obs, action) in enumerate(shapes):
            for what, got, want in [
                ("observation", obs, shapes[0][0]), ("action", action, shapes[0][1])
            ]:
                if got != want:
                    raise ValueError(
                        f"{owner}: task {z} {self.names[z]!r} has {what} shape {got} but task 0 "
                        f"{self.names[0]!r} has {want}; all tasks must share their shapes"
                    )
        return limits

    def make_env(self, task_id: int, num_envs: int = 1, seed: int = 0) -> EnvBase:
        return gym_task_env(
            self._makes[task_id], task_id, self.num_tasks, num_envs, seed,
            self._episode_steps[task_id],
        )


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
        path.parent.mkdir(parents=True, exist_ok=True)
        partial_path = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial_path.write_text(text)
        os.replace(partial_path, path)  # atomic: a concurrent reader never sees half a file
    return str(path)


@gin.configurable
class HalfCheetahGroup(GymTasks):
    """The HalfCheetah task group (DESIGN.md section 4): one body part scaled per task.

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
