"""Task samplers: which task each iteration collects and trains on."""
from __future__ import annotations

import collections
import inspect

import pytest

from picor_gin import samplers
from picor_gin.samplers import RoundRobin, TaskSampler, UniformEveryK

# Every concrete sampler of the family, found in the module so that a new one is covered too.
SAMPLERS = [
    cls
    for cls in vars(samplers).values()
    if isinstance(cls, type) and issubclass(cls, TaskSampler) and not inspect.isabstract(cls)
]


def _sequence(sampler: TaskSampler, iterations: range) -> list[int]:
    return [sampler.tasks(i)[0] for i in iterations]


def test_the_family_list_holds_both_known_samplers():
    assert {UniformEveryK, RoundRobin} <= set(SAMPLERS)


def test_uniform_every_k_keeps_each_task_for_k_iterations_and_changes_only_at_multiples_of_k():
    sequence = _sequence(UniformEveryK(num_tasks=4, seed=0, k=3), range(60))
    for i in range(60):
        assert sequence[i] == sequence[3 * (i // 3)], f"iteration {i} left its block's task"
    changes = [i for i in range(1, 60) if sequence[i] != sequence[i - 1]]
    assert changes, "the task never changed in 20 blocks"
    assert all(i % 3 == 0 for i in changes)


def test_uniform_every_k_visits_every_task_with_roughly_uniform_frequency():
    sequence = _sequence(UniformEveryK(num_tasks=4, seed=0, k=3), range(400))
    counts = collections.Counter(sequence)
    assert set(counts) == {0, 1, 2, 3}
    for task_id, count in counts.items():
        assert 0.15 <= count / 400 <= 0.35, f"task {task_id} frequency {count / 400}"


def test_uniform_every_k_differs_between_seeds():
    a = _sequence(UniformEveryK(num_tasks=4, seed=0, k=1), range(50))
    b = _sequence(UniformEveryK(num_tasks=4, seed=1, k=1), range(50))
    assert a != b


def test_uniform_every_k_state_dict_reproduces_the_same_future_sequence():
    sampler = UniformEveryK(num_tasks=4, seed=0, k=3)
    _sequence(sampler, range(10))  # stop mid-block: iteration 10 keeps iteration 9's task
    state = sampler.state_dict()
    expected = _sequence(sampler, range(10, 40))

    restored = UniformEveryK(num_tasks=4, seed=123, k=3)
    restored.load_state_dict(state)
    assert _sequence(restored, range(10, 40)) == expected


def test_round_robin_cycles_through_tasks_holding_each_for_k_iterations():
    sequence = _sequence(RoundRobin(num_tasks=4, seed=0, k=2), range(12))
    assert sequence == [0, 0, 1, 1, 2, 2, 3, 3, 0, 0, 1, 1]


@pytest.mark.parametrize("sampler_class", [UniformEveryK, RoundRobin], ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("k", [0, -1])
def test_k_below_one_raises_value_error(sampler_class, k):
    with pytest.raises(ValueError, match="k must"):
        sampler_class(num_tasks=4, seed=0, k=k)


@pytest.mark.parametrize("sampler_class", SAMPLERS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("num_tasks", [1, 3, 10])
def test_every_sampler_yields_valid_task_ids(sampler_class, num_tasks):
    sampler = sampler_class(num_tasks=num_tasks, seed=0)
    for i in range(100):
        ids = sampler.tasks(i)
        assert len(ids) == sampler.tasks_per_iteration
        assert all(isinstance(t, int) and 0 <= t < num_tasks for t in ids), ids


def test_all_tasks_returns_every_task_each_iteration():
    sampler = samplers.AllTasks(num_tasks=3, seed=0)
    assert sampler.tasks_per_iteration == 3
    assert [sampler.tasks(i) for i in range(2)] == [[0, 1, 2], [0, 1, 2]]
