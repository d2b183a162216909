"""Every gin file parses strictly and builds its Experiment; bindings reach the objects."""
from __future__ import annotations

import re
from pathlib import Path

import gin
import pytest

import picor_gin  # noqa: F401
from picor_gin.experiment import Experiment
from picor_gin.networks import OneHotMLP
from picor_gin.weighting import SoftmaxAlphaWeights, UniformWeights
from tests.test_ktm_drl import fake_teacher_run

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT_FILES = sorted(p.relative_to(REPO) for p in (REPO / "gin_configs").glob("*.gin"))


def _build(gin_file: str, *bindings: str, tmp_path: Path):
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([str(REPO / gin_file)], list(bindings), skip_unknown=False)
    if str(gin_file).endswith("_ktm.gin"):  # a KTM-DRL student reads its teachers when it is built
        _fake_teachers(tmp_path / "teachers")
    return Experiment().build(tmp_path)


def _fake_teachers(folder: Path) -> None:
    """A teacher run folder per task of the configured set, shaped like its student's network."""
    task_set = Experiment().task_set
    env = task_set.make_env(0)
    obs_dim, action_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    hidden = tuple(OneHotMLP().hidden_sizes)
    for name in task_set.names:
        fake_teacher_run(folder / name, name, obs_dim=obs_dim, action_dim=action_dim, hidden=hidden)
    with gin.unlock_config():
        gin.bind_parameter("KTMDRL.teachers", str(folder))


@pytest.mark.parametrize("gin_file", EXPERIMENT_FILES, ids=str)
def test_every_experiment_file_builds(gin_file, tmp_path):
    built = _build(str(gin_file), tmp_path=tmp_path)
    assert built.module.num_tasks == built.data.task_set.num_tasks


def test_an_override_reaches_the_object(tmp_path):
    built = _build("gin_configs/tiny_picor.gin", "PiCor.lam = 1729.0", "critic/Adam.lr = 0.00123", tmp_path=tmp_path)
    assert built.module.constraint.lam == 1729.0
    critic_optimizer = built.module.configure_optimizers()[1]
    assert critic_optimizer.param_groups[0]["lr"] == 0.00123
    assert built.module.configure_optimizers()[0].param_groups[0]["lr"] == 3e-4


def test_tiny_mtsac_is_tiny_picor_with_ada_x_and_cor_x(tmp_path):
    picor = _build("gin_configs/tiny_picor.gin", tmp_path=tmp_path).module
    gin.clear_config()
    mtsac = _build("gin_configs/tiny_mtsac.gin", tmp_path=tmp_path).module
    assert isinstance(picor.weighting, SoftmaxAlphaWeights) and picor.correction_steps > 0
    assert isinstance(mtsac.weighting, UniformWeights) and mtsac.correction_steps == 0
    assert type(mtsac.backbone) is type(picor.backbone)


ABLATION_FILES = sorted(p.relative_to(REPO) for p in (REPO / "gin_configs" / "ablation").glob("*.gin"))


def test_the_ablation_grid_covers_ada_x_cor_on_every_benchmark():
    assert {p.stem for p in ABLATION_FILES} == {
        f"{bench}_ada{ada}_cor{cor}" for bench in ("tiny", "mt10", "halfcheetah") for ada in "OX" for cor in "OX"
    }


@pytest.mark.parametrize("gin_file", ABLATION_FILES, ids=str)
def test_each_ablation_cell_binds_its_weighting_and_constraint(gin_file):
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([str(REPO / gin_file)], [], skip_unknown=False)
    ada, cor = gin_file.stem.split("_")[-2:]
    weighting = gin.query_parameter("PiCor.weighting").selector
    constraint = gin.query_parameter("PiCor.constraint").selector
    assert weighting == ("SoftmaxAlphaWeights" if ada == "adaO" else "UniformWeights")
    assert constraint == ("QuadraticPenalty" if cor == "corO" else "NoCorrection")
    assert gin.query_parameter("Experiment.name") == gin_file.stem


STUDY_FILES = sorted(
    p.relative_to(REPO) for folder in ("interference", "uneven") for p in (REPO / "gin_configs" / folder).glob("*.gin")
)


@pytest.mark.parametrize("gin_file", STUDY_FILES, ids=str)
def test_each_study_arm_builds_on_its_benchmark(gin_file, tmp_path):
    from picor_gin.correction_solvers import ConstraintSizedStep, PenaltyDescent, TrustRegionProjection
    from picor_gin.samplers import UniformEveryK
    from picor_gin.tasks import PointGoals, UnevenPointGoals

    built = _build(str(gin_file), tmp_path=tmp_path)
    assert built.module.task_names  # the experiment built
    if gin_file.parent.name == "interference":
        assert type(built.data.task_set) is PointGoals and isinstance(built.data.sampler, UniformEveryK)
        assert built.data.sampler.k == 250  # the dwell that makes tasks interfere
    else:
        assert type(built.data.task_set) is UnevenPointGoals and built.data.sampler.k == 1
    if "corX" not in gin_file.stem:
        # Each correcting arm binds its solver in its own file, so a later default cannot
        # change what its runs measured.
        bound = re.findall(r"^PiCor\.correction_solver = @(\w+)\(\)", (REPO / gin_file).read_text(), re.M)
        solvers = {cls.__name__: cls for cls in (ConstraintSizedStep, PenaltyDescent, TrustRegionProjection)}
        assert len(bound) == 1 and type(built.module.correction_solver) is solvers[bound[0]]
    assert gin.query_parameter("Experiment.name") == gin_file.stem
