"""The run contract (docs/running.md), through launch/run.py: in a subprocess where a run trains,
in-process where it is refused before anything is built."""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch

from picor_gin.checkpoint_files import write_digest
from picor_gin.run.forgetting import forgetting_history, mean_over_tasks
from tests.conftest import REPO, TWO_DDP_PROCESSES, run_cli, run_in_process

SHORT = [
    "--gin_file=gin_configs/tiny_picor.gin",
    "--gin_bindings=Experiment.total_env_steps = 1_200",
    "--gin_bindings=Experiment.eval_every_env_steps = 1_100",
    "--gin_bindings=Experiment.checkpoint_every_env_steps = 1_100",
    "--gin_bindings=PolicyCorrection.lam = 1729.0",
    "--gin_bindings=LogFileProgress.every_seconds = 0.5",
]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "short"
    result = run_cli(*SHORT, f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result


def test_run_writes_the_run_folder(short_run):
    run_dir, result = short_run
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [row["env_steps"] for row in rows] == [1_100, 1_200]
    for row in rows:
        assert set(row) == {"env_steps", "tasks", "mean_return", "mean_success", "mean_score",
                            "forgetting", "mean_forgetting"}
        assert set(row["tasks"]) == {"goal0", "goal1", "goal2", "goal3"}
        assert row["mean_success"] is None and isinstance(row["mean_score"], float)
        assert row["mean_return"] == pytest.approx(
            sum(t["return"] for t in row["tasks"].values()) / 4
        )
    # Forgetting follows each task's normalized score (PointGoals has no success flag).
    history, _ = forgetting_history(rows)
    assert [row["forgetting"] for row in rows] == history and history[0] == dict.fromkeys(rows[0]["tasks"], 0.0)
    assert [row["mean_forgetting"] for row in rows] == [mean_over_tasks(f) for f in history]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 1_200 and summary["tasks"] == rows[-1]["tasks"]
    assert summary["mean_forgetting"] == rows[-1]["mean_forgetting"]
    assert summary["average_forgetting"] == pytest.approx(sum(row["mean_forgetting"] for row in rows) / 2)
    assert summary["total_env_steps"] == 1_200
    assert summary["updates"] == 200  # 1_200 steps - 4 x 250 warm-up steps, one update per step
    assert summary["env_steps_per_second"] > 0 and summary["updates_per_second"] > 0
    assert "goal3" in result.stdout and "mean" in result.stdout


def test_output_to_a_file_is_a_progress_line_per_interval_not_a_bar_per_update(short_run):
    """The bar wrote ~180 KB for this run when stdout was a file; 200 updates in a few seconds
    at one line per half second are a few dozen lines."""
    _, result = short_run
    assert len(result.stdout) + len(result.stderr) < 20_000
    assert "\r" not in result.stdout and "it/s" not in result.stdout
    assert "weights_only" not in result.stdout + result.stderr  # Lightning's notice says nothing to a user
    assert result.stderr.strip() == ""  # nor do its device lines, model summary and library warnings
    assert "Total params" not in result.stdout  # Lightning's model summary, printed by rich to stdout
    progress = [line for line in result.stdout.splitlines() if line.startswith("env steps ")]
    assert progress and progress[-1].startswith("env steps 1,200/1,200 (100.0%)")
    assert "eval mean_score" in progress[-1] and "at 1,200" in progress[-1]
    assert all("updates/s" in line for line in progress)


def test_bindings_reach_the_operative_config_and_the_checkpoint(short_run):
    run_dir, _ = short_run
    config = (run_dir / "config.gin").read_text()
    assert "PolicyCorrection.lam = 1729.0" in config
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["MultiTaskData"]["env_steps"] == 1_200
    # The replay buffers travel with the checkpoint: every collected transition is in one B_z.
    assert sum(b["_storage"]["_len"] for b in checkpoint["MultiTaskData"]["buffers"]) == 1_200
    assert checkpoint["updates"] == 200


def test_config_gin_repeats_the_run(short_run, tmp_path, monkeypatch, capsys):
    run_dir, _ = short_run
    result = run_in_process(monkeypatch, capsys, f"--gin_file={run_dir / 'config.gin'}", f"--run_dir={tmp_path / 'again'}")
    assert result.returncode == 0, result.stderr[-3000:]
    # Same config and seed on CPU: the same evaluations, to the last digit.
    first = (run_dir / "eval.jsonl").read_text().splitlines()
    again = (tmp_path / "again" / "eval.jsonl").read_text().splitlines()
    assert len(first) == 2 and [json.loads(r) for r in again] == [json.loads(r) for r in first]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gin_bindings=MultiTaskLearner.nope = 1"], "MultiTaskLearner"),
        (["--gin_bindings=PolicyCorrection.lamb = 1.0"], "did you mean lam?"),
        (["--gin_bindings=Experiment.task_set = @PointGoal()"], "did you mean PointGoals"),
        (["--gin_bindings=SoftmaxAlphaWeights.tau = 0.0"], "tau must be > 0"),
        (["--gin_bindings=PolicyCorrection.lam = -1.0"], "PolicyCorrection.lam must be >= 0"),
        (["--gin_bindings=PolicyCorrection.c = 0.5"], "PolicyCorrection.c must be <= 0"),
        (["--gin_bindings=PolicyCorrection.steps = 0"], "for no correction bind MultiTaskLearner.correction = None"),
        (["--gin_bindings=PolicyCorrection.constraint = @LagrangePenalty"], "bind PolicyCorrection.solver = @PenaltyDescent()"),
        (["--gin_file=gin_configs/does_not_exist.gin"], "does_not_exist.gin"),
        (["--gin_bindings=UniformEveryK.k = 0"], "k must be >= 1"),
        (["--gin_bindings=MultiTaskData.batch_size = 0"], "batch_size must be >= 1"),
        (["--gin_bindings=SAC.gamma = 1.0"], "gamma must lie in (0, 1)"),
        (["--gin_bindings=PolicyCorrection.lam = "], "Unable to parse"),
        (["--gin_bindings=MetaWorldMT10.tasks = ['reach-v3', 'pusj-v3']"], "valid tasks: reach-v3"),
        (["--gin_bindings=MultiTaskLearner.backbone = @TD3"], "SoftmaxAlphaWeights needs per-task ['alpha'], which TD3"),
        # Names that were renamed: the new one, not gin's unknown-name error.
        (["--gin_bindings=PiCor.lam = 1.0"], "uses PiCor.lam, which picor-gin renamed: it is now PolicyCorrection.lam"),
        (["--gin_bindings=Experiment.task_set = @TaskSubset()", "--gin_bindings=TaskSubset.task_set = @PointGoals()",
          "--gin_bindings=TaskSubset.tasks = ['goal0']", "--gin_bindings=MultiTaskLearner.network = @MooreNetwork()"],
         "MultiTaskLearner.network = @MooreNetwork() reads the task id from the observation's last 1 entries, one per "
         "task in order, but this task set's ids sit at entries [-4] from its end (TaskSubset keeps its full set's "
         "one-hot id): bind MultiTaskLearner.network = @OneHotMLP()"),
        (["--gin_bindings=picor_gin.backbones.sac.SAC.network = @MooreNetwork()"], "it is now MultiTaskLearner.network"),
        (["--gin_bindings=SAC.network = @MooreNetwork()"], "uses SAC.network, which picor-gin renamed: it is now MultiTaskLearner.network"),
        (["--gin_file={tmp}/old_config.gin"], "uses picor_gin.constraints, which picor-gin renamed: it is now picor_gin.correction"),
        # Raised inside gin, Lightning and torch while the run is built or set up.
        (["--gin_file={tmp}/includes_a_missing_file.gin"], "Unable to open file: gin_configs/nope.gin"),
        (["--gin_bindings=Trainer.accelerator = 'tpu'"], "error: Trainer: "),  # gin's trailer named it
        (["--gin_bindings=Trainer.enable_progress_bar = True"], "Trainer.enable_progress_bar = True\") (picor-gin sets it itself"),
        (["--gin_bindings=Trainer.max_steps = 30"], "(picor-gin sets it itself: the run's length is Experiment.total_env_steps)"),
        (["--gin_bindings=MultiTaskData.replay_device = 'cuda:99'"], "MultiTaskData.replay_device = 'cuda:99': this machine has"),
        # gin's own errors: its location lines become one parenthesis, an unbound macro is not followed by the config.
        (["--gin_bindings=Foo.bar = 1"], """No configurable matching 'Foo' (in --gin_bindings "Foo.bar = 1") (valid: Adam,"""),
        (["--gin_file={tmp}/unknown_parameter.gin"],
         "unknown_parameter.gin line 2: PolicyCorrection.lamm = 2.0) (did you mean lam?)"),
        (["--gin_bindings=MultiTaskLearner.network = %NOPE"],
         "error: macro %NOPE is used but never bound: add 'NOPE = ...' to a gin file or --gin_bindings"),
        # Type errors name the binding and the type.
        (["--gin_bindings=Experiment.total_env_steps = 'lots'"], "Experiment.total_env_steps = 'lots': expected int, got str"),
        # A class where an instance is wanted, an instance where a class or factory is: the other call form.
        (["--gin_bindings=Experiment.task_set = @PointGoals"],
         "Experiment.task_set = @PointGoals: expected TaskSet; bind @PointGoals() (an instance), not @PointGoals"),
        (["--gin_bindings=MultiTaskLearner.network = @OneHotMLP"], "expected Network or None; bind @OneHotMLP() (an instance), not @OneHotMLP"),
        (["--gin_bindings=MultiTaskLearner.backbone = @SAC()"],
         "MultiTaskLearner.backbone = @SAC(): expected Callable[..., Backbone], a class or factory called with "
         "arguments of its own; bind @SAC (the class), not @SAC()"),
        (["--gin_bindings=MultiTaskLearner.correction = @PolicyCorrection()"],
         "bind @PolicyCorrection (the class), not @PolicyCorrection()"),
        (["--gin_bindings=MultiTaskData.sampler = @AllTasks()"], "bind @AllTasks (the class), not @AllTasks()"),
        (["--gin_bindings=MultiTaskLearner.actor_optimizer = @actor/Adam()"], "bind @actor/Adam (the class), not @actor/Adam()"),
        (["--gin_bindings=Experiment.task_set = @SAC()"], "Experiment.task_set = @SAC(): expected TaskSet, got an instance of SAC"),
        # Syntax errors name the binding (by gin's line in the joined bindings) or the file and line.
        (["--gin_bindings=SAC.advantage_critic = target"],
         """gin syntax error in --gin_bindings="SAC.advantage_critic = target": Failed to parse token 'target'; """
         "write 'target' in quotes for a string, or @target for a reference"),
        (["--gin_bindings=SAC.gamma = 0.99", "--gin_bindings=SAC.gamma = 0.9.9"],
         'gin syntax error in --gin_bindings="SAC.gamma = 0.9.9": Expected newline.'),
        (["--gin_bindings=HIDDEN_SIZES = (64,\n 64)", "--gin_bindings=SAC.gamma = 0.9.9"],
         'gin syntax error in --gin_bindings="SAC.gamma = 0.9.9": Expected newline.'),
        (["--gin_bindings=SAC.gamma = "], 'gin syntax error in --gin_bindings="SAC.gamma = ": Unable to parse value.'),
        (["--gin_file={tmp}/bad_syntax.gin"], "bad_syntax.gin line 3 (SAC.gamma = 0.9.9): Expected newline."),
        # Sizes that leave nothing to learn (nothing to sample: test_robustness.py, in-process).
        (["--gin_bindings=Experiment.total_env_steps = 1_000"], "leaves nothing to learn: the warm-up alone takes 1000"),
        # A strategy that cannot work (every DDP spelling: test_robustness.py).
        (["--gin_bindings=Trainer.strategy = 'ddp_spawn'"], "bind 'ddp'"),
        # Several nodes with nothing to start the others: rank 0 would wait for them for 30 minutes.
        (["--gin_bindings=Trainer.num_nodes = 2"], "Trainer.num_nodes = 2, but nothing starts the other nodes here"),
        # Values every range check would pass or that leave nothing to learn, and a file gin cannot read.
        (["--gin_bindings=SAC.initial_alpha = 1e999"], "SAC.initial_alpha = inf: not a finite number"),
        (["--gin_bindings=HIDDEN_SIZES = (64, 1e999)"], "= (64, inf): not a finite number"),
        (["--gin_bindings=Experiment.seed = -1"], "Experiment.seed must be in [0, 2**31), got -1"),
        (["--gin_bindings=HIDDEN_SIZES = (0, 0)"], "OneHotMLP.hidden_sizes needs at least one layer, each >= 1, got (0, 0)"),
        (["--gin_bindings=PointGoals.step_size = 0.0"], "PointGoals.step_size must be > 0, got 0.0"),
        (["--gin_file={tmp}/latin1.gin"], "latin1.gin is not UTF-8 text: byte 5 is 0xe9"),
        # --resume continues the run in its own folder: a --run_dir beside it would be ignored.
        (["--resume={tmp}/elsewhere"], "continues the run in its own folder, so --run_dir does not go with it"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_creates_nothing(tmp_path, args, message, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    (tmp_path / "includes_a_missing_file.gin").write_text(
        "include 'gin_configs/tiny_picor.gin'\ninclude 'gin_configs/nope.gin'\n"
    )
    (tmp_path / "bad_syntax.gin").write_text("import picor_gin.backbones\n\nSAC.gamma = 0.9.9\n")
    (tmp_path / "unknown_parameter.gin").write_text("include 'gin_configs/tiny_picor.gin'\nPolicyCorrection.lamm = 2.0\n")
    (tmp_path / "latin1.gin").write_bytes("# café\n".encode("latin-1"))
    # An operative config written before the renames (its first lines, as a run folder keeps them).
    (tmp_path / "old_config.gin").write_text(
        "import picor_gin.backbones\nimport picor_gin.constraints as picor_gin2\n\n"
        "# Parameters for PiCor:\nPiCor.lam = 10.0\nPiCor.constraint = @QuadraticPenalty\n"
    )
    args = [arg.format(tmp=tmp_path) for arg in args]
    base = "gin_configs/smoke/mt10_picor.gin" if any("MetaWorld" in a for a in args) else "gin_configs/tiny_picor.gin"
    result = run_in_process(monkeypatch, capsys, f"--gin_file={base}", *args, f"--run_dir={run_dir}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "In call to configurable" not in lines[0] and " object at 0x" not in lines[0]  # gin's trailers, reprs
    assert "In bindings string" not in lines[0] and "In file" not in lines[0] and "^" not in lines[0]
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "binding, line",
    [
        ("Experiment.total_env_steps = 0", "error: Experiment.total_env_steps must be >= 1, got 0"),
        # Raised three configurable calls deep (SoftmaxAlphaWeights in PolicyCorrection in MultiTaskLearner).
        ("SoftmaxAlphaWeights.tau = 0.0", "error: SoftmaxAlphaWeights.tau must be > 0, got 0.0"),
    ],
)
def test_a_configurable_refusal_is_its_message_alone_without_gins_call_trailers(binding, line, tmp_path, monkeypatch, capsys):
    result = run_in_process(monkeypatch, capsys, "--gin_file=gin_configs/tiny_picor.gin",
                            f"--gin_bindings={binding}", f"--run_dir={tmp_path / 'run'}")
    assert result.returncode == 2 and result.stderr.strip() == line


def test_an_unknown_flag_exits_2_with_one_error_line(capsys):
    from picor_gin.run import cli

    with pytest.raises(SystemExit) as exited:
        cli.parse_args(["--gin_file=gin_configs/tiny_picor.gin", "--foo"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == "error: unrecognized arguments: --foo (see --help)\n"


def test_help_gives_the_exit_statuses_and_what_resume_applies_with_the_flags_unchanged(monkeypatch, capsys):
    from picor_gin.run import cli

    monkeypatch.setattr(sys, "argv", ["run.py"])
    monkeypatch.setenv("COLUMNS", "200")  # the usage on one line
    with pytest.raises(SystemExit) as exited:
        cli.parse_args(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "usage: run.py [-h] [--gin_file GIN_FILE] [--gin_bindings GIN_BINDINGS] [--run_dir RUN_DIR] [--resume DIR]"
    )
    statuses = out[out.index("exit status:"):].splitlines()[1:4]
    assert [line.split()[0] for line in statuses] == ["0", "1", "2"]
    assert "done" in statuses[0] and "during the run" in statuses[1] and "bad input" in statuses[2]
    assert "--resume DIR reads DIR/config.gin, then applies any --gin_file and --gin_bindings on top" in out
    assert "docs/running.md" in out and (REPO / "docs" / "running.md").is_file()


def test_a_resume_of_a_run_folder_another_process_holds_is_refused_leaving_it_as_it_was(short_run, tmp_path,
                                                                                      monkeypatch, capsys):
    """A sweep's run and a manual --resume of it would both write the folder: the second is refused."""
    import fcntl
    import shutil

    run_dir = tmp_path / "held"
    shutil.copytree(short_run[0], run_dir)
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    holder = os.open(run_dir, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running launch/run.py holds it
    try:
        result = run_in_process(monkeypatch, capsys, "--resume", str(run_dir),
                                "--gin_bindings=Experiment.total_env_steps = 1_300")
    finally:
        os.close(holder)
    assert result.returncode == 2 and result.stderr == (
        f"error: run folder {run_dir} is in use by another process (a run, a sweep or a --resume); "
        "wait for it to end or stop it, then --resume\n"
    )
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before


def test_existing_run_folder_without_resume_is_bad_input(short_run, monkeypatch, capsys):
    run_dir, _ = short_run
    result = run_in_process(monkeypatch, capsys, "--gin_file=gin_configs/tiny_picor.gin", f"--run_dir={run_dir}")
    assert result.returncode == 2 and "--resume" in result.stderr


def test_a_run_folder_that_cannot_be_created_is_bad_input_in_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("")
    result = run_in_process(monkeypatch, capsys, "--gin_file=gin_configs/tiny_picor.gin",
                            f"--run_dir={tmp_path / 'a_file' / 'run'}")
    assert result.returncode == 2 and result.stderr.strip() == f"error: cannot create the run folder {tmp_path / 'a_file' / 'run'}: Not a directory"


def test_resume_after_kill_continues_from_the_checkpoint(tmp_path):
    import subprocess
    import time

    run_dir = tmp_path / "killed"
    args = [
        "--gin_file=gin_configs/tiny_picor.gin",
        "--gin_bindings=Experiment.total_env_steps = 1_600",
        "--gin_bindings=Experiment.checkpoint_every_env_steps = 1_200",
        "--gin_bindings=Experiment.eval_every_env_steps = 100",
    ]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "launch" / "run.py"), *args, f"--run_dir={run_dir}"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.kill()  # SIGKILL: no handler runs
    process.wait()
    assert checkpoint.exists()
    saved = torch.load(checkpoint, weights_only=False)
    saved_steps = saved["MultiTaskData"]["env_steps"]
    assert 1_200 <= saved_steps < 1_600

    result = run_cli("--resume", str(run_dir), "--gin_bindings=critic/Adam.lr = 1e-3")
    assert result.returncode == 0, result.stderr[-3000:]
    # Lightning's "dataloader is not resumable" is false: the data module restores its own state.
    assert "not resumable" not in result.stderr
    # The final line keeps the whole run's counts apart from this attempt's time and rates.
    summary = json.loads((run_dir / "summary.json").read_text())
    attempt = re.fullmatch(r"1600 env steps, 600 updates in all; this attempt: (\d+) env steps in \d+ s \(.*\)",
                           result.stdout.strip().splitlines()[-1])
    assert attempt and int(attempt[1]) == 1_600 - saved_steps
    assert summary["total_env_steps"] == 1_600 and summary["updates"] == 600
    rows = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    steps = [row["env_steps"] for row in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 1_600
    # Forgetting went on from the bests of the rows kept at the checkpoint.
    assert [row["forgetting"] for row in rows] == forgetting_history(rows)[0]
    final = torch.load(checkpoint, weights_only=False)
    assert final["updates"] == 600  # 1_600 - 1_000 warm-up steps: no update repeated or lost
    # The binding given with --resume set the critic's lr; its Adam state went on from the checkpoint.
    rates = [state["param_groups"][0]["lr"] for state in final["optimizer_states"]]
    critic = rates.index(1e-3)
    assert rates.count(1e-3) == 1 and set(rates) - {1e-3} == {3e-4}
    assert int(final["optimizer_states"][critic]["state"][0]["step"]) == 600
    # The pre-crash transitions are still in the buffers, followed by the resumed ones.
    for before, after in zip(saved["MultiTaskData"]["buffers"], final["MultiTaskData"]["buffers"]):
        n = before["_storage"]["_len"]
        old, new = before["_storage"]["_storage"], after["_storage"]["_storage"]
        assert torch.equal(old["observation"][:n], new["observation"][:n])
    assert sum(b["_storage"]["_len"] for b in final["MultiTaskData"]["buffers"]) == 1_600
    # TensorBoard shows each env step once: what the killed run logged after the checkpoint is purged.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    logged = [e.step for e in events.Scalars("eval/mean_score")]
    assert logged == sorted(set(logged)) and logged[-1] == 1_600


def _replay(path):
    """Per task, the transitions a checkpoint file holds for its process."""
    state = torch.load(path, weights_only=False)["MultiTaskData"]
    return [b["_storage"]["_storage"]["observation"][: b["_storage"]["_len"]] for b in state["buffers"]]


def test_two_process_ddp_run_stays_in_sync_counts_globally_and_resumes_each_process_own_replay(tmp_path):
    """Lightning re-runs this command for rank 1, which reuses rank 0's folder. Warm-up is
    2 processes x 4 tasks x 250 steps = 2_000 global env steps, then 300 updates per process."""
    run_dir = tmp_path / "ddp"
    checkpoints = run_dir / "checkpoints"
    result = run_cli(
        "--gin_file=gin_configs/tiny_picor.gin",
        "--gin_bindings=Experiment.total_env_steps = 2_600",
        *TWO_DDP_PROCESSES,
        f"--run_dir={run_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    checksums = summary["process_parameter_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]  # all-reduced every update
    assert summary["total_env_steps"] == 2_600 and summary["updates"] == 300
    steps = [json.loads(line)["env_steps"] for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 2_600  # one evaluator, global steps
    assert result.stdout.count("run folder:") == 1
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "last.ckpt", "last.ckpt.sha256", "last.rank1.ckpt", "last.rank1.ckpt.sha256"]
    for name in ("last.ckpt", "last.rank1.ckpt"):  # each process digests its own file
        digest = hashlib.sha256((checkpoints / name).read_bytes()).hexdigest()
        assert (checkpoints / f"{name}.sha256").read_text() == digest + "\n"
    rank0, rank1 = _replay(checkpoints / "last.ckpt"), _replay(checkpoints / "last.rank1.ckpt")
    assert sum(map(len, rank0)) == sum(map(len, rank1)) == 1_300  # each process's local env steps
    assert not torch.equal(rank0[0], rank1[0])  # each process collected its own transitions

    # Resumed on 2 processes: each continues with its own buffers, which grow after them.
    resumed = run_cli(f"--resume={run_dir}", "--gin_bindings=Experiment.total_env_steps = 2_700")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for before, path in ((rank0, "last.ckpt"), (rank1, "last.rank1.ckpt")):
        after = _replay(checkpoints / path)
        assert all(torch.equal(old, new[: len(old)]) for old, new in zip(before, after))
        assert sum(map(len, after)) == 1_350

    # Resumed on 1 process: it says what it does with rank 1's buffers, and takes rank 0's.
    resumed = run_cli(
        f"--resume={run_dir}",
        "--gin_bindings=Experiment.total_env_steps = 2_900",
        "--gin_bindings=Trainer.devices = 1",
        "--gin_bindings=Trainer.strategy = 'auto'",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpointed on 2" in resumed.stderr and "not used" in resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_env_steps"] == 2_900 and summary["updates"] == 300 + 50 + 200
    steps = [json.loads(line)["env_steps"] for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 2_900


def _copy_run(run_dir, destination):
    import shutil

    shutil.copytree(run_dir, destination)
    return destination


def test_a_truncated_last_checkpoint_falls_back_to_the_previous_one(short_run, tmp_path, monkeypatch, capsys):
    """short_run checkpointed at 1_100 (previous.ckpt) and 1_200 (last.ckpt)."""
    run_dir = _copy_run(short_run[0], tmp_path / "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # truncated mid-write by a crash
    result = run_in_process(monkeypatch, capsys, "--resume", str(run_dir), "--gin_bindings=Experiment.total_env_steps = 1_250")
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "last.ckpt: damaged" in notes[0] and "previous.ckpt (env step 1100)" in notes[0]
    resumed = torch.load(last, weights_only=False)
    assert resumed["MultiTaskData"]["env_steps"] == 1_250 and resumed["updates"] == 100 + 150
    steps = [json.loads(line)["env_steps"] for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert steps == [1_100, 1_250]  # the 1_200 row belonged to the lost checkpoint


@pytest.mark.parametrize("damage, says", [
    ("changed_bytes", "damaged: its SHA-256 matches no digest"),
    ("garbage_without_digests", "cannot be read"),
    ("another_version", "another version"),
])
def test_resume_with_no_readable_checkpoint_is_bad_input_naming_both_files(short_run, tmp_path, damage, says, monkeypatch, capsys):
    run_dir = _copy_run(short_run[0], tmp_path / "run")
    for name in ("last.ckpt", "previous.ckpt"):
        path = run_dir / "checkpoints" / name
        if damage == "changed_bytes":  # one flipped byte, which torch.load alone would read
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
            continue
        Path(f"{path}.sha256").unlink()  # neither a foreign file nor an older version's has digests
        if damage == "garbage_without_digests":
            path.write_bytes(b"\x00not a checkpoint" * 100)
        else:  # a readable file without this version's entries
            torch.save({"state_dict": {}, "epoch": 0}, path)
    before = sorted(p.name for p in run_dir.rglob("*"))
    result = run_in_process(monkeypatch, capsys, "--resume", str(run_dir))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "last.ckpt: " in lines[0] and "previous.ckpt: " in lines[0]
    assert lines[0].count(says) == 2
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # the run folder is left as it was


def _files(run_dir):
    """Every file of a run folder with its bytes and modification time."""
    return {p.relative_to(run_dir): (p.read_bytes(), p.stat().st_mtime_ns) for p in run_dir.rglob("*") if p.is_file()}


def _resume_finds_nothing_to_do(monkeypatch, capsys, run_dir, env_steps, total, *bindings):
    """--resume of a finished run: exit 0, one line on stdout, and the folder as it was."""
    before = _files(run_dir)
    result = run_in_process(monkeypatch, capsys, "--resume", str(run_dir), *bindings)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        f"{run_dir} already finished at {env_steps:,} env steps (Experiment.total_env_steps = {total:_}); nothing "
        'to do; to extend it add --gin_bindings="Experiment.total_env_steps = M" with a larger M'
    ]
    assert _files(run_dir) == before  # config.gin, summary.json, eval.jsonl, checkpoints, events


@pytest.mark.parametrize("bindings, total", [([], 1_200), (["--gin_bindings=Experiment.total_env_steps = 1_100"], 1_100)])
def test_resuming_a_finished_replay_run_without_a_larger_budget_touches_nothing(short_run, tmp_path, bindings, total,
                                                                                 monkeypatch, capsys):
    run_dir = _copy_run(short_run[0], tmp_path / "run")
    _resume_finds_nothing_to_do(monkeypatch, capsys, run_dir, 1_200, total, *bindings)


def test_resuming_a_rollout_run_stopped_in_its_last_rollout_touches_nothing(tmp_path, monkeypatch, capsys):
    """RolloutData ends before the rollout that would pass the budget, and a resume restarts a
    rollout the checkpoint cut short: a checkpoint at the budget, even mid-rollout (as SIGTERM
    leaves it), has nothing left to do. One rollout of tiny_mtppo is 960 env steps, 80 updates."""
    run_dir = tmp_path / "ppo"
    result = run_in_process(monkeypatch, capsys, "--gin_file=gin_configs/tiny_mtppo.gin",
                            "--gin_bindings=Experiment.total_env_steps = 960", f"--run_dir={run_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["RolloutData"]["env_steps"] == 960 and checkpoint["RolloutData"]["rollout_updates"] == 80
    checkpoint["RolloutData"]["rollout_updates"] = 30
    torch.save(checkpoint, last)
    write_digest(last)  # edited on purpose: a file of its own, not a damaged one
    _resume_finds_nothing_to_do(monkeypatch, capsys, run_dir, 960, 960)


def test_a_file_system_that_cannot_lock_folders_runs_unguarded(tmp_path, monkeypatch):
    """NFS can refuse flock on a folder (EBADF, ENOLCK): the run goes on without the guard."""
    import fcntl

    from picor_gin.run.files import run_folder_lock

    def refuse(descriptor, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with run_folder_lock(tmp_path) as ours:
        assert ours
