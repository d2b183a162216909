"""The command-line bindings a built run never read. gin accepts a binding of a configurable
that the run does not build (`PolicyCorrection.lam` on MTSAC, `MetaWorldMT10.tasks` on the tiny
set, `SAC.initial_alpha` on TD3) and it silently does nothing, so the run names each one."""
from __future__ import annotations

from typing import Sequence

import gin

from picor_gin.run.config_text import binding_statements


def unused_bindings(bindings: Sequence[str]) -> list[tuple[str, str]]:
    """(binding, why it was not read) for each of `bindings` (--gin_bindings lines, already
    parsed by gin) that no configurable called so far read; a macro counts as read where a
    read binding used it."""
    # gin has no public view of what was called; its operative config is keyed (scope, selector).
    called = list(gin.config._OPERATIVE_CONFIG)
    unused = []
    for binding in bindings:
        for statement in binding_statements(binding):
            if not statement.arg_name:  # a macro, NAME = value: gin keeps it as NAME/gin.macro
                read = (statement.selector, "gin.macro") in called
            else:
                configurable = gin.config._REGISTRY.get_match(statement.selector)
                scopes = set(filter(None, statement.scope.split("/")))
                read = configurable is None or any(
                    selector == configurable.selector and scopes <= set(scope.split("/")) for scope, selector in called
                )
            if not read:
                name = "/".join(filter(None, (statement.scope, statement.selector)))
                why = f"this run builds no {name}" if statement.arg_name else f"no binding this run reads uses %{name}"
                unused.append((binding, why))
                break
    return unused
