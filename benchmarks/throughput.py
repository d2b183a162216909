"""Throughput of picor-gin on this machine: collection, updates, and both together.

    python benchmarks/throughput.py [--configs tiny_picor tiny_mtsac] [--updates 300] [--rounds 3]
                                    [--compiled] [--ddp_env_steps 3000]

For each gin config it prints env steps per second of collection alone (the current policy
acting), updates per second of `training_step` alone (Lightning's manual optimization, batches
already sampled), updates per second of the plain-torch SAC loop of benchmarks/plain_sac.py with
the config's observation and action sizes, task count, hidden sizes and batch size, their ratio,
and iterations per second of the whole loop (collect, sample, update). For a config with a
correction phase it adds the updates per second of the same module with the phase off (the
ablation Cor X, `MultiTaskLearner.correction = None`) on the same batches, their ratio (the correction's
cost), and the share of updates whose correction was active.

`--compiled` adds the updates per second of `training_step` with `MultiTaskLearner.compile_mode = 'default'`
on the same batches (compilation happens in the untimed warm-up updates). `--ddp_env_steps N`
adds whole runs of N global env steps through launch/run.py with 1 and with 2 DDP processes on
the CPU, and their env steps per second from summary.json (warm-up and evaluation included).

The ratio is the framework's overhead only where the framework's update is plain SAC's: the SAC
backbone on plain MLPs, without the correction (`MultiTaskLearner.correction = None`) or gradient
surgery (the MTSAC configs); it should be at least 0.8 there. Elsewhere the framework does
other or more work, and the ratio is marked `*`.

All sides run in one process, so they share torch's thread count (`--threads`), and they
alternate: plain, framework, correction off, plain, ... for `--rounds` rounds of `--updates` timed
updates each. Load from other processes only ever slows a round down, so each side's figure is
its fastest round (as `timeit` does), and alternation gives every side the same chance of a
quiet round.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gin
import lightning as L
import torch
from torch import nn
from torchrl.modules import MLP

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import picor_gin  # noqa: E402,F401
from benchmarks import plain_sac  # noqa: E402
from picor_gin.backbones import SAC  # noqa: E402
from picor_gin.data import Batch  # noqa: E402
from picor_gin.run.experiment import Experiment  # noqa: E402
from picor_gin.learner import MultiTaskLearner  # noqa: E402

RATIO = "training_step / plain"
CORRECTION_RATIO = "with / without correction"


class _Timer(L.Callback):
    """Wall time of the training steps only, after a few warm-up steps."""

    def __init__(self, skip: int = 20):
        self.skip, self.count, self.seconds = skip, 0, 0.0

    def on_train_batch_start(self, *args) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        self.count += 1
        if self.count > self.skip:
            self.seconds += time.perf_counter() - self._start

    @property
    def per_second(self) -> float:
        return (self.count - self.skip) / self.seconds


class _LoopTimer(L.Callback):
    """Wall time of the training loop (collect, sample, update), without setup and teardown:
    shutting down parallel env workers takes seconds once per run and is not a per-iteration cost."""

    def on_train_start(self, *args) -> None:
        self._start = time.perf_counter()

    def on_train_end(self, *args) -> None:
        self.seconds = time.perf_counter() - self._start


def _trainer(*callbacks: L.Callback) -> L.Trainer:
    return L.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
    )


def _framework_rate(module: MultiTaskLearner, batches: list[Batch], warmup: int) -> float:
    """Updates per second of `training_step` on `batches`, the first `warmup` not timed."""
    timer = _Timer(skip=warmup)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
    _trainer(timer).fit(module, train_dataloaders=loader)
    return timer.per_second


def plain_sizes(module: MultiTaskLearner, batch: Batch) -> dict[str, Any]:
    """The arguments of `plain_sac.updates_per_second` that give it the framework's shapes."""
    widths = [m.out_features for m in module.backbone.actor.modules() if isinstance(m, nn.Linear)]
    return {
        "obs_dim": batch.task["observation"].shape[-1],
        "action_dim": batch.task["action"].shape[-1],
        "num_tasks": module.num_tasks,
        "hidden_sizes": widths[:-1],
        "batch_size": batch.task.shape[0],
    }


def _counting_active(module: MultiTaskLearner) -> list[int]:
    """[active, all]: how many of the module's correction phases moved the actor, from here on."""
    counts, solve = [0, 0], module.correction.solver.solve

    def counted(problem, steps):
        terms, moved = solve(problem, steps)
        counts[0] += int(moved)
        counts[1] += 1
        return terms, moved

    module.correction.solver.solve = counted
    return counts


def side_by_side(
    module: MultiTaskLearner, batches: list[Batch], rounds: int, warmup: int, without_correction: MultiTaskLearner | None = None
) -> dict[str, float]:
    """Updates per second of plain SAC, the framework and (if given) the framework without its
    correction phase, on the same batches: each the fastest of `rounds` alternating rounds."""
    sizes = plain_sizes(module, batches[0])
    updates = len(batches) - warmup
    threads = torch.get_num_threads()
    sides = {
        "plain": lambda: plain_sac.updates_per_second(**sizes, updates=updates, warmup=warmup),
        "framework": lambda: _framework_rate(module, batches, warmup),
    }
    if without_correction is not None:
        sides["without correction"] = lambda: _framework_rate(without_correction, batches, warmup)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, rate in sides.items():
            rates[name].append(rate())
        if torch.get_num_threads() != threads:
            raise RuntimeError(f"torch threads changed from {threads} to {torch.get_num_threads()}")
    return {name: max(values) for name, values in rates.items()}


def _build(config: str, bindings: list[str]):
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([f"gin_configs/{config}.gin"], bindings, skip_unknown=False)
    with tempfile.TemporaryDirectory() as tmp:
        return Experiment().build(Path(tmp))


def ddp_env_steps_per_second(config: str, bindings: list[str], processes: int, env_steps: int) -> float:
    """Global env steps per second of a whole run of `config` with `processes` DDP processes on CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        strategy = "ddp_find_unused_parameters_true" if processes > 1 else "auto"
        command = [
            sys.executable, str(REPO / "launch" / "run.py"), f"--gin_file=gin_configs/{config}.gin",
            *(f"--gin_bindings={b}" for b in bindings),
            f"--gin_bindings=Experiment.total_env_steps = {env_steps}",
            "--gin_bindings=Trainer.accelerator = 'cpu'",
            f"--gin_bindings=Trainer.devices = {processes}",
            f"--gin_bindings=Trainer.strategy = '{strategy}'",
            f"--run_dir={tmp}/run",
        ]
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        return json.loads((Path(tmp) / "run" / "summary.json").read_text())["env_steps_per_second"]


def measure(
    config: str, bindings: list[str], updates: int, rounds: int, warmup: int, compiled: bool, ddp_env_steps: int
) -> tuple[dict[str, float], bool]:
    """The figures of one config, and whether its ratio is like for like (SAC, no correction)."""
    built = _build(config, bindings)
    data, module = built.data, built.module
    data.warm_up()

    started = time.perf_counter()
    steps_before = data.env_steps
    for iteration in range(updates):
        data.collect(data.sampler.tasks(iteration))
    collect_rate = (data.env_steps - steps_before) / (time.perf_counter() - started)

    batches = [data.sample(data.sampler.tasks(i)) for i in range(warmup + updates)]
    without_correction = None
    if module.correction is not None:
        # The ablation Cor X: the same module and batches with the correction phase off.
        without_correction = MultiTaskLearner(
            obs_dim=batches[0].task["observation"].shape[-1],
            action_dim=batches[0].task["action"].shape[-1],
            num_tasks=module.num_tasks,
            task_names=module.task_names,
            log_every_updates=module.log_every_updates,
            correction=None,
        )
        without_correction.backbone.load_state_dict(module.backbone.state_dict())
        active = _counting_active(module)
    rates = side_by_side(module, batches, rounds, warmup, without_correction)
    framework, plain = rates["framework"], rates["plain"]
    figures_compiled = {}
    if compiled:
        compiled_module = _build(config, [*bindings, "MultiTaskLearner.compile_mode = 'default'"]).module
        compiled_module.load_state_dict(module.state_dict())
        rate = max(_framework_rate(compiled_module, batches, warmup) for _ in range(rounds))
        figures_compiled = {"updates/s (compiled)": rate, "compiled / eager": rate / framework}

    # The whole loop: collection, sampling and the update, through the real stream.
    data.total_env_steps = data.env_steps + updates * data.envs_per_task * data.sampler.tasks_per_iteration
    loop_timer = _LoopTimer()
    _trainer(loop_timer).fit(module, datamodule=data)
    loop_rate = updates / loop_timer.seconds
    figures = {
        "env_steps/s (collect)": collect_rate,
        "updates/s (training_step)": framework,
        "updates/s (plain SAC)": plain,
        RATIO: framework / plain,
        **(
            {
                "updates/s (correction off)": rates["without correction"],
                CORRECTION_RATIO: framework / rates["without correction"],
                "correction active share": active[0] / active[1],
            }
            if without_correction is not None
            else {}
        ),
        "iterations/s (whole loop)": loop_rate,
        **figures_compiled,
    }
    if ddp_env_steps:
        for processes in (1, 2):
            figures[f"env_steps/s (run, {processes} process{'es' if processes > 1 else ''})"] = (
                ddp_env_steps_per_second(config, bindings, processes, ddp_env_steps)
            )
    plain_update = module.correction is None and not module.gradient_surgery.splits_tasks
    plain_network = isinstance(module.backbone.actor[0], MLP)  # OneHotMLP's torso, as plain SAC's
    return figures, isinstance(module.backbone, SAC) and plain_update and plain_network


def table(rows: dict[str, tuple[dict[str, float], bool]]) -> str:
    """Markdown table of `measure`'s figures; a ratio that is not like for like gets a `*`."""
    columns = list(dict.fromkeys(c for figures, _ in rows.values() for c in figures))
    lines = ["| config | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for config, (figures, like_for_like) in rows.items():
        cells = [
            "-" if c not in figures else f"{figures[c]:.2f}" if "/ " in c or "share" in c else f"{figures[c]:.1f}"
            for c in columns
        ]
        if not like_for_like:
            cells[columns.index(RATIO)] += "*"
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    if not all(like_for_like for _, like_for_like in rows.values()):
        lines.append(
            "\n* not like for like: the framework's update runs the correction phase "
            "(MultiTaskLearner.correction), gradient surgery, a backbone other than SAC or a network "
            "other than plain MLPs, so this ratio is not "
            "its overhead; the 0.8 target is for MTSAC configs."
        )
    if CORRECTION_RATIO in columns:
        lines.append(
            f"\n{CORRECTION_RATIO}: the correction's cost, the update's rate over the same module's "
            "with the correction phase off (Cor X) on the same batches; >= 0.75 asked. The active "
            "share is of these updates, whose batches come from the warm-up's random policy."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny_picor", "tiny_mtsac"])
    parser.add_argument("--gin_bindings", nargs="+", action="extend", default=[], help="'X.y = v' applied after each config")
    parser.add_argument("--updates", type=int, default=300, help="timed updates per figure and round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating plain/framework rounds")
    parser.add_argument("--warmup", type=int, default=20, help="untimed updates before each round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compiled", action="store_true", help="also time the compiled update")
    parser.add_argument("--ddp_env_steps", type=int, default=0,
                        help="also run N global env steps with 1 and 2 DDP processes (0: skip)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    rows = {
        config: measure(
            config, args.gin_bindings, args.updates, args.rounds, args.warmup, args.compiled, args.ddp_env_steps
        )
        for config in args.configs
    }
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads for every side, "
        f"{args.updates} updates per figure, best of {args.rounds} alternating rounds"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
