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
    """The action names of every dataclass in the planner's Action union: the default of its
    `action` field, or, where the action is its `kind` (an enum), every value of that enum.

    The API passes reconcile.actions.Action in: this package sits below the loop.
    """
    names: list[str] = []
    for cls in typing.get_args(action_union) or (action_union,):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if "action" in fields:
            names.append(fields["action"].default)
        else:
            names.extend(member.value for member in type(fields["kind"].default))
    return tuple(names)


def enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"enum": list(values)}
