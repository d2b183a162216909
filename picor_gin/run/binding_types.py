"""Checks each gin binding's literal value against its parameter's type hint before anything is
built, so a wrong type names the binding and the type it wanted
(`Experiment.total_env_steps = 'lots': expected int, got str`) instead of the Python comparison
it would first trip on. gin itself checks names, not types; no checker library is installed, so
this covers the hints the configurables use (classes, unions, Literal, tuples, sequences) and
lets anything else through.

A reference to a class is checked by its call form: `@X` binds the class itself and `@X()` an
instance, so a class bound where an instance is wanted (`Experiment.task_set = @PointGoals`) and
an instance bound where a class or factory is wanted (`MultiTaskLearner.backbone = @SAC()`) are
refused with the other form, instead of a TypeError about missing arguments once gin calls it.
"""
from __future__ import annotations

import collections.abc
import math
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
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if isinstance(value, gin.config.ConfigurableReference):
        return _reference_problem(value, hint) is None
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


def _instance_fits(cls: type, hint: Any) -> bool:
    """Whether an instance of `cls` (what `@cls()` binds) fits `hint`. A factory hint
    (`Callable[..., R]`) takes no R: its caller calls it with arguments of its own."""
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_instance_fits(cls, arg) for arg in args)
    if origin is collections.abc.Callable or hint is collections.abc.Callable:
        made = args[-1] if args else Any
        return not (isinstance(made, type) and issubclass(cls, made))
    target = origin or hint
    return not isinstance(target, type) or issubclass(cls, target)


def _reference_problem(reference: gin.config.ConfigurableReference, hint: Any) -> str | None:
    """What is wrong with binding `reference` where `hint` is wanted, None when it may fit: a
    reference to a function is only known once it is called."""
    target = reference.configurable.wrapped
    if not isinstance(target, type):
        return None
    name = f"@{reference.scoped_selector}"
    fits = {False: _matches(target, hint), True: _instance_fits(target, hint)}  # @X binds the class, @X() an instance
    if fits[reference.evaluate]:
        return None
    if reference.evaluate and fits[False]:
        return f"expected {_name(hint)}, a class or factory called with arguments of its own; bind {name} (the class), not {name}()"
    if fits[True]:
        return f"expected {_name(hint)}; bind {name}() (an instance), not {name}"
    return f"expected {_name(hint)}, got {'an instance of ' if reference.evaluate else 'the class '}{target.__name__}"


def _finite(value: Any) -> bool:
    """Whether no float in the literal `value` is inf or nan (gin reads `1e999` as inf), which
    every range check would let through: `inf > 0`."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (tuple, list)):
        return all(map(_finite, value))
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    return True


def _problem(value: Any, hint: Any) -> str | None:
    """What is wrong with binding `value` where `hint` is wanted, None when it may fit."""
    if isinstance(value, gin.config.ConfigurableReference):
        return _reference_problem(value, hint)
    if not _finite(value):
        return "not a finite number"
    return None if _matches(value, hint) else f"expected {_name(hint)}, got {type(value).__name__}"


def _name(hint: Any) -> str:
    """A hint as its source spells it (`Callable[..., Backbone]`), without module paths."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_name(arg) for arg in args)
    if hint is Ellipsis:
        return "..."
    if isinstance(hint, list):  # Callable's parameter list
        return f"[{', '.join(map(_name, hint))}]"
    if args and origin is not typing.Literal:
        return f"{_name(origin)}[{', '.join(map(_name, args))}]"
    if isinstance(hint, type):
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


def _text(value: Any) -> str:
    """A bound value as the user wrote it: `@X()` for a reference, Python's repr for a literal."""
    if isinstance(value, gin.config.ConfigurableReference):
        return f"@{value.scoped_selector}{'()' if value.evaluate else ''}"
    return repr(value)


@gin.config.register_finalize_hook
def check_binding_types(config: dict) -> None:
    """gin finalize hook: raises TypeError naming the first binding whose value has the wrong type
    or is not finite."""
    registry = gin.config._REGISTRY  # gin has no public lookup of a selector's configurable
    for (scope, selector), params in config.items():
        configurable = registry.get_match(selector)
        if configurable is None or configurable.module.startswith("gin"):
            continue
        hints = _hints(configurable.wrapped)
        for param, bound in params.items():
            value = _literal(bound, config)
            problem = _problem(value, hints.get(param, Any))
            if problem is not None:
                binding = f"{scope + '/' if scope else ''}{configurable.name}.{param}"
                via = f" = {bound}" if bound is not value else ""  # the macro the user bound
                raise TypeError(f"{binding}{via} = {_text(value)}: {problem}")
