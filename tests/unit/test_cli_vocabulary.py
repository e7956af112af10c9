"""The CLI's words for engine states, generation states and plan actions are the daemon's
own: imported where the CLI may import them, checked here where it may not (the planner)."""

from __future__ import annotations

import dataclasses
import typing

from sagellmd.cli.generation_commands import GENERATION_STYLES, generation_state
from sagellmd.cli.render import SPAWNING_ACTIONS, STATE_STYLES, state_text
from sagellmd.cli.watch_screen import RUNNING_STATES
from sagellmd.engine_change import GENERATION_STATES
from sagellmd.instance import PROCESS_STATES, InstanceState
from sagellmd.reconcile.actions import Action
from sagellmd.schemas.enums import action_types


def test_state_styles_name_only_instance_states():
    assert set(STATE_STYLES) <= set(InstanceState)
    assert state_text("ready").style == "green"  # the API sends plain strings


def test_running_states_are_the_states_with_a_process():
    assert RUNNING_STATES == PROCESS_STATES
    assert "stopping" in RUNNING_STATES and "backoff" not in RUNNING_STATES


def test_generation_styles_cover_every_generation_state():
    assert set(GENERATION_STYLES) == set(GENERATION_STATES)
    assert generation_state({"healthy": None}, current=False) == "superseded"


def test_spawning_actions_are_the_planner_actions_that_carry_gpus():
    with_gpus = [
        cls
        for cls in typing.get_args(Action)
        if "gpus" in {f.name for f in dataclasses.fields(cls)}
    ]
    assert set(SPAWNING_ACTIONS) == set(action_types(typing.Union[tuple(with_gpus)]))  # noqa: UP007
    assert set(SPAWNING_ACTIONS) <= set(action_types(Action))
