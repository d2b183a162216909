"""A command-line binding that the built run never reads is named, with why, instead of doing
nothing in silence; scoped, unscoped and macro bindings that are read are not."""
from __future__ import annotations

import gin

from picor_gin.data import MultiTaskData
from picor_gin.learner import MultiTaskLearner
from picor_gin.run.experiment import Experiment
from picor_gin.run.unused_bindings import unused_bindings
from tests.conftest import REPO, run_in_process

READ = ["actor/Adam.lr = 1e-3", "Adam.eps = 1e-6", "HIDDEN_SIZES = (8, 8)", "SAC.initial_alpha = 0.2"]
NOT_READ = {
    "PolicyCorrection.lam = 3.0": "this run builds no PolicyCorrection",  # MTSAC has no correction
    "MetaWorldMT10.goal_seed = 1": "this run builds no MetaWorldMT10",
    "correction/Adam.lr = 1e-3": "this run builds no correction/Adam",  # Adam is built, not in that scope
    "TD3.policy_delay = 3": "this run builds no TD3",
    "UNUSED_MACRO = 3": "no binding this run reads uses %UNUSED_MACRO",
}


def test_bindings_of_what_the_learner_did_not_build_are_named_and_read_ones_are_not():
    bindings = [*READ, *NOT_READ]
    gin.add_config_file_search_path(str(REPO))
    gin.parse_config_files_and_bindings([str(REPO / "gin_configs/tiny_mtsac.gin")], bindings, skip_unknown=False)
    module = MultiTaskLearner(obs_dim=6, action_dim=2, num_tasks=4, task_names=list("abcd"))
    module.configure_optimizers()
    assert unused_bindings(bindings) == list(NOT_READ.items())


def test_a_parameter_the_caller_passes_itself_is_named_though_its_configurable_is_built():
    """UnevenPointGoals builds PointGoals with its own step_size, so a PointGoals.step_size
    binding does nothing there, while UnevenPointGoals.episode_steps is read."""
    gin.add_config_file_search_path(str(REPO))
    bindings = ["PointGoals.step_size = 0.5", "UnevenPointGoals.episode_steps = 20"]
    gin.parse_config_files_and_bindings(
        [str(REPO / "gin_configs/uneven/uneven_adaO_corO.gin")], bindings, skip_unknown=False,
    )
    assert Experiment().task_set.step_size == 0.1
    assert unused_bindings(bindings) == [
        ("PointGoals.step_size = 0.5", "the code that builds PointGoals passes step_size itself"),
    ]


def test_the_run_warns_of_an_unread_binding_and_still_runs(tmp_path, monkeypatch, capsys):
    result = run_in_process(
        monkeypatch, capsys, "--gin_file=gin_configs/tiny_mtsac.gin", "--gin_bindings=PolicyCorrection.lam = 3.0",
        "--gin_bindings=Experiment.total_env_steps = 1_001", f"--run_dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "warning: --gin_bindings 'PolicyCorrection.lam = 3.0' has no effect: this run builds no PolicyCorrection"
    ]


def test_a_scoped_binding_is_read_only_where_its_scope_begins_the_calls_scope():
    """gin applies b/X.p under scope b, not under a/b: there, only a/X.p is read."""
    @gin.configurable("scope_probe", module="tests.unused_bindings")
    def scope_probe(p: int = 0) -> int:
        return p

    bindings = ["b/scope_probe.p = 5", "a/scope_probe.p = 7"]
    gin.parse_config(bindings)
    with gin.config_scope("a"), gin.config_scope("b"):
        assert scope_probe() == 7
    assert unused_bindings(bindings) == [("b/scope_probe.p = 5", "this run builds no b/scope_probe")]


def test_a_run_refused_after_the_build_still_says_one_line_and_no_warning(tmp_path, monkeypatch, capsys):
    """The warnings wait for the first update: bad input stays one line on stderr."""

    def refuse(self, env, task_ids):  # a failure in the first collection, inside Lightning's fit
        raise RuntimeError("the replay device went away")

    monkeypatch.setattr(MultiTaskData, "_collector", refuse)
    result = run_in_process(
        monkeypatch, capsys, "--gin_file=gin_configs/tiny_mtsac.gin", "--gin_bindings=PolicyCorrection.lam = 3.0",
        f"--run_dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2 and result.stderr.splitlines() == ["error: the replay device went away"]
