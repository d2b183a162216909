"""Soak benchmark: does a long run keep its memory and its speed once its replay buffers are full?

    python benchmarks/soak.py [--tiny_env_steps 50_000] [--mt10_env_steps 4_000] [--out FILE]

Runs the shipped configs in-process (tiny_picor, mt10_picor) with a replay capacity small enough
that the buffers fill early, samples resident memory and updates per second every few thousand
env steps, and checks the two promises of a week-long run: after the buffers are full, memory
grows by less than 5% and every interval's updates/s stays within 10% of the first. Then it
writes one checkpoint at MT10's full replay capacity (size, write and read time) and fills a
small file system during a checkpoint (needs root to mount a tmpfs; skipped otherwise).
Writes a Markdown report to --out (and stdout).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gin
import lightning as L
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import picor_gin  # noqa: E402,F401  (registers the configurables)
from picor_gin.checkpoint_files import CheckpointWriteError, read_checkpoint  # noqa: E402
from picor_gin.run.experiment import Experiment, Run  # noqa: E402

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def resident_mib() -> float:
    """This process's resident memory; read from /proc (Linux) as no psutil is installed."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE_BYTES / 2**20


class SoakSampler(L.Callback):
    """Every `every_env_steps`: resident memory, updates/s over the interval, buffers full?"""

    def __init__(self, every_env_steps: int):
        self.every_env_steps = every_env_steps
        self.rows: list[dict[str, Any]] = []
        self._last: tuple[float, int, int] | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        data = trainer.datamodule
        now = time.perf_counter()
        if self._last is None:
            self._last = (now, data.env_steps, pl_module.updates)
            return
        if data.env_steps - self._last[1] < self.every_env_steps:
            return
        full = all(len(b) == b.storage.max_size for b in data.buffers)
        self.rows.append({
            "env_steps": data.env_steps,
            "rss_mib": resident_mib(),
            "updates_per_s": (pl_module.updates - self._last[2]) / (now - self._last[0]),
            "buffers_full": full,
            "load": os.getloadavg()[0],  # other processes on the machine: throughput drifts with it
        })
        self._last = (now, data.env_steps, pl_module.updates)


def build(gin_file: str, bindings: list[str], run_dir: Path) -> tuple[Experiment, Run]:
    gin.clear_config()
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([str(REPO / gin_file)], bindings, skip_unknown=False)
    experiment = Experiment()
    built = experiment.build(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True)
    return experiment, built


def soak(gin_file: str, bindings: list[str], every_env_steps: int) -> tuple[list[dict[str, Any]], float]:
    with tempfile.TemporaryDirectory() as tmp:
        experiment, built = build(gin_file, bindings, Path(tmp) / "run")
        sampler = SoakSampler(every_env_steps)
        built.trainer.callbacks.append(sampler)
        start = time.perf_counter()
        experiment.run(built, Path(tmp) / "run")
        return sampler.rows, time.perf_counter() - start


def verdict(rows: list[dict[str, Any]]) -> str:
    full = [row for row in rows if row["buffers_full"]]
    if len(full) < 2:
        return "buffers full in fewer than 2 samples: no verdict"
    growth = full[-1]["rss_mib"] / full[0]["rss_mib"] - 1
    first = full[0]["updates_per_s"]
    worst = max(abs(row["updates_per_s"] / first - 1) for row in full)
    return (
        f"after the buffers are full: memory {100 * growth:+.1f}% (limit 5%: {'pass' if growth < 0.05 else 'FAIL'}); "
        f"updates/s at most {100 * worst:.1f}% from the first figure (limit 10%: {'pass' if worst <= 0.10 else 'FAIL'})"
    )


def table(title: str, rows: list[dict[str, Any]], wall_s: float) -> str:
    lines = [f"### {title} ({wall_s / 60:.1f} min)", "",
             "| env steps | resident MiB | updates/s | buffers full | load average (1 min) |", "|---:|---:|---:|:---:|---:|"]
    lines += [f"| {r['env_steps']:,} | {r['rss_mib']:.0f} | {r['updates_per_s']:.1f} | "
              f"{'yes' if r['buffers_full'] else 'no'} | {r['load']:.1f} |" for r in rows]
    return "\n".join(lines + ["", verdict(rows), ""])


def _fill_to_capacity(data: Any) -> None:
    """Fills every B_z to capacity with copies of its first transition, as a long run leaves it
    (torch.save does not compress, so the content does not change the size)."""
    for buffer in data.buffers:
        free = buffer.storage.max_size - len(buffer)
        buffer.extend(buffer.storage.get(torch.zeros(free, dtype=torch.long)))


def full_capacity_checkpoint() -> str:
    """One checkpoint of mt10_picor with every buffer at its shipped capacity (100k per task)."""
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        experiment, built = build("gin_configs/mt10_picor.gin", [
            "MultiTaskData.warmup_env_steps_per_task = 10", "Experiment.total_env_steps = 101",
            "Experiment.eval_episodes = 1",
        ], run_dir)

        class FillThenTime(L.Callback):
            def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
                _fill_to_capacity(trainer.datamodule)
                start = time.perf_counter()
                built.checkpoint.save(trainer)
                timings["write_s"] = time.perf_counter() - start

        built.trainer.callbacks.append(FillThenTime())
        experiment.run(built, run_dir)
        last = run_dir / "checkpoints" / "last.ckpt"
        start = time.perf_counter()
        loaded = read_checkpoint(last)  # as a resume reads it: its digest checked, then memory-mapped
        transitions = sum(b["_storage"]["_len"] for b in loaded["MultiTaskData"]["buffers"])
        read_s = time.perf_counter() - start
        return (f"MT10 checkpoint at full replay capacity ({transitions:,} transitions): "
                f"{last.stat().st_size / 2**20:.0f} MiB, written in {timings['write_s']:.1f} s, read in {read_s:.1f} s")


def disk_full() -> str:
    """A tiny run whose run folder sits on a tmpfs with room for two checkpoints and a half."""
    bindings = ["Experiment.total_env_steps = 1_300", "Experiment.checkpoint_every_env_steps = 100"]
    with tempfile.TemporaryDirectory() as tmp:
        experiment, built = build("gin_configs/tiny_picor.gin", bindings, Path(tmp) / "probe")
        experiment.run(built, Path(tmp) / "probe")
        size = (Path(tmp) / "probe" / "checkpoints" / "last.ckpt").stat().st_size
    mount = Path(tempfile.mkdtemp())
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(2.5 * size) + 2**20}", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        return "disk full: skipped (mounting a small tmpfs needs root); tests/test_robustness.py patches the writer instead"
    try:
        experiment, built = build("gin_configs/tiny_picor.gin", bindings, mount / "run")
        try:
            experiment.run(built, mount / "run")
            return "disk full: the small file system did not fill (no verdict)"
        except CheckpointWriteError as error:
            checkpoints = mount / "run" / "checkpoints"
            kept = {p.name: read_checkpoint(p)["MultiTaskData"]["env_steps"]
                    for p in sorted(checkpoints.glob("*.ckpt"))}
            return (f"disk full (tmpfs of {int(2.5 * size) + 2**20:,} bytes, checkpoints of {size:,}): the run "
                    f"stopped with \"{error}\"; files left: {kept} (all readable, their digests matching)")
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


PARTS = ("tiny", "mt10", "checkpoint", "disk_full")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny_env_steps", type=int, default=50_000)
    parser.add_argument("--mt10_env_steps", type=int, default=4_000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny updates only contend on more)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--out", type=Path, default=None, help="Markdown report, appended to as each part ends")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as launch/run.py does

    def report(text: str) -> None:
        print(text, flush=True)
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(text + "\n")

    report(f"Soak on {os.cpu_count()} cores, {args.threads} torch thread(s), load average at start "
           f"{os.getloadavg()[0]:.1f}.\n")
    if "tiny" in args.parts:
        rows, wall_s = soak("gin_configs/tiny_picor.gin", [
            f"Experiment.total_env_steps = {args.tiny_env_steps}", "MultiTaskData.replay_capacity = 2_500",
        ], every_env_steps=5_000)
        report(table(f"tiny_picor, {args.tiny_env_steps:,} env steps, replay capacity 2,500 per task "
                     "(full at 10,000)", rows, wall_s))
    if "mt10" in args.parts:
        rows, wall_s = soak("gin_configs/mt10_picor.gin", [
            f"Experiment.total_env_steps = {args.mt10_env_steps}", "MultiTaskData.warmup_env_steps_per_task = 100",
            "MultiTaskData.replay_capacity = 256", "Experiment.eval_every_env_steps = 1_000_000",
            "Experiment.eval_episodes = 1",
        ], every_env_steps=500)
        report(table(f"mt10_picor, {args.mt10_env_steps:,} env steps, replay capacity 256 per task "
                     "(full at about 2,600)", rows, wall_s))
    if "checkpoint" in args.parts:
        report(full_capacity_checkpoint() + "\n")
    if "disk_full" in args.parts:
        report(disk_full() + "\n")


if __name__ == "__main__":
    main()
