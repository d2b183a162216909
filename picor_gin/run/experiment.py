"""The Experiment: builds every component from gin, runs Lightning, writes the run folder
(docs/running.md, the run contract: config.gin, TensorBoard events, checkpoints/, eval.jsonl, summary.json)."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import gin
import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from picor_gin.run import externals
from picor_gin.run.callbacks import EnvStepCheckpoint, LogFileProgress, PeriodicEvaluation, ThroughputMonitor
from picor_gin.run.files import replace_text
from picor_gin.data import MultiTaskData, TaskEnvData
from picor_gin.learner import MultiTaskLearner
from picor_gin.tasks import TaskSet


@dataclasses.dataclass
class Run:
    """Everything one run is made of, built before anything is written to disk."""

    module: MultiTaskLearner
    data: TaskEnvData
    trainer: L.Trainer
    evaluation: PeriodicEvaluation
    checkpoint: EnvStepCheckpoint
    monitor: ThroughputMonitor


@gin.configurable
class Experiment:
    """What every run has (docs/running.md, the run contract).

    Args:
        task_set: the benchmark (a TaskSet instance, e.g. `@PointGoals()`).
        name: experiment name; the default run folder is runs/<name>/<time>-seed<seed>.
        seed: seeds networks, envs, the task sampler and evaluation.
        total_env_steps: global environment steps of the run, warm-up included.
        eval_every_env_steps: evaluation interval (also evaluated at the end).
        eval_episodes: episodes per task and evaluation.
        checkpoint_every_env_steps: checkpoint interval (also saved at the end); in an offline
            stage (KTM-DRL's), every as many updates and at the stage's end.
        log_every_updates: interval of the training metrics and progress bar.
        data: the data path's factory: `MultiTaskData` (replay, for SAC and TD3) or
            `RolloutData` (the current policy's rollouts, for an on-policy backbone: PPO).
    """

    def __init__(
        self,
        task_set: TaskSet = gin.REQUIRED,
        name: str = "picor",
        seed: int = 0,
        total_env_steps: int = 100_000,
        eval_every_env_steps: int = 10_000,
        eval_episodes: int = 10,
        checkpoint_every_env_steps: int = 50_000,
        log_every_updates: int = 100,
        data: Callable[..., TaskEnvData] = MultiTaskData,
    ):
        for param, value in [
            ("total_env_steps", total_env_steps),
            ("eval_every_env_steps", eval_every_env_steps),
            ("eval_episodes", eval_episodes),
            ("checkpoint_every_env_steps", checkpoint_every_env_steps),
            ("log_every_updates", log_every_updates),
        ]:
            if value < 1:
                raise ValueError(f"Experiment.{param} must be >= 1, got {value}")
        if not 0 <= seed < 2**31:  # NumPy takes seeds below 2**32, and the run adds offsets to it
            raise ValueError(f"Experiment.seed must be in [0, 2**31), got {seed}")
        self.task_set = task_set
        self.name = name
        self.seed = seed
        self.total_env_steps = total_env_steps
        self.eval_every_env_steps = eval_every_env_steps
        self.eval_episodes = eval_episodes
        self.checkpoint_every_env_steps = checkpoint_every_env_steps
        self.log_every_updates = log_every_updates
        self.data = data

    def default_run_dir(self) -> Path:
        return Path("runs") / self.name / f"{time.strftime('%Y%m%d-%H%M%S')}-seed{self.seed}"

    def build(self, run_dir: Path, resumed_env_steps: int | None = None, completed_epochs: int = 0) -> Run:
        """Builds every component (raising ValueError on bad settings) without touching disk.

        Args:
            resumed_env_steps: env steps of the checkpoint a resumed run starts from; TensorBoard
                hides what the interrupted run logged after it, so no step appears twice.
            completed_epochs: Lightning epochs the checkpoint had finished: 1 when it is the end
                of a run, which a larger `total_env_steps` then extends by one more epoch.
        """
        purge = {} if resumed_env_steps is None else {"purge_step": resumed_env_steps + 1}
        L.seed_everything(self.seed, verbose=False)
        probe = self.task_set.make_env(0)
        obs_dim = probe.observation_spec["observation"].shape[-1]
        action_dim = probe.action_spec.shape[-1]
        probe.close()
        module = MultiTaskLearner(
            obs_dim=obs_dim,
            action_dim=action_dim,
            num_tasks=self.task_set.num_tasks,
            task_names=self.task_set.names,
            log_every_updates=self.log_every_updates,
        )
        network, entries = module.network, self.task_set.task_id_entries
        if network is not None and network.reads_task_id and entries != list(range(-len(entries), 0)):
            raise ValueError(
                f"MultiTaskLearner.network = @{type(network).__name__}() reads the task id from the observation's "
                f"last {len(entries)} entries, one per task in order, but this task set's ids sit at entries "
                f"{entries} from its end (TaskSubset keeps its full set's one-hot id): bind "
                "MultiTaskLearner.network = @OneHotMLP()"
            )
        module.objective.setup(module.backbone, self.task_set, self.seed, obs_dim, action_dim)
        # Lightning builds the optimizers inside fit; building them once here checks their
        # bindings before anything is written and records them in the operative config.
        module.configure_optimizers()
        advantage = module.backbone.advantage_estimator()
        on_policy = advantage is not None
        if on_policy != self.data.on_policy:
            backbone, data_name = type(module.backbone).__name__, self.data.__name__
            raise ValueError(
                f"{backbone} learns from its own policy's rollouts: bind Experiment.data = @RolloutData"
                if on_policy else
                f"Experiment.data = {data_name} feeds an on-policy backbone (PPO), and {backbone} learns from "
                "replay: bind Experiment.data = @MultiTaskData"
            )
        data = self.data(
            task_set=self.task_set,
            policy=module.policy,
            seed=self.seed,
            total_env_steps=self.total_env_steps,
            offline_updates=module.objective.offline_updates,
            offline_replay=module.objective.offline_replay,
            **({"advantage_module": advantage} if on_policy else {}),
        )
        module.gradient_surgery.check(self.task_set.num_tasks)
        if module.gradient_surgery.splits_tasks and data.sampler.tasks_per_iteration < 2:
            raise ValueError(
                f"MultiTaskLearner.gradient_surgery = {type(module.gradient_surgery).__name__} combines the "
                f"gradients of the tasks in a batch, but {type(data.sampler).__name__} puts one task "
                f"in each batch; bind {type(data).__name__}.sampler = @AllTasks"
            )
        if module.gradient_surgery.splits_tasks and data.critic_on_every_task:
            raise ValueError(
                "MultiTaskLearner.gradient_surgery combines per-task gradients of one batch and cannot take a "
                "separate critic batch; with the AllTasks sampler every batch already holds every "
                "task: leave MultiTaskData.critic_on_every_task = False"
            )
        evaluation = PeriodicEvaluation(
            self.task_set, self.eval_every_env_steps, self.eval_episodes,
            seed=self.seed + 10_000, path=run_dir / "eval.jsonl",
        )
        checkpoint = EnvStepCheckpoint(run_dir / "checkpoints", self.checkpoint_every_env_steps)
        monitor = ThroughputMonitor(self.log_every_updates)
        callbacks: list[L.Callback] = [evaluation, checkpoint, monitor]
        terminal = sys.stdout.isatty()
        if not terminal:  # a log file: a line a minute, not the bar's line per update
            callbacks.append(LogFileProgress(evaluation))
        trainer = externals.Trainer(
            max_epochs=completed_epochs + 1,  # the whole run is one epoch of the replay stream
            logger=TensorBoardLogger(
                save_dir=str(run_dir), name="", version="", default_hp_metric=False, **purge
            ),
            callbacks=callbacks,
            default_root_dir=str(run_dir),
            enable_checkpointing=False,
            enable_progress_bar=terminal,
            enable_model_summary=False,  # rich's table bypasses logging and fills each log file
        )
        externals.check_strategy(trainer.strategy)
        externals.check_nodes(trainer)
        warmup_env_steps = data.warmup_env_steps_per_task * self.task_set.num_tasks * trainer.world_size
        if self.total_env_steps <= warmup_env_steps:
            raise ValueError(
                f"Experiment.total_env_steps = {self.total_env_steps} leaves nothing to learn: the "
                f"warm-up alone takes {warmup_env_steps} (MultiTaskData.warmup_env_steps_per_task = "
                f"{data.warmup_env_steps_per_task} x {self.task_set.num_tasks} tasks x "
                f"{trainer.world_size} process(es))"
            )
        return Run(module, data, trainer, evaluation, checkpoint, monitor)

    def run(self, built: Run, run_dir: Path, resume_from: Path | None = None) -> dict[str, Any]:
        """Trains to `total_env_steps`, writing the run folder; returns summary.json's content."""
        config = gin.operative_config_str()
        if built.trainer.is_global_zero:  # DDP workers parse it as they start: one writer
            replace_text(run_dir / "config.gin", config)
        built.trainer.logger.experiment.add_text("config", "```\n" + config + "\n```")
        built.trainer.fit(built.module, datamodule=built.data, ckpt_path=resume_from)
        summary = {
            **built.evaluation.summary(), **built.monitor.totals(built.trainer), **built.module.objective.summary()
        }
        if built.trainer.world_size > 1:
            summary["process_parameter_checksums"] = built.module.process_checksums
        if built.trainer.is_global_zero:
            replace_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")  # it marks the run finished
        return summary
