"""Every gin file parses strictly and builds its Experiment; bindings reach the objects."""
from __future__ import annotations

import re
from pathlib import Path

import gin
import pytest

import picor_gin  # noqa: F401
from picor_gin.correction import (
    ConstraintSizedStep, PenaltyDescent, PolicyCorrection, QuadraticPenalty, SoftmaxAlphaWeights,
)
from picor_gin.networks import OneHotMLP
from picor_gin.run.experiment import Experiment
from tests.test_ktm_drl import fake_teacher_run

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT_FILES = sorted(p.relative_to(REPO) for p in (REPO / "gin_configs").glob("*.gin"))


def _build(gin_file: str, *bindings: str, tmp_path: Path, extra_files: tuple[str, ...] = ()):
    gin.add_config_file_search_path(str(REPO))
    files = [str(REPO / gin_file), *(str(REPO / f) for f in extra_files)]
    gin.parse_config_files_and_bindings(files, list(bindings), skip_unknown=False)
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
def test_every_experiment_file_builds_under_its_own_name(gin_file, tmp_path):
    """The name is the default run folder and the report's row: a file that inherited another's
    would mix its runs into that experiment's."""
    _build(str(gin_file), tmp_path=tmp_path)
    assert gin.query_parameter("Experiment.name") == gin_file.stem


def test_an_override_reaches_the_object(tmp_path):
    built = _build("gin_configs/tiny_picor.gin", "PolicyCorrection.lam = 1729.0", "critic/Adam.lr = 0.00123", tmp_path=tmp_path)
    assert built.module.correction.constraint.lam == 1729.0
    critic_optimizer = built.module.configure_optimizers()[1]
    assert critic_optimizer.param_groups[0]["lr"] == 0.00123
    assert built.module.configure_optimizers()[0].param_groups[0]["lr"] == 3e-4


def test_tiny_mtsac_is_sac_without_a_correction_and_tiny_picor_the_code_defaults(tmp_path):
    picor = _build("gin_configs/tiny_picor.gin", tmp_path=tmp_path)
    gin.clear_config()
    mtsac = _build("gin_configs/tiny_mtsac.gin", tmp_path=tmp_path)
    assert mtsac.module.correction is None and not mtsac.data.critic_on_every_task
    assert type(mtsac.module.backbone) is type(picor.module.backbone)
    # The shipped PiCor is PolicyCorrection's defaults: base/picor.gin binds nothing else of it.
    correction, defaults = picor.module.correction, PolicyCorrection(backbone=picor.module.backbone)
    assert isinstance(correction.weighting, SoftmaxAlphaWeights) and correction.weighting.tau == 1.0
    assert type(correction.solver) is type(defaults.solver) is ConstraintSizedStep and correction.solver.max_kl == 0.01
    assert type(correction.constraint) is QuadraticPenalty
    assert (correction.constraint.lam, correction.constraint.c, correction.steps) == (10.0, -0.01, 1)
    assert picor.data.critic_on_every_task


def test_the_papers_picor_is_one_file_added_to_a_picor_file(tmp_path):
    built = _build("gin_configs/tiny_picor.gin", tmp_path=tmp_path, extra_files=("gin_configs/ablation/paper_picor.gin",))
    correction = built.module.correction
    assert type(correction.solver) is PenaltyDescent and correction.constraint.lam == 1.0
    assert not built.data.critic_on_every_task


ABLATION_FILES = sorted(p.relative_to(REPO) for p in (REPO / "gin_configs" / "ablation").glob("*_ada*_cor*.gin"))


def test_the_ablation_grid_covers_ada_x_cor_on_every_benchmark():
    assert {p.stem for p in ABLATION_FILES} == {
        f"{bench}_ada{ada}_cor{cor}" for bench in ("tiny", "mt10", "halfcheetah") for ada in "OX" for cor in "OX"
    }


@pytest.mark.parametrize("gin_file", ABLATION_FILES, ids=str)
def test_each_ablation_cell_binds_its_weighting_and_constraint(gin_file):
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([str(REPO / gin_file)], [], skip_unknown=False)
    ada, cor = gin_file.stem.split("_")[-2:]
    correction = gin.query_parameter("MultiTaskLearner.correction")
    if cor == "corX":  # without a correction nothing reads the weights: Ada O and Ada X are one run
        assert correction is None
    else:
        assert correction.selector == "PolicyCorrection"
        weighting = gin.query_parameter("PolicyCorrection.weighting").selector
        assert weighting == ("SoftmaxAlphaWeights" if ada == "adaO" else "UniformWeights")
    assert gin.query_parameter("Experiment.name") == gin_file.stem


STUDY_FILES = sorted(
    p.relative_to(REPO) for folder in ("interference", "uneven") for p in (REPO / "gin_configs" / folder).glob("*.gin")
)


@pytest.mark.parametrize("gin_file", STUDY_FILES, ids=str)
def test_each_study_arm_builds_on_its_benchmark(gin_file, tmp_path):
    from picor_gin.correction.solvers import ConstraintSizedStep, PenaltyDescent, TrustRegionProjection
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
        bound = re.findall(r"^PolicyCorrection\.solver = @(\w+)\(\)", (REPO / gin_file).read_text(), re.M)
        solvers = {cls.__name__: cls for cls in (ConstraintSizedStep, PenaltyDescent, TrustRegionProjection)}
        assert len(bound) == 1 and type(built.module.correction.solver) is solvers[bound[0]]
    assert gin.query_parameter("Experiment.name") == gin_file.stem


PPO_STUDY_FILES = sorted(p.relative_to(REPO) for p in (REPO / "gin_configs" / "interference_ppo").glob("*.gin"))


@pytest.mark.parametrize("gin_file", PPO_STUDY_FILES, ids=str)
def test_each_ppo_interference_arm_has_the_same_budget_and_the_picor_arms_the_same_dwell(gin_file, tmp_path):
    from picor_gin.samplers import AllTasks, UniformEveryK

    built = _build(str(gin_file), tmp_path=tmp_path)
    assert gin.query_parameter("Experiment.total_env_steps") == 160_000
    assert gin.query_parameter("Experiment.eval_every_env_steps") == 2_000
    if gin_file.stem == "interference_mtppo":
        assert isinstance(built.data.sampler, AllTasks) and built.module.correction is None
    else:
        assert isinstance(built.data.sampler, UniformEveryK) and built.data.sampler.k == 5
        assert (built.module.correction is None) == gin_file.stem.endswith("corX")
    assert gin.query_parameter("Experiment.name") == gin_file.stem


DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A binding as the docs write one: `MultiTaskLearner.network = ...`, `correction/Adam.lr = ...`.
DOC_BINDING = re.compile(r"(?<![\w.])((?:\w+/)*[A-Z]\w+)\.([a-z_]\w*) ?= ")


def _doc_bindings() -> dict[str, str]:
    """Each configurable.parameter a doc binds, with the first doc that does; the renamed names
    that docs/running.md lists are left out (they are meant to be refused)."""
    from picor_gin.run.renamed import RENAMED
    found: dict[str, str] = {}
    for doc in DOC_FILES:
        for match in DOC_BINDING.finditer(doc.read_text()):
            selector = f"{match[1]}.{match[2]}"
            if selector not in RENAMED and match[1] not in RENAMED:
                found.setdefault(selector, doc.name)
    return found


def test_every_binding_the_docs_show_names_a_real_configurable_and_parameter():
    import picor_gin.run.cli  # noqa: F401  (registers what launch/run.py registers: TorchJD's aggregators too)
    bindings = _doc_bindings()
    assert len(bindings) > 40, "the pattern no longer finds the docs' bindings"
    wrong = []
    for selector, doc in bindings.items():
        try:
            with gin.unlock_config():
                gin.parse_config(f"{selector} = None")
        except ValueError as error:
            wrong.append(f"{doc}: {selector}: {str(error).splitlines()[0]}")
        gin.clear_config()
    assert not wrong, "\n".join(wrong)
