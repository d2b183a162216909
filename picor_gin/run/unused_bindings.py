"""The command-line bindings a built run never read. gin accepts a binding of a configurable
that the run does not build (`PolicyCorrection.lam` on MTSAC, `MetaWorldMT10.tasks` on the tiny
set, `SAC.initial_alpha` on TD3), or of a parameter that its caller passes itself
(`PointGoals.step_size` where `UnevenPointGoals` builds the goals), and it silently does nothing,
so the run names each one."""
from __future__ import annotations

from typing import Sequence

import gin

from picor_gin.run.config_text import binding_statements


def unused_bindings(bindings: Sequence[str]) -> list[tuple[str, str]]:
    """(binding, why it was not read) for each of `bindings` (--gin_bindings lines, already
    parsed by gin) that no configurable called so far read; a macro counts as read where a
    read binding used it."""
    # gin has no public view of what was called. Its operative config maps (scope, selector) to
    # the parameters gin supplied from bindings: one the caller passed itself is not among them.
    operative = gin.config._OPERATIVE_CONFIG
    unused = []
    for binding in bindings:
        for statement in binding_statements(binding):
            name = "/".join(filter(None, (statement.scope, statement.selector)))
            why = None
            if not statement.arg_name:  # a macro, NAME = value: gin keeps it as NAME/gin.macro
                if (statement.selector, "gin.macro") not in operative:
                    why = f"no binding this run reads uses %{name}"
            elif (configurable := gin.config._REGISTRY.get_match(statement.selector)) is not None:
                # gin applies a scoped binding where its scope begins the call's scope.
                scope = [part for part in statement.scope.split("/") if part]
                calls = [params for (called_scope, selector), params in operative.items()
                         if selector == configurable.selector and called_scope.split("/")[:len(scope)] == scope]
                if not calls:
                    why = f"this run builds no {name}"
                elif not any(statement.arg_name in params for params in calls):
                    why = f"the code that builds {name} passes {statement.arg_name} itself"
            if why is not None:
                unused.append((binding, why))
                break
    return unused
