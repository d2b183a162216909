"""Forgetting (best headline metric so far minus the current one, per task) on a hand-made
history, and PeriodicEvaluation writing it to eval.jsonl and carrying it across a resume."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from picor_gin.run import callbacks
from picor_gin.run.forgetting import forgetting_history, forgetting_step, mean_over_tasks

SCORES = {"a": [0.2, 0.8, 0.5, 0.9], "b": [0.6, 0.3, 0.7, 0.1]}
FORGETTING = {"a": [0.0, 0.0, 0.3, 0.0], "b": [0.0, 0.3, 0.0, 0.6]}
MEAN_FORGETTING = [0.0, 0.15, 0.15, 0.3]


def _row(scores: dict[str, float], success: dict[str, float] | None = None) -> dict:
    """An evaluate() result: the normalized score is the headline unless a success flag is given."""
    tasks = {name: {"return": 10 * score, "success": None if success is None else success[name], "score": score}
             for name, score in scores.items()}
    mean = {key: None if tasks["a"][key] is None else sum(t[key] for t in tasks.values()) / len(tasks)
            for key in ("return", "success", "score")}
    return {"tasks": tasks, **{f"mean_{key}": value for key, value in mean.items()}}


def _history() -> list[dict]:
    return [{"env_steps": 100 * (i + 1), **_row({name: SCORES[name][i] for name in SCORES})} for i in range(4)]


def test_forgetting_is_the_drop_below_each_tasks_best_so_far():
    history, bests = forgetting_history(_history())
    for name in SCORES:
        assert [f[name] for f in history] == pytest.approx(FORGETTING[name])
    assert [mean_over_tasks(f) for f in history] == pytest.approx(MEAN_FORGETTING)
    assert sum(mean_over_tasks(f) for f in history) / 4 == pytest.approx(0.15)
    assert bests == {"a": 0.9, "b": 0.7}
    # One step from the bests of the first three rows gives the fourth row's forgetting.
    step, _ = forgetting_step(forgetting_history(_history()[:3])[1], _history()[3])
    assert step == pytest.approx({"a": 0.0, "b": 0.6})


def test_a_diverged_evaluation_has_unknown_forgetting_and_leaves_the_later_ones_intact():
    nan = float("nan")
    rows = [_row({"a": nan, "b": 0.6}), _row({"a": 0.4, "b": nan}), _row({"a": 0.1, "b": 0.2})]
    history, bests = forgetting_history(rows)
    assert math.isnan(history[0]["a"]) and history[0]["b"] == 0.0
    assert history[1]["a"] == 0.0 and math.isnan(history[1]["b"])
    assert history[2] == pytest.approx({"a": 0.3, "b": 0.4})
    assert bests == pytest.approx({"a": 0.4, "b": 0.6})


def test_forgetting_follows_the_success_rate_where_the_task_set_has_one():
    # The score rises while success falls: the headline metric (success) decides.
    rows = [_row({"a": 0.1, "b": 0.1}, success={"a": 1.0, "b": 0.5}), _row({"a": 0.9, "b": 0.9}, success={"a": 0.25, "b": 0.5})]
    history, _ = forgetting_history(rows)
    assert history[1] == {"a": 0.75, "b": 0.0}


def _evaluation_at(callback, env_steps: int, logged: list) -> dict:
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(env_steps=env_steps), is_global_zero=True,
        logger=SimpleNamespace(log_metrics=lambda metrics, step: logged.append(metrics)),
    )
    return callback._evaluate(trainer, SimpleNamespace(policy=None, state_dict=dict))  # a finite (empty) state


def test_the_callback_writes_forgetting_rows_and_rebuilds_its_bests_on_resume(tmp_path, monkeypatch):
    results = iter(_row({name: SCORES[name][i] for name in SCORES}) for i in [0, 1, 2, 3, 2, 3])
    monkeypatch.setattr(callbacks, "evaluate", lambda *args: next(results))
    path = tmp_path / "eval.jsonl"
    first, logged = callbacks.PeriodicEvaluation(None, 100, 1, seed=0, path=path), []
    for env_steps in (100, 200, 300, 400):
        _evaluation_at(first, env_steps, logged)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row, expected in zip(rows, forgetting_history(rows)[0]):
        assert set(row) == {"env_steps", "tasks", "mean_return", "mean_success", "mean_score", "forgetting", "mean_forgetting"}
        assert row["forgetting"] == expected and row["mean_forgetting"] == mean_over_tasks(expected)
    assert [row["mean_forgetting"] for row in rows] == pytest.approx(MEAN_FORGETTING)
    assert logged[3]["eval/forgetting/b"] == pytest.approx(0.6) and logged[3]["eval/mean_forgetting"] == pytest.approx(0.3)
    assert first.summary()["average_forgetting"] == pytest.approx(0.15)

    # Resume from the checkpoint at env step 200: the rows after it go, the bests of the first two stay.
    resumed = callbacks.PeriodicEvaluation(None, 100, 1, seed=0, path=path)
    resumed.load_state_dict({"last_env_steps": 200})
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:2]
    assert resumed.bests == {"a": 0.8, "b": 0.6}
    again = [_evaluation_at(resumed, env_steps, []) for env_steps in (300, 400)]
    assert [row["forgetting"] for row in again] == [rows[2]["forgetting"], rows[3]["forgetting"]]
    assert resumed.summary()["average_forgetting"] == pytest.approx(0.15)
    assert resumed.summary()["env_steps"] == 400

    # A resume of the finished run that adds no env step evaluates nothing: its summary is the last
    # row's. A row cut off mid-write (a full disk) is dropped.
    path.write_text(path.read_text() + '{"env_steps": 500, "tas')
    finished = callbacks.PeriodicEvaluation(None, 100, 1, seed=0, path=path)
    finished.load_state_dict({"last_env_steps": 400})
    assert finished.summary() == resumed.summary()
