"""The launch scripts' help: defaults shown where they say something, the docstring's first
paragraph as the description, its exit statuses as the epilog."""
from __future__ import annotations

import argparse

import pytest

from picor_gin.cli_help import DefaultsHelpFormatter, description, exit_status
from tests.conftest import load_launch_script


def test_help_shows_meaningful_defaults_only():
    parser = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    parser.add_argument("--time", default="72:00:00", help="a job's time limit")
    parser.add_argument("--seeds", nargs="+", required=True, help="one run per seed")
    parser.add_argument("--root", default=None, help="where the runs go")
    parser.add_argument("--dry_run", action="store_true", help="run nothing")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    text = " ".join(parser.format_help().split())
    assert "a job's time limit (default: 72:00:00)" in text
    assert "bootstrap replications (default: 2000)" in text and "bootstrap seed (default: 0)" in text
    assert "default: None" not in text and "default: False" not in text
    assert "one run per seed --root" in text and "run nothing" in text


def test_description_is_the_first_paragraph_on_one_line():
    doc = """Runs gin files x seeds: here
    or on SLURM.

        python launch/sweep.py ...
    """
    assert description(doc) == "Runs gin files x seeds: here or on SLURM."


def test_exit_status_is_its_sentence_to_the_end_of_the_paragraph():
    doc = """Plots curves.

    Curves over seeds. Exit status: 0 done; 2 nothing
    to plot.

    More text.
    """
    assert exit_status(doc) == "Exit status: 0 done; 2 nothing to plot."


@pytest.mark.parametrize("script, phrases", [
    ("report", ["RUN_OR_ROOT run folders, or folders to search for them",
                "bootstrap replications (default: 2000)", "bootstrap seed (default: 0)", "Exit status: 0 done; 2 nothing"]),
    ("plot", ["RUN_OR_ROOT run folders, or folders to search for them", "folder for the PNG files (default: plots)",
              "Exit status: 0 done; 2 nothing to plot"]),
    ("collect", ["Exit status: 0 done; 2 RUNS_ROOT is not a folder."]),
    ("reproduce", ["Exit status: 0 every run done; 1 some run failed (listed with its log); 2 bad input."]),
    ("sweep", ["Exit status: 0 every run done; 1 some run failed (listed with its log); 2 bad input. docs/sweeps.md"]),
])
def test_each_launch_scripts_help_names_its_paths_and_defaults(script, phrases, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_launch_script(script).main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(phrase in text for phrase in phrases), text
