"""Throughput of picor-gin on this machine: collection, updates, and both together.

    python benchmarks/throughput.py [--configs tiny_picor tiny_mtsac] [--updates 300]

For each gin config it prints env steps per second of collection alone (the current policy
acting), updates per second of `training_step` alone (Lightning's manual optimization, batches
already sampled), and iterations per second of the whole loop (collect, sample, update).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import gin
import lightning as L
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import picor_gin  # noqa: E402,F401
from picor_gin.experiment import Experiment  # noqa: E402


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


def measure(config: str, updates: int) -> dict[str, float]:
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([f"gin_configs/{config}.gin"], [], skip_unknown=False)
    experiment = Experiment()
    with tempfile.TemporaryDirectory() as tmp:
        built = experiment.build(Path(tmp))
    data, module = built.data, built.module
    data.warm_up()

    started = time.perf_counter()
    steps_before = data.env_steps
    for iteration in range(updates):
        data.collect(iteration % data.task_set.num_tasks)
    collect_rate = (data.env_steps - steps_before) / (time.perf_counter() - started)

    batches = [data.sample(data.sampler.tasks(i)) for i in range(updates)]
    timer = _Timer()
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b))

    # The whole loop: collection, sampling and the update, through the real stream.
    data.total_env_steps = data.env_steps + updates * data.envs_per_task
    loop_timer = _Timer()
    loop = L.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[loop_timer],
    )
    started = time.perf_counter()
    loop.fit(module, datamodule=data)
    loop_rate = updates / (time.perf_counter() - started)
    return {"env_steps/s (collect)": collect_rate, "updates/s (training_step)": timer.per_second,
            "iterations/s (whole loop)": loop_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["tiny_picor", "tiny_mtsac"])
    parser.add_argument("--updates", type=int, default=300)
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    rows = {config: measure(config, args.updates) for config in args.configs}
    columns = list(next(iter(rows.values())))
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {args.updates} updates per figure")
    print("| config | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for config, figures in rows.items():
        print(f"| {config} | " + " | ".join(f"{figures[c]:.1f}" for c in columns) + " |")


if __name__ == "__main__":
    main()
