"""The submitit backends of launch/sweep.py (docs/sweeps.md), exercised with submitit's local
executor (real subprocesses, no SLURM), and a 2-"node" DDP run on localhost."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import torch

from picor_gin.sweeps import slurm as cluster
from picor_gin.reports.tables import build_report
from picor_gin.sweeps.plan import PlannedRun
from tests.conftest import REPO
from tests.test_sweep_report import sweep

SHORT = [  # 4 tasks x 25 warm-up steps, then 100 updates; checkpoints only when stopped and at the end
    "Experiment.total_env_steps = 200", "Experiment.eval_every_env_steps = 25",
    "Experiment.checkpoint_every_env_steps = 1_000", "MultiTaskData.warmup_env_steps_per_task = 25",
]


def test_slurm_time_formats_become_minutes():
    assert [cluster.minutes(t) for t in ("72:00:00", "3-00:00:00", "90", "1:30", "2-12", "0:00:01")] == [
        4320, 4320, 90, 2, 3600, 1]
    with pytest.raises(ValueError, match="--time must look like"):
        cluster.minutes("3 days")


def test_dry_run_prints_the_sbatch_script_and_submits_nothing(tmp_path, capsys):
    root = tmp_path / "sweep"
    argv = ["--gin_files", "gin_configs/tiny_picor.gin", "gin_configs/tiny_mtsac.gin", "--seeds", "0", "1", "2",
            "--root", str(root), "--backend", "slurm", "--partition", "gpu_long", "--gpus_per_job", "1",
            "--time", "72:00:00", "--dry_run"]
    assert sweep.main(argv) == 0
    script = capsys.readouterr().out
    for line in ("#SBATCH --partition=gpu_long", "#SBATCH --gpus-per-node=1", "#SBATCH --time=4320",
                 "#SBATCH --array=0-5%6", "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1",
                 "#SBATCH --signal=USR2@90"):
        assert line in script.splitlines()
    assert "-m submitit.core._submit" in script
    assert not root.exists()


def test_a_multi_node_binding_requests_matching_nodes_and_tasks(tmp_path, capsys):
    argv = ["--gin_files", "gin_configs/tiny_picor.gin", "--seeds", "0", "--root", str(tmp_path / "sweep"),
            "--backend", "slurm", "--dry_run", "--gin_bindings", "Trainer.num_nodes = 2", "Trainer.devices = 4"]
    assert sweep.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4"} <= set(lines)
    assert not any(line.startswith("#SBATCH --array") for line in lines)  # one run: one job, no array
    assert sweep.main([*argv, "--gpus_per_job", "1"]) == 2
    assert "does not fit Trainer.num_nodes = 2 x Trainer.devices = 4" in capsys.readouterr().err


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (read from /proc: no psutil here)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _process_running(pid: int, needle: str) -> int | None:
    """The descendant of `pid` whose command line holds `needle`."""
    for child in _children(pid):
        try:
            if needle in Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                return child
        except OSError:
            continue
        found = _process_running(child, needle)
        if found is not None:
            return found
    return None


def _last_evaluated(run_dir: Path) -> int:
    """The env steps of the run's latest evaluation, -1 before the first."""
    rows = (run_dir / "eval.jsonl").read_text().splitlines() if (run_dir / "eval.jsonl").exists() else []
    try:
        return json.loads(rows[-1])["env_steps"] if rows else -1
    except json.JSONDecodeError:  # read while the row was being written
        return -1


def test_submitit_sweep_requeues_a_preempted_job_which_resumes_then_report_reads_both(tmp_path):
    """Two runs as submitit jobs; seed 0's job gets submitit's preemption signal halfway through
    its updates, checkpoints, requeues itself and resumes: no transition lost, no evaluation twice."""
    root = tmp_path / "sweep"
    command = [sys.executable, str(REPO / "launch" / "sweep.py"), "--gin_files", "gin_configs/tiny_mtsac.gin",
               "--seeds", "0", "1", "--root", str(root), "--backend", "submitit_local", "--poll_s", "0.5",
               "--gin_bindings", *SHORT]
    sweeping = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its process group holds every job it starts
    try:
        run_dir = root / "tiny_mtsac" / "seed0"
        deadline = time.monotonic() + 180
        while _last_evaluated(run_dir) < 150 and time.monotonic() < deadline:
            time.sleep(0.1)
        run_py = _process_running(sweeping.pid, f"--run_dir={run_dir}")
        job = int(Path(f"/proc/{run_py}/stat").read_text().rsplit(")", 1)[1].split()[1])  # run.py's parent
        os.kill(job, signal.SIGUSR2)  # what SLURM sends before preempting it (sbatch --signal=USR2@90)
        stdout, stderr = sweeping.communicate(timeout=180)
    finally:
        if sweeping.poll() is None:
            os.killpg(sweeping.pid, signal.SIGKILL)
    assert sweeping.returncode == 0, stdout + stderr
    assert stdout.splitlines()[-1] == "progress: 2/2 done, 0 running, 0 failed, 0 waiting"

    attempts = [line for line in (root / "tiny_mtsac" / "seed0.log").read_text().splitlines() if line.startswith("$ ")]
    assert len(attempts) == 2 and attempts[1].endswith(f"--resume={run_dir}")
    steps = [json.loads(line)["env_steps"] for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 200
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["updates"] == 100  # 200 - 100 warm-up steps: no update repeated or lost
    assert sum(b["_storage"]["_len"] for b in final["MultiTaskData"]["buffers"]) == 200  # no transition lost
    _, rows = build_report([root], reps=100)
    assert [(row.experiment, row.seeds) for row in rows] == [("tiny_mtsac", 2)]


class _FailingRun(PlannedRun):
    """A planned run whose command fails by itself at once (a stand-in for launch/run.py)."""

    def command(self, rank: int = 0) -> list[str] | None:
        return [sys.executable, "-c", "import sys; print('broken'); sys.exit(3)"]


def test_a_job_failing_by_itself_is_not_requeued(tmp_path, capsys):
    """A run that exits non-zero on its own fails its job once, naming the run's log."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the job process cannot import this file
    run = _FailingRun("broken/seed0", "unused.gin", 0, tmp_path / "sweep" / "broken" / "seed0")
    submitted = cluster.submit({cluster.Resources(1, 1, 0): [run]}, "submitit_local", tmp_path / "submitit" / "%j",
                               cluster.JobOptions(time_min=5))
    failed = cluster.follow(submitted, poll_s=0.2)
    assert [(r.name, reason) for r, reason in failed] == [
        (run.name, f"RuntimeError: launch/run.py exited 3; log {run.log}")]
    assert run.log.read_text().splitlines()[1:] == ["broken"]  # one attempt: one command line, one output
    assert "progress: 0/1 done, 0 running, 1 failed, 0 waiting" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_ddp_run_on_localhost_ends_with_identical_parameters(tmp_path):
    """Two "nodes" of one process each, started as a cluster's launcher would, with the variables
    Lightning's LightningEnvironment reads (MASTER_ADDR, MASTER_PORT, NODE_RANK, LOCAL_RANK,
    WORLD_SIZE); node 1 starts in the run's rank folder, as a SLURM job's rank 1 does."""
    run = PlannedRun("tiny_mtsac/seed0", "gin_configs/tiny_mtsac.gin", 0, tmp_path / "seed0",
                     ("Experiment.total_env_steps = 460", "MultiTaskData.warmup_env_steps_per_task = 50",
                      "Trainer.accelerator = 'cpu'", "Trainer.devices = 1", "Trainer.num_nodes = 2",
                      "Trainer.strategy = 'ddp_find_unused_parameters_true'"))
    port = str(_free_port())
    nodes = []
    for node in (0, 1):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(node),
               "LOCAL_RANK": "0", "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
        nodes.append(subprocess.Popen(run.command(rank=node), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    summary = json.loads((run.run_dir / "summary.json").read_text())
    checksums = summary["process_parameter_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]  # one update stream over both nodes
    assert summary["total_env_steps"] == 460 and summary["updates"] == 30  # 2 x 4 x 50 warm-up, then 2 x 30
    assert not (run.rank_dir(1) / "summary.json").exists()  # rank 0 alone writes the run folder's results
    # Every process's checkpoint file is in rank 0's folder, where a requeued job's --resume reads them all.
    assert (run.run_dir / "checkpoints" / "last.rank1.ckpt").is_file()
    assert not list(run.rank_dir(1).rglob("*.ckpt"))
