"""The enumerations of the API's answers, read from the code that defines them."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from sagellmd.engine_change import GENERATION_STATES, VERDICTS
from sagellmd.gpu.inventory import GPU_MODES
from sagellmd.instance import InstanceState

INSTANCE_STATES: tuple[str, ...] = tuple(state.value for state in InstanceState)
__all__ = ["GENERATION_STATES", "GPU_MODES", "INSTANCE_STATES", "VERDICTS", "action_types", "enum"]


def action_types(action_union: Any) -> tuple[str, ...]:
    """The `action` field's default of every dataclass in the planner's Action union.

    The API passes reconcile.actions.Action in: this package sits below the loop.
    """
    return tuple(
        next(f.default for f in dataclasses.fields(cls) if f.name == "action")
        for cls in typing.get_args(action_union)
    )


def enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"enum": list(values)}
