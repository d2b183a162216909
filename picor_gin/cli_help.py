"""The launch scripts' argparse help: each flag's default where it has one, the module
docstring's first paragraph as the description and its exit statuses as the epilog."""
from __future__ import annotations

import argparse
import re


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends '(default: X)' to a flag's help where X says something: not for a required flag or
    an unset switch, whose 'None' / 'False' would only be noise."""

    def _get_help_string(self, action: argparse.Action) -> str:  # only called for a flag with help
        says_nothing = action.default is None or action.default is False or action.default == []  # not 0
        if says_nothing or action.default is argparse.SUPPRESS or "%(default)" in action.help:
            return action.help
        return f"{action.help} (default: %(default)s)"


def description(docstring: str) -> str:
    """The first paragraph of a script's docstring, as one line of text."""
    return " ".join(docstring.strip().split("\n\n", 1)[0].split())


def exit_status(docstring: str) -> str:
    """The docstring's "Exit status: ..." up to the end of its paragraph, as one line of text."""
    found = re.search(r"Exit status:.*?(?=\n\s*\n|\Z)", docstring, re.DOTALL)
    if found is None:
        raise ValueError("the docstring has no 'Exit status:'")
    return " ".join(found[0].split())
