"""gin text read without the configurables it names: a run's config.gin, --gin_bindings lines.
Reports and sweeps compare configs this way, so a config.gin naming configurables this checkout
lacks (an older result folder) still reads."""
from __future__ import annotations

import dataclasses
from typing import Iterator

from gin import config_parser


@dataclasses.dataclass(frozen=True)
class _GinText:
    """A reference (@name, @name()) or macro (%name) kept as the text gin writes, unresolved, so a
    config.gin naming configurables this checkout lacks (an older result folder) still parses."""

    text: str

    def __repr__(self) -> str:
        return self.text


class _TextDelegate(config_parser.ParserDelegate):
    def configurable_reference(self, scoped_configurable_name: str, evaluate: bool) -> _GinText:
        return _GinText(f"@{scoped_configurable_name}{'()' if evaluate else ''}")

    def macro(self, macro_name: str) -> _GinText:
        return _GinText(f"%{macro_name}")


def binding_statements(text: str) -> Iterator[config_parser.BindingStatement]:
    """gin's parse of each binding of `text`, its references and macros left as text.

    Raises:
        SyntaxError: `text` is not gin.
    """
    for statement in config_parser.ConfigParser(text, _TextDelegate()):
        if isinstance(statement, config_parser.BindingStatement):
            yield statement


def parse_bindings(text: str) -> dict[str, object]:
    """Each binding of gin `text` (a config.gin, or --gin_bindings lines), keyed
    '[scope/]Configurable.param' (or the macro's name), its value parsed: `5_000` and `5000` are
    one value. References and macros stay text; imports are left out.

    Raises:
        SyntaxError: `text` is not gin.
    """
    values = {}
    for statement in binding_statements(text):
        key = "/".join(filter(None, (statement.scope, statement.selector)))
        values[f"{key}.{statement.arg_name}" if statement.arg_name else key] = statement.value
    return values
