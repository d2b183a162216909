"""What one evaluation costs, per gin config and episodes per task.

    python benchmarks/evaluation_cost.py [--configs mt10_picor halfcheetah_picor] [--episodes 1 10] [--rounds 2]

For each config it builds the run (untrained networks) and times `evaluate`, the function the
evaluation callback calls, with the config's policy and task set, once per `--episodes` value:
its env steps (episodes x tasks x `max_episode_steps`: none of MT10's, HalfCheetah's or
PointGoals' episodes ends early), seconds per evaluation (env building, rollouts, closing) and env
steps per second. The table comes after the runs' own output. Each figure is its fastest of
`--rounds` rounds, as in benchmarks/throughput.py. Torch runs on `--threads` threads.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.throughput import _build  # noqa: E402
from picor_gin.run.evaluation import evaluate  # noqa: E402


def seconds_per_evaluation(config: str, episodes: list[int], rounds: int) -> tuple[dict[int, float], int]:
    """The fastest of `rounds` evaluations of `config`'s untrained policy, per episodes value, and
    the env steps of one episode on every task."""
    built = _build(config, [])
    task_set = built.data.task_set
    best = {e: float("inf") for e in episodes}
    for _ in range(rounds):
        for e in episodes:  # alternate, so load from other processes reaches every setting alike
            start = time.perf_counter()
            evaluate(built.module.policy, task_set, e, seed=0)
            best[e] = min(best[e], time.perf_counter() - start)
    return best, task_set.num_tasks * task_set.max_episode_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["mt10_picor", "halfcheetah_picor"])
    parser.add_argument("--episodes", nargs="+", type=int, default=[1, 5, 10])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for config in args.configs:
        best, steps_per_episode = seconds_per_evaluation(config, args.episodes, args.rounds)
        rows += [f"| {config} | {e} | {e * steps_per_episode} | {seconds:.2f} | {e * steps_per_episode / seconds:,.0f} |"
                 for e, seconds in best.items()]
    print(f"\nEvaluation cost, {args.threads} torch thread(s), fastest of {args.rounds} round(s):\n")
    print("| config | episodes per task | env steps | s per evaluation | env steps/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
