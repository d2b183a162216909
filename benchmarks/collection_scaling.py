"""Wall time of one collection iteration as the number of tasks grows, serial vs parallel workers.

    python benchmarks/collection_scaling.py [--config mt10_mtsac] [--task_counts 1 2 4 10]
                                            [--iterations 300] [--rounds 3] [--gin_bindings ...]

    python benchmarks/collection_scaling.py --config mt10_mtppo --iterations 3 \
        --gin_bindings "RolloutData.rollout_env_steps = 64"   # the on-policy path, one rollout an iteration

With the AllTasks sampler every task steps each iteration. Serially that costs N env steps of
wall time; with `MultiTaskData.parallel_workers` (one TorchRL ParallelEnv worker per task) it
should cost about one env step plus the workers' messaging, as long as there is a core per task.
The config's task set keeps its first k tasks (`<TaskSet>.tasks`, e.g. MetaWorldMT10.tasks) for
each k of `--task_counts`; the policy acts (it is the config's untrained actor), warm-up steps are
not timed, and each figure is the fastest of `--rounds` rounds.

An iteration of the replay path (MultiTaskData) steps each env once; one of the on-policy path
(RolloutData) collects a whole rollout and runs GAE on it. The env steps/s columns count what the
data module counted.

The column "parallel / one serial step" divides the parallel iteration by one task's serial
iteration: about 1 means "one iteration costs about one env step"; it grows once tasks outnumber cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.throughput import _build  # noqa: E402


def iteration_ms(
    config: str, task_set: str, tasks: list[str], parallel: bool, iterations: int, rounds: int, bindings: list[str]
) -> tuple[float, float]:
    """Milliseconds per AllTasks collection iteration over `tasks` and env steps per second,
    the fastest of `rounds`."""
    data_class = type(_build(config, bindings).data).__name__
    data = _build(config, [
        *bindings,
        f"{task_set}.tasks = {tasks!r}",
        f"{data_class}.sampler = @AllTasks",
        f"{data_class}.parallel_workers = {parallel}",
        *(["MultiTaskData.warmup_env_steps_per_task = 1"] if data_class == "MultiTaskData" else []),
    ]).data
    collect = data.collect if data.on_policy else lambda: data.collect(data.sampler.tasks(data.iterations))
    try:
        collect()  # builds the collectors and their workers (the replay path: its warm-up step)
        best = float("inf")
        for _ in range(rounds):
            started, env_steps = time.perf_counter(), data.env_steps
            for _ in range(iterations):
                collect()
            seconds = time.perf_counter() - started
            if seconds / iterations < best:
                best, rate = seconds / iterations, (data.env_steps - env_steps) / seconds
        return best * 1e3, rate
    finally:
        data.teardown("fit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mt10_mtsac")
    parser.add_argument("--task_set", default="MetaWorldMT10", help="the config's task set class")
    parser.add_argument("--task_counts", type=int, nargs="+", default=[1, 2, 4, 10])
    parser.add_argument("--iterations", type=int, default=300, help="timed iterations per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gin_bindings", nargs="+", action="extend", default=[], help="'X.y = v' for every build")
    args = parser.parse_args()

    all_tasks = _build(args.config, args.gin_bindings).data.task_set.names
    if max(args.task_counts) > len(all_tasks):
        parser.error(f"--task_counts: {args.config} has {len(all_tasks)} tasks")
    rows = []
    for count in args.task_counts:
        tasks = all_tasks[:count]
        (serial, serial_rate), (parallel, parallel_rate) = (
            iteration_ms(args.config, args.task_set, tasks, workers, args.iterations, args.rounds, args.gin_bindings)
            for workers in (False, True)
        )
        rows.append((count, serial, parallel, serial_rate, parallel_rate))
    one_step = rows[0][1] / rows[0][0]  # one task's serial iteration, from the smallest count

    print(f"\n{args.config}, {os.cpu_count()} cores, {args.iterations} iterations, best of {args.rounds} rounds"
          + "".join(f"; {b}" for b in args.gin_bindings))
    print("| tasks | serial (ms/iteration) | parallel workers (ms/iteration) | serial / parallel "
          "| parallel / one serial step | serial (env steps/s) | parallel workers (env steps/s) |")
    print("|---|---|---|---|---|---|---|")
    for count, serial, parallel, serial_rate, parallel_rate in rows:
        print(f"| {count} | {serial:.2f} | {parallel:.2f} | {serial / parallel:.2f} | {parallel / one_step:.2f} "
              f"| {serial_rate:.0f} | {parallel_rate:.0f} |")


if __name__ == "__main__":
    main()
