"""Lightning callbacks keyed on global environment steps: evaluation, checkpoints, monitoring."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import gin
import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from picor_gin.checkpoint_files import (
    WRITING, CheckpointWriteError, checkpoint_path, digest_path, has_checkpoint, promote, write_digest,
)
from picor_gin.data import OFFLINE, Batch, TaskEnvData
from picor_gin.run.evaluation import evaluate, headline_metric
from picor_gin.run.files import replace_text
from picor_gin.run.forgetting import forgetting_history, forgetting_step, mean_over_tasks
from picor_gin.tasks import TaskSet


def _env_steps(trainer: L.Trainer) -> int:
    data: TaskEnvData = trainer.datamodule
    return data.env_steps


def _non_finite_entry(pl_module: L.LightningModule) -> str | None:
    """The name of the first state entry (parameter or buffer) holding a nan or inf, or None.
    DDP keeps the entries alike on every process, so every process finds the same one."""
    for name, value in pl_module.state_dict().items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            return name
    return None


def _ends_offline_stage(trainer: L.Trainer, batch: Batch) -> bool:
    data: TaskEnvData = trainer.datamodule
    return batch.stage == OFFLINE and data.offline_done == data.offline_updates


class PeriodicEvaluation(L.Callback):
    """Evaluates every `every_env_steps`, at the end of an offline stage (the row of env step 0)
    and at the end; appends rows to eval.jsonl (rank 0), each with the per-task "forgetting"
    since the task's best evaluation and their "mean_forgetting"."""

    def __init__(self, task_set: TaskSet, every_env_steps: int, episodes: int, seed: int, path: Path):
        self.task_set = task_set
        self.every_env_steps = every_env_steps
        self.episodes = episodes
        self.seed = seed
        self.path = Path(path)
        self.last_env_steps = -1
        self.last_row: dict[str, Any] | None = None
        self.bests: dict[str, float] = {}  # each task's best headline metric so far
        self.mean_forgettings: list[float] = []  # one per row of eval.jsonl
        self.writes_run_folder = True

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.writes_run_folder = trainer.is_global_zero  # before a resume restores the state below

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Batch, batch_idx: int
    ) -> None:
        due = _env_steps(trainer) // self.every_env_steps > max(self.last_env_steps, 0) // self.every_env_steps
        if (due and trainer.datamodule.collection_trained) or _ends_offline_stage(trainer, batch):
            row = self._evaluate(trainer, pl_module)
            if row is not None:
                headline = row[f"mean_{headline_metric(row)}"]
                pl_module.log("eval", headline, prog_bar=True, logger=False, rank_zero_only=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if _env_steps(trainer) != self.last_env_steps:
            self._evaluate(trainer, pl_module)

    def _evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any] | None:
        """Raises FloatingPointError on a diverged state, before a row of nan returns reaches
        eval.jsonl (the training metrics catch it too, but only every `log_every_updates`)."""
        env_steps = _env_steps(trainer)
        self.last_env_steps = env_steps
        diverged = _non_finite_entry(pl_module)
        if diverged is not None:
            raise FloatingPointError(f"non-finite {diverged} at the evaluation of env step {env_steps}")
        if not trainer.is_global_zero:
            return None
        row = {"env_steps": env_steps, **evaluate(pl_module.policy, self.task_set, self.episodes, self.seed)}
        row["forgetting"], self.bests = forgetting_step(self.bests, row)
        row["mean_forgetting"] = mean_over_tasks(row["forgetting"])
        self.mean_forgettings.append(row["mean_forgetting"])
        self.last_row = row
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        metrics = {}
        for name, result in row["tasks"].items():
            metrics.update({f"eval/{k}/{name}": v for k, v in result.items() if v is not None})
        metrics.update({f"eval/forgetting/{name}": value for name, value in row["forgetting"].items()})
        keys = ("mean_return", "mean_success", "mean_score", "mean_forgetting")
        metrics.update({f"eval/{k}": row[k] for k in keys if row[k] is not None})
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=env_steps)
        return row

    def summary(self) -> dict[str, Any]:
        """summary.json's evaluation part: the last row and "average_forgetting", the mean of
        "mean_forgetting" over all the run's evaluations (empty on ranks that do not evaluate)."""
        if self.last_row is None:
            return {}
        return {**self.last_row, "average_forgetting": sum(self.mean_forgettings) / len(self.mean_forgettings)}

    def state_dict(self) -> dict[str, Any]:
        return {"last_env_steps": self.last_env_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume, drops rows written after the checkpoint (they will be evaluated again) and
        rebuilds the per-task bests from the kept ones, so forgetting goes on from them."""
        self.last_env_steps = state_dict["last_env_steps"]
        if self.writes_run_folder and self.path.exists():
            # A row is one write ending in a newline: a line without one was cut off (a full disk).
            lines = [line for line in self.path.read_text().splitlines(keepends=True) if line.endswith("\n")]
            rows = [json.loads(line) for line in lines]
            kept = [row for row in rows if row["env_steps"] <= self.last_env_steps]
            replace_text(self.path, "".join(json.dumps(row) + "\n" for row in kept))
            history, self.bests = forgetting_history(kept)
            self.mean_forgettings = [mean_over_tasks(forgetting) for forgetting in history]
            # A resume that adds no env step evaluates nothing: the summary is the kept last row's.
            self.last_row = kept[-1] if kept else None


class EnvStepCheckpoint(L.Callback):
    """Writes a checkpoint (model, optimizers, replay buffers; under DDP every process's) every
    N env steps, at the end and on SIGTERM/SIGINT, keeping the last two (checkpoint_files.py).
    Each is written to a temporary file, its SHA-256 beside it, then renamed, so a crash or a
    full disk mid-save keeps the older ones. Any other failure keeps them as they are and
    writes `failed.ckpt`."""

    def __init__(self, dirpath: Path, every_env_steps: int):
        self.dirpath = Path(dirpath)
        self.every_env_steps = every_env_steps
        self.saved_env_steps = 0
        self.updates_at_start: int | None = None  # None until fit starts training

    @property
    def last_path(self) -> Path:
        return checkpoint_path(self.dirpath)

    def kept(self) -> str:
        """What a failure leaves to resume from, for its error message."""
        if not has_checkpoint(self.dirpath):
            return "no checkpoint was written before it"
        return f"{self.last_path.name} keeps env step {self.saved_env_steps}"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Every process writes into rank 0's folder, where a resume reads every process's file:
        on a cluster, process r starts in a folder of its own."""
        self.dirpath = Path(trainer.strategy.broadcast(str(self.dirpath)))

    def save(self, trainer: L.Trainer) -> None:
        """Replaces the last checkpoint, which therefore only ever holds a finite state.

        Raises:
            CheckpointWriteError: a file could not be written on some process (the disk is
                full); every process's last two checkpoints are left as they were.
        """
        diverged = _non_finite_entry(trainer.lightning_module)
        if diverged is not None:
            raise FloatingPointError(f"non-finite {diverged} at env step {_env_steps(trainer)}; {self.kept()}")
        rank = trainer.global_rank
        written = checkpoint_path(self.dirpath, WRITING, rank)
        problem = None
        if rank > 0:  # this process's replay buffers; rank 0's go into Lightning's file
            try:
                datamodule = trainer.datamodule  # keyed as Lightning keys rank 0's
                torch.save({type(datamodule).__qualname__: datamodule.state_dict()}, written)
            except (OSError, RuntimeError) as error:  # torch.save's full disk is a RuntimeError
                problem = error
        try:
            # Every process enters it, rank 0 writes, then all meet at its barrier. The full
            # state (optimizers, buffers), said so: no notice.
            trainer.save_checkpoint(checkpoint_path(self.dirpath, WRITING), weights_only=False)
        except OSError as error:
            problem = error
            trainer.strategy.barrier()  # rank 0 failed before the barrier the others wait in
        if problem is None:
            try:
                write_digest(written)
            except OSError as error:
                problem = error
        if not trainer.strategy.reduce_boolean_decision(problem is None, all=True):
            written.unlink(missing_ok=True)
            digest_path(written).unlink(missing_ok=True)
            raise CheckpointWriteError(
                f"could not write the checkpoint of env step {_env_steps(trainer)} in {self.dirpath} "
                f"({problem or 'failed on another process'}); {self.kept()}: free space and --resume"
            )
        promote(written, self.dirpath, rank)
        self.saved_env_steps = _env_steps(trainer)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Batch, batch_idx: int
    ) -> None:
        if batch.stage == OFFLINE:  # no env steps yet: counted in updates
            due = trainer.datamodule.offline_done % self.every_env_steps == 0 or _ends_offline_stage(trainer, batch)
        else:
            due = (_env_steps(trainer) - self.saved_env_steps >= self.every_env_steps
                   and trainer.datamodule.collection_trained)
        if due:
            self.save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.updates_at_start = pl_module.updates  # after a resume restored them

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            self.save(trainer)  # interrupted, not broken: resume from here
        elif self.updates_at_start not in (None, pl_module.updates) and not isinstance(exception, CheckpointWriteError):
            # The state may be non-finite: keep the last periodic checkpoint as it is and write the
            # failing state beside it for post-mortems. Not when the disk is full, nor when this
            # attempt made no update: its state is the checkpoint it started from.
            trainer.save_checkpoint(self.dirpath / "failed.ckpt")

    def state_dict(self) -> dict[str, Any]:
        return {"saved_env_steps": self.saved_env_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.saved_env_steps = state_dict["saved_env_steps"]


class ThroughputMonitor(L.Callback):
    """Logs env steps and updates per second, recent training returns and the progress bar;
    `updated` tells whether this fit has made an update (failing before it is bad input)."""

    def __init__(self, log_every_updates: int):
        self.log_every_updates = log_every_updates
        self.updated = False
        self._last: tuple[float, int, int] | None = None
        self._start: tuple[float, int, int] = (time.perf_counter(), 0, 0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After a resume the counters start where the checkpoint left them.
        self._start = (time.perf_counter(), _env_steps(trainer), pl_module.updates)

    def totals(self, trainer: L.Trainer) -> dict[str, float]:
        """Wall time and throughput of this process's fit, for summary.json."""
        wall_time = time.perf_counter() - self._start[0]
        updates = trainer.lightning_module.updates
        return {
            "wall_time_s": wall_time,
            "total_env_steps": _env_steps(trainer),
            "updates": updates,
            "env_steps_per_second": (_env_steps(trainer) - self._start[1]) / wall_time,
            "updates_per_second": (updates - self._start[2]) / wall_time,
        }

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.updated = True
        updates = pl_module.updates  # the module counts its own updates, resumed ones included
        if updates % self.log_every_updates:
            return
        data: TaskEnvData = trainer.datamodule
        now = time.perf_counter()
        metrics: dict[str, float] = {}
        if self._last is not None:
            seconds = now - self._last[0]
            metrics["time/env_steps_per_second"] = (data.env_steps - self._last[1]) / seconds
            metrics["time/updates_per_second"] = (updates - self._last[2]) / seconds
        self._last = (now, data.env_steps, updates)
        for name, returns in zip(data.task_set.names, data.recent_returns):
            if returns:
                metrics[f"train/episode_return/{name}"] = sum(returns) / len(returns)
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=data.env_steps)
        pl_module.log("env_steps", float(data.env_steps), prog_bar=True, logger=False)
        mean_return = data.mean_recent_return()
        if mean_return is not None:
            pl_module.log("return", mean_return, prog_bar=True, logger=False)


class WarnAfterFirstUpdate(L.Callback):
    """Prints `lines` to stderr once the run has made its first update (rank 0): a run refused
    before it (exit 2) keeps its error to one line."""

    def __init__(self, lines: list[str]):
        self.lines = lines

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.lines and trainer.is_global_zero:
            print("\n".join(self.lines), file=sys.stderr)
        self.lines = []


def _duration(seconds: float) -> str:
    """h:mm:ss."""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


@gin.configurable(denylist=["evaluation"])
class LogFileProgress(L.Callback):
    """The progress bar's stand-in when stdout is a file (a cluster job's log): one line every
    `every_seconds` with env steps, updates per second, the latest evaluation and the ETA, where
    the bar would write a line per update (~1 MB for a 5k-step tiny run)."""

    def __init__(self, evaluation: PeriodicEvaluation, every_seconds: float = 60.0):
        if not every_seconds > 0:
            raise ValueError(f"LogFileProgress.every_seconds must be > 0, got {every_seconds}")
        self.evaluation = evaluation
        self.every_seconds = every_seconds
        self._start: tuple[float, int, int] | None = None
        self._last = (0.0, 0, 0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.is_global_zero:
            return
        if self._start is None:  # the first update: warm-up is over, rates count from here
            self._start = self._last = (time.perf_counter(), _env_steps(trainer), pl_module.updates)
        elif time.perf_counter() - self._last[0] >= self.every_seconds:
            self._print(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self._start is not None:
            self._print(trainer, pl_module)

    def _print(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now, env_steps, updates = time.perf_counter(), _env_steps(trainer), pl_module.updates
        data: TaskEnvData = trainer.datamodule
        total = data.total_env_steps
        parts = [f"env steps {env_steps:,}/{total:,} ({100 * env_steps / total:.1f}%)"]
        if data.offline_updates and not env_steps:
            parts.insert(0, f"offline updates {data.offline_done:,}/{data.offline_updates:,}")
        if now > self._last[0]:
            parts.append(f"{(updates - self._last[2]) / (now - self._last[0]):.1f} updates/s")
        row = self.evaluation.last_row
        if row is not None:
            metric = headline_metric(row)
            parts.append(f"eval mean_{metric} {row[f'mean_{metric}']:.3f} at {row['env_steps']:,}")
        rate = (env_steps - self._start[1]) / max(now - self._start[0], 1e-9)
        if rate > 0 and env_steps < total:  # env steps per second since warm-up, evaluations included
            parts.append(f"ETA {_duration((total - env_steps) / rate)}")
        print(" | ".join(parts), flush=True)
        self._last = (now, env_steps, updates)
