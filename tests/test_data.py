from __future__ import annotations

import re
import types

import pytest
import torch
from tensordict import TensorDict

from picor_gin.backbones import SAC
from picor_gin.correction.weighting import SoftmaxReturnWeights
from picor_gin.data import MultiTaskData
from picor_gin.networks import OneHotMLP
from picor_gin.samplers import AllTasks, RoundRobin
from picor_gin.tasks import PointGoals


def _data(**kwargs) -> MultiTaskData:
    task_set = PointGoals(num_tasks=4)
    backbone = SAC(obs_dim=6, action_dim=2, num_tasks=4, network=OneHotMLP(hidden_sizes=(8, 8)))
    defaults = dict(
        task_set=task_set, policy=backbone.policy, seed=0, total_env_steps=400,
        batch_size=16, correction_states_per_task=5, warmup_env_steps_per_task=40,
        replay_capacity=1_000, sampler=RoundRobin, critic_on_every_task=False,
    )
    return MultiTaskData(**{**defaults, **kwargs})


def test_warm_up_fills_every_task_buffer_with_its_own_transitions():
    data = _data()
    data.warm_up()
    assert [len(b) for b in data.buffers] == [40, 40, 40, 40]
    assert data.env_steps == 160
    for task_id, buffer in enumerate(data.buffers):
        stored = buffer.storage[: len(buffer)]
        assert (stored["task_id"] == task_id).all()
        assert (stored["observation"][:, 2:].argmax(-1) == task_id).all()


def test_stream_trains_on_the_sampled_task_and_corrects_on_all_tasks():
    data = _data()
    stream = iter(data.train_dataloader())
    first, second = next(stream), next(stream)
    assert (first.task["task_id"] == 0).all() and (second.task["task_id"] == 1).all()
    assert first.task.shape == (16,)
    assert first.correction.shape == (4, 5)
    assert torch.equal(first.correction["task_id"], torch.arange(4).unsqueeze(-1).expand(4, 5))
    assert second.env_steps == 160 + 2


def test_correction_states_are_drawn_from_each_task_buffer_filled_part_only():
    data = _data(correction_states_per_task=200, replay_capacity=1_000)
    data.warm_up()
    data.collect([2])  # B_2 holds 41 transitions, the others 40
    states = data.sample([0]).correction
    assert states.shape == (4, 200)
    for task_id, buffer in enumerate(data.buffers):
        stored = buffer.storage[: len(buffer)]["observation"]
        drawn = states["observation"][task_id]
        # Every drawn state is one of B_z's stored observations (none of the empty capacity).
        assert ((drawn.unsqueeze(1) - stored.unsqueeze(0)).abs().sum(-1) == 0).any(1).all()
        assert (drawn[:, 2:].argmax(-1) == task_id).all()
        assert len(torch.unique(drawn, dim=0)) > 10  # many distinct states, not one repeated


def test_critic_batch_on_every_task_is_stratified_stored_transitions_of_each_task():
    data = _data(critic_on_every_task=True)
    data.warm_up()
    batch = data.sample([1])
    assert (batch.task["task_id"] == 1).all() and batch.task.shape == (16,)
    critic = batch.critic
    assert critic.shape == (16,)  # as many as the task batch: 4 per task
    assert torch.equal(critic["task_id"], torch.arange(4).repeat_interleave(4))
    for task_id, buffer in enumerate(data.buffers):
        stored = buffer.storage[: len(buffer)]
        drawn = critic[critic["task_id"] == task_id]
        # Each drawn row is one whole stored transition of B_z (observation and next together).
        rows = torch.cat([stored["observation"], stored["next", "observation"], stored["action"]], -1)
        drawn_rows = torch.cat([drawn["observation"], drawn["next", "observation"], drawn["action"]], -1)
        assert ((drawn_rows.unsqueeze(1) - rows.unsqueeze(0)).abs().sum(-1) == 0).any(1).all()


def test_critic_batch_is_as_large_as_the_task_batch_when_every_task_is_sampled():
    data = _data(critic_on_every_task=True, sampler=AllTasks)
    data.warm_up()
    batch = data.sample(list(range(4)))
    assert batch.task.shape == batch.critic.shape == (64,)
    assert torch.equal(batch.critic["task_id"], torch.arange(4).repeat_interleave(16))


def test_critic_batch_is_none_on_the_sampled_tasks_batch_and_a_batch_smaller_than_the_task_count_is_refused():
    data = _data(critic_on_every_task=False)
    data.warm_up()
    assert data.sample([0]).critic is None
    with pytest.raises(ValueError, match="critic_on_every_task.*batch_size >= 4"):
        _data(critic_on_every_task=True, batch_size=3)


def test_stream_stops_at_the_env_step_budget_and_knows_its_length():
    data = _data(total_env_steps=200)
    assert len(data.train_dataloader().dataset) == 40
    batches = list(data.train_dataloader())
    assert len(batches) == 40
    assert data.env_steps == 200


def test_time_limit_transitions_are_stored_as_not_terminated():
    data = _data()
    data.warm_up()  # 40 steps per task: one 30-step episode ended by the time limit
    stored = data.buffers[0].storage[:40]
    assert not stored["next", "terminated"].any()
    # The episode's return is recorded: the sum of its 30 rewards, not the last one.
    assert list(data.recent_returns[0]) == [pytest.approx(stored["next", "reward"][:30].sum().item(), rel=1e-5)]


def test_recent_returns_are_kept_in_the_order_their_episodes_ended_across_envs():
    """A rollout is [task, env, time]: env 0 ends an episode at t = 5, env 1 at t = 1 and t = 3."""
    data = _data()
    done = torch.zeros(1, 2, 6, 1, dtype=torch.bool)
    done[0, 0, 5] = done[0, 1, 1] = done[0, 1, 3] = True
    episode_reward = torch.zeros(1, 2, 6, 1)
    episode_reward[0, 0, 5], episode_reward[0, 1, 1], episode_reward[0, 1, 3] = 60.0, 11.0, 13.0
    rollout = TensorDict({"next": {"done": done, "episode_reward": episode_reward}}, batch_size=[1, 2, 6])
    data._count([2], rollout)
    assert list(data.recent_returns[2]) == [11.0, 13.0, 60.0]
    assert data.task_env_steps[2] == 12


def test_state_dict_round_trip_restores_counters_sampler_buffers_and_recent_returns():
    data = _data()
    stream = iter(data.train_dataloader())
    for _ in range(3):
        next(stream)
    state = data.state_dict()
    noise = torch.rand(3)  # what the run draws next: its exploration noise and replay indices
    restored = _data()
    restored.load_state_dict(state)
    assert torch.equal(torch.rand(3), noise)
    assert restored.env_steps == data.env_steps and restored.iterations == 3
    # What SoftmaxReturnWeights reads: each task's last episode returns (one 30-step episode each).
    assert [list(r) for r in restored.recent_returns] == [list(r) for r in data.recent_returns]
    assert all(len(r) == 1 for r in restored.recent_returns)
    rule = SoftmaxReturnWeights()  # so a resumed run's return weights are the uninterrupted run's
    torch.testing.assert_close(rule({"recent_return": restored.sample([0]).recent_return}, 4),
                               rule({"recent_return": data.sample([0]).recent_return}, 4), rtol=0, atol=0)
    assert [len(b) for b in restored.buffers] == [len(b) for b in data.buffers]
    assert torch.equal(restored.buffers[1].storage[:41]["action"], data.buffers[1].storage[:41]["action"])


def test_all_tasks_sampler_collects_every_task_and_stratifies_the_batch():
    from picor_gin.samplers import AllTasks

    data = _data(sampler=AllTasks, total_env_steps=200)
    batches = list(data.train_dataloader())
    assert len(batches) == 10  # (200 - 160 warm-up steps) / 4 tasks per iteration
    assert data.task_env_steps == [50, 50, 50, 50]
    assert torch.equal(batches[0].task["task_id"], torch.arange(4).repeat_interleave(16))


def test_collectors_act_with_the_current_actor_not_a_copy():
    task_set = PointGoals(num_tasks=4)
    backbone = SAC(obs_dim=6, action_dim=2, num_tasks=4, network=OneHotMLP(hidden_sizes=(8, 8)))
    data = MultiTaskData(task_set=task_set, policy=backbone.policy, seed=0, total_env_steps=400,
                         batch_size=16, warmup_env_steps_per_task=4, sampler=RoundRobin,
                         critic_on_every_task=False)
    data.warm_up()  # builds the collectors with the initial actor
    with torch.no_grad():  # now make the actor push hard toward (+1, -1)
        last = backbone.actor[0][-1]
        last.weight.zero_()
        last.bias.copy_(torch.tensor([20.0, -20.0, -20.0, -20.0]))  # loc (20, -20), tiny scale
    data.collect([0])
    action = data.buffers[0].storage[4]["action"]
    assert torch.allclose(action, torch.tensor([1.0, -1.0]), atol=1e-3), action


def _warmed_up_as(rank: int, world_size: int) -> MultiTaskData:
    """What setup() sees in process `rank` of a DDP run, then the warm-up."""
    data = _data()
    data.trainer = types.SimpleNamespace(global_rank=rank, world_size=world_size)
    data.setup("fit")
    data.warm_up()
    return data


def test_each_ddp_process_collects_its_own_data_and_steps_count_globally():
    rank0, again, rank1 = _warmed_up_as(0, 2), _warmed_up_as(0, 2), _warmed_up_as(1, 2)
    assert rank0.env_steps == rank1.env_steps == 2 * 160  # global: both processes' steps
    assert rank0.total_iterations() == (400 - 2 * 160) // 2
    observations = [d.buffers[0].storage[:40]["next", "observation"] for d in (rank0, again, rank1)]
    assert torch.equal(observations[0], observations[1])  # a process's data is reproducible
    assert not torch.equal(observations[0], observations[2])  # and differs across processes


def test_a_run_resumed_on_more_processes_counts_its_iterations_left_at_the_new_rate():
    """400 env steps, 4 tasks x 40 warm-up, one task's step per iteration and process: 240
    iterations on one process. Stopped after 3 (163 env steps), resumed on 2 processes (each
    with the saved process's buffers, warm-up done; 81 env steps each, 162 in all): 3 + 119."""
    data = _data()
    assert data.total_iterations() == 240
    stream = iter(data.train_dataloader())
    for _ in range(3):
        next(stream)
    resumed = _data()
    resumed.trainer = types.SimpleNamespace(global_rank=0, world_size=2)
    resumed.setup("fit")
    resumed.load_state_dict(data.state_dict())
    assert resumed.env_steps == 162  # 163 // 2 per process: the global count is each process's x 2
    assert resumed.total_iterations() == 3 + (400 - 162) // 2


def test_parallel_workers_step_every_task_at_once_into_its_own_buffer():
    data = _data(sampler=AllTasks, parallel_workers=True)
    try:
        data.warm_up()
        assert [len(b) for b in data.buffers] == [40, 40, 40, 40] and data.env_steps == 160
        data.collect([0, 1, 2, 3])
        assert data.task_env_steps == [41, 41, 41, 41]
        for task_id, buffer in enumerate(data.buffers):
            stored = buffer.storage[: len(buffer)]
            assert (stored["task_id"] == task_id).all()
            assert (stored["observation"][:, 2:].argmax(-1) == task_id).all()
        batch = data.sample(data.sampler.tasks(0))
        assert sorted(batch.task["task_id"].unique().tolist()) == [0, 1, 2, 3]
        env = data._collectors[0].env
    finally:
        data.teardown("fit")
    assert env.is_closed


def test_parallel_workers_need_the_all_tasks_sampler():
    with pytest.raises(ValueError, match="AllTasks"):
        _data(sampler=RoundRobin, parallel_workers=True)


def _offline_buffers(device: str | torch.device, num_tasks: int = 4, size: int = 7) -> list:
    """Per-task buffers on `device` as a teacher's replay gives them: task 0's observations all 0, task 1's all 1, ..."""
    from tensordict import TensorDict
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

    buffers = []
    for z in range(num_tasks):
        buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(size, device=device))
        buffer.extend(TensorDict({"observation": torch.full((size, 6), float(z)), "action": torch.zeros(size, 2),
                                  "task_id": torch.zeros(size, dtype=torch.long)}, batch_size=[size]))
        buffers.append(buffer)
    return buffers


def test_offline_stage_comes_first_from_its_own_buffers_at_env_step_zero_and_resumes_where_it_stopped():
    from picor_gin.data import OFFLINE, ONLINE

    data = _data(offline_updates=3, offline_replay=_offline_buffers)
    assert len(data.train_dataloader().dataset) == 3 + (400 - 160)
    stream = iter(data.train_dataloader())
    first = next(stream)
    assert first.stage == OFFLINE and first.env_steps == 0 and data.env_steps == 0
    # Each task's rows come from its own offline buffer and carry the student's task id.
    assert torch.equal(first.task["observation"][:, 0], first.task["task_id"].float())
    assert first.task.shape == (4 * 16,) and torch.isnan(first.recent_return).all()
    assert torch.equal(first.correction["observation"][:, :, 0], first.correction["task_id"].float())
    next(stream)
    state = data.state_dict()  # a checkpoint after 2 of the 3 offline updates

    resumed = _data(offline_updates=3, offline_replay=_offline_buffers)
    resumed.load_state_dict(state)
    stages = [batch.stage for _, batch in zip(range(3), resumed.train_dataloader())]
    assert stages == [OFFLINE, ONLINE, ONLINE]
    assert resumed.offline_done == 3 and resumed.env_steps == 160 + 2


def _constant_policy():
    """A policy that always outputs 0.25: random warm-up actions would be spread over [-1, 1]."""
    from tensordict.nn import TensorDictModule

    linear = torch.nn.Linear(6, 2)
    torch.nn.init.zeros_(linear.weight), torch.nn.init.constant_(linear.bias, 0.25)
    return TensorDictModule(linear, in_keys=["observation"], out_keys=["action"])


@pytest.mark.parametrize("steps_before_the_stop", [40, 10])
def test_a_resumed_run_takes_only_the_warm_up_steps_it_had_left_at_random(steps_before_the_stop):
    """Warm-up is 40 steps per task; the resumed data path rebuilds its collectors."""
    data = _data(policy=_constant_policy())
    for _ in range(steps_before_the_stop):
        data.collect([0])
    resumed = _data(policy=_constant_policy())
    resumed.load_state_dict(data.state_dict())  # the replay buffers too
    assert len(resumed.buffers[0]) == steps_before_the_stop
    for _ in range(35):
        resumed.collect([0])
    collected = resumed.buffers[0].storage[steps_before_the_stop:steps_before_the_stop + 35]
    from_policy = (collected["action"] == 0.25).all(-1).tolist()
    random_left = 40 - steps_before_the_stop
    assert from_policy == [False] * random_left + [True] * (35 - random_left)


def test_after_an_offline_stage_the_warm_up_acts_with_the_policy():
    constant = _constant_policy()
    for offline_updates, from_policy in [(0, False), (1, True)]:
        data = _data(policy=constant, offline_updates=offline_updates, offline_replay=_offline_buffers)
        data.warm_up()
        actions = data.buffers[0].storage[:40]["action"]
        assert bool((actions == 0.25).all()) == from_policy


@pytest.mark.parametrize("requested, expected", [("cuda", "cuda:1"), ("cuda:0", "cuda:0"), ("cpu", "cpu")])
def test_a_replay_device_without_an_index_is_each_processs_own_once_lightning_has_set_it(requested, expected, monkeypatch):
    """Under DDP, process 1's 'cuda' is cuda:1. The buffers are built before Lightning sets each
    process's device, when 'cuda' means cuda:0 (storages are lazy: no GPU memory is touched here)."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # the two processes' GPUs, on any machine
    data = _data(replay_device=requested)
    data.trainer = types.SimpleNamespace(global_rank=1, world_size=2,
                                         strategy=types.SimpleNamespace(root_device=torch.device(expected.split(":")[0], 1)))
    data.setup("fit")
    assert {str(buffer.storage.device) for buffer in data.buffers} == {expected}


@pytest.mark.parametrize("device, gpus, problem", [
    ("cuda", 0, "this machine has no CUDA device"),
    ("cuda:3", 2, "this machine has 2 CUDA device(s), cuda:0 to cuda:1"),
    ("gpu0", 2, "Invalid device string"),  # torch's own word on a device string it cannot parse
])
def test_a_replay_device_this_machine_lacks_is_refused_when_the_data_is_built(device, gpus, problem, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(ValueError, match=re.escape(f"MultiTaskData.replay_device = '{device}': ") + ".*" + re.escape(problem)):
        _data(replay_device=device)
