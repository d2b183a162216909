"""Wall time of one collection iteration as the number of tasks grows, serial vs parallel workers.

    python benchmarks/collection_scaling.py [--config mt10_mtsac] [--task_counts 1 2 4 10]
                                            [--iterations 300] [--rounds 3]

With the AllTasks sampler every task steps each iteration. Serially that costs N env steps of
wall time; with `MultiTaskData.parallel_workers` (one TorchRL ParallelEnv worker per task) it
should cost about one env step plus the workers' messaging, as long as there is a core per task.
The config's task set keeps its first k tasks (`<TaskSet>.tasks`, e.g. MetaWorldMT10.tasks) for
each k of `--task_counts`; the policy acts (it is the config's untrained actor), warm-up steps are
not timed, and each figure is the fastest of `--rounds` rounds.

The last column divides the parallel iteration by one task's serial step: about 1 means the
issue's "one iteration costs about one env step"; it grows once tasks outnumber cores.
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


def iteration_ms(config: str, task_set: str, tasks: list[str], parallel: bool, iterations: int, rounds: int) -> float:
    """Milliseconds per AllTasks collection iteration over `tasks`, the fastest of `rounds`."""
    data = _build(config, [
        f"{task_set}.tasks = {tasks!r}",
        "MultiTaskData.sampler = @AllTasks",
        "MultiTaskData.warmup_env_steps_per_task = 1",
        f"MultiTaskData.parallel_workers = {parallel}",
    ]).data
    try:
        data.warm_up()  # builds the collectors and their workers
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(iterations):
                data.collect(data.sampler.tasks(data.iterations))
            best = min(best, (time.perf_counter() - started) / iterations)
        return best * 1e3
    finally:
        data.teardown("fit")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mt10_mtsac")
    parser.add_argument("--task_set", default="MetaWorldMT10", help="the config's task set class")
    parser.add_argument("--task_counts", type=int, nargs="+", default=[1, 2, 4, 10])
    parser.add_argument("--iterations", type=int, default=300, help="timed iterations per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    all_tasks = _build(args.config, []).data.task_set.names
    if max(args.task_counts) > len(all_tasks):
        parser.error(f"--task_counts: {args.config} has {len(all_tasks)} tasks")
    rows = []
    for count in args.task_counts:
        tasks = all_tasks[:count]
        serial, parallel = (
            iteration_ms(args.config, args.task_set, tasks, workers, args.iterations, args.rounds)
            for workers in (False, True)
        )
        rows.append((count, serial, parallel))
    one_step = rows[0][1] / rows[0][0]  # one task's serial step, from the smallest count

    print(f"\n{args.config}, {os.cpu_count()} cores, {args.iterations} iterations, best of {args.rounds} rounds")
    print("| tasks | serial (ms/iteration) | parallel workers (ms/iteration) | serial / parallel "
          "| parallel / one serial step |")
    print("|---|---|---|---|---|")
    for count, serial, parallel in rows:
        print(f"| {count} | {serial:.2f} | {parallel:.2f} | {serial / parallel:.2f} | {parallel / one_step:.2f} |")


if __name__ == "__main__":
    main()
