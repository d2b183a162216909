"""Checks each gin binding's literal value against its parameter's type hint before anything is
built, so a wrong type names the binding and the type it wanted
(`Experiment.total_env_steps = 'lots': expected int, got str`) instead of the Python comparison
it would first trip on. gin itself checks names, not types; no checker library is installed, so
this covers the hints the configurables use (classes, unions, Literal, tuples, sequences) and
lets anything else through.
"""
from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any

import gin


def _hints(configurable: Any) -> dict[str, Any]:
    target = configurable.__init__ if isinstance(configurable, type) else configurable
    try:
        return typing.get_type_hints(target)
    except Exception:  # noqa: BLE001  (a hint that cannot be resolved is not checked)
        return {}


def _matches(value: Any, hint: Any) -> bool:
    """Whether the gin literal `value` fits `hint`; True where the hint says nothing checkable."""
    if isinstance(value, gin.config.ConfigurableReference) or hint is Any or isinstance(hint, typing.TypeVar):
        return True  # a reference's value is only known once it is called
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is None or hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (tuple, list)):  # gin users write either bracket
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_matches, value, args))
        return not args or all(_matches(item, args[0]) for item in value)
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        return callable(value)
    if origin is not None:
        return not isinstance(origin, type) or isinstance(value, origin)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_name(arg) for arg in typing.get_args(hint))
    if isinstance(hint, type) and not typing.get_args(hint):
        return "None" if hint is type(None) else hint.__name__
    return str(hint).replace("typing.", "").replace("collections.abc.", "")


def _literal(value: Any, config: dict) -> Any:
    """The value behind a macro (`%HIDDEN_SIZES`), followed to its own literal."""
    while (
        isinstance(value, gin.config.ConfigurableReference)
        and value.configurable.name == "macro"
        and value.config_key in config
    ):
        value = config[value.config_key]["value"]
    return value


@gin.config.register_finalize_hook
def check_binding_types(config: dict) -> None:
    """gin finalize hook: raises TypeError naming the first binding whose value has the wrong type."""
    registry = gin.config._REGISTRY  # gin has no public lookup of a selector's configurable
    for (scope, selector), params in config.items():
        configurable = registry.get_match(selector)
        if configurable is None or configurable.module.startswith("gin"):
            continue
        hints = _hints(configurable.wrapped)
        for param, bound in params.items():
            value = _literal(bound, config)
            if param in hints and not _matches(value, hints[param]):
                binding = f"{scope + '/' if scope else ''}{configurable.name}.{param}"
                via = f" = {bound}" if bound is not value else ""  # the macro the user bound
                raise TypeError(
                    f"{binding}{via} = {value!r}: expected {_name(hints[param])}, got {type(value).__name__}"
                )
