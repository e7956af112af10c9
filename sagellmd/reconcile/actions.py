"""The planner's vocabulary: actions and plans, as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sagellmd.desired import DesiredEngine
from sagellmd.gpu.node_view import SpreadPlaced
from sagellmd.instance import StopIntent


class StartKind(StrEnum):
    """Why a process is spawned; the plan names it as the action ("start", "restart"...)."""

    START = "start"  # first start, or after a stop or a replace
    RESTART = "restart"  # after a crash, its backoff delay having passed
    SURGE = "surge"  # the spec changed: the new process beside the old (start-then-stop)


@dataclass(frozen=True)
class Start:
    """Spawn the engine's process, from the desired engine the plan was made of."""

    engine: DesiredEngine
    reason: str
    gpus: tuple[int, ...] = ()
    gpu_bytes: int = 0
    kind: StartKind = StartKind.START
    # Requests the gateway holds for it (a start on demand may evict idle engines).
    waiting: int = 0
    # Across cluster nodes through vLLM's Ray executor: the nodes and GPUs of each.
    spread: SpreadPlaced | None = None

    @property
    def engine_id(self) -> str:
        return self.engine.id

    @property
    def action(self) -> str:
        return self.kind.value


@dataclass(frozen=True)
class Pend:
    """It cannot start yet (no GPU room, a shared GPU busy starting): say why and wait."""

    engine_id: str
    reason: str
    action: str = "pending"


@dataclass(frozen=True)
class Stop:
    """Stop the engine's process group; `intent` says what its exit will mean."""

    engine_id: str
    reason: str
    intent: StopIntent = StopIntent.DELIBERATE
    action: str = "stop"


@dataclass(frozen=True)
class Retire:
    """Stop the previous process of a surge: its replacement is ready (or it is obsolete)."""

    engine_id: str
    reason: str
    action: str = "retire"


@dataclass(frozen=True)
class Replace:
    """The spec changed: stop the old process; a later pass starts the new one."""

    engine_id: str
    reason: str
    action: str = "replace"


@dataclass(frozen=True)
class Forget:
    """Drop the record of an engine that is no longer desired and has no process."""

    engine_id: str
    reason: str
    action: str = "forget"


@dataclass(frozen=True)
class Wait:
    """Nothing to do until `until` (a startup deadline or a backoff delay)."""

    engine_id: str
    reason: str
    until: float
    action: str = "wait"


@dataclass(frozen=True)
class Idle:
    """Record it idle without a process (on demand, before its first request)."""

    engine_id: str
    reason: str
    action: str = "idle"


@dataclass(frozen=True)
class Sleep:
    """Put the engine to sleep (POST /sleep?level=1): nobody uses it, or it makes room."""

    engine_id: str
    reason: str
    action: str = "sleep"


@dataclass(frozen=True)
class Wake:
    """Wake the sleeping engine (POST /wake_up) on `gpus`, for `waiting` held requests."""

    engine_id: str
    reason: str
    waiting: int
    gpus: tuple[int, ...] = ()
    gpu_bytes: int = 0
    action: str = "wake"


Action = Start | Retire | Stop | Replace | Forget | Wait | Pend | Idle | Sleep | Wake


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    @property
    def changes(self) -> tuple[Action, ...]:
        """The actions that do something now (everything but waits)."""
        return tuple(action for action in self.actions if not isinstance(action, Wait))

    def to_list(self) -> list[dict[str, object]]:
        return [_action_dict(action) for action in self.actions]


def _action_dict(action: Action) -> dict[str, object]:
    # "engine" (the id) and "action" are the keys of the API contract (docs/api.md).
    names = {"engine_id": "engine", "kind": "action"}
    values: dict[str, Any] = dict(vars(action))
    if isinstance(action, Start) and not action.waiting:
        values.pop("waiting")  # only a start on demand says how many requests wait for it
    if isinstance(action, Start):
        values["engine"] = action.engine_id
        spread = values.pop("spread")
        if spread is not None:
            values["spread"] = [
                {"node": share.node, "gpus": list(share.gpus)} for share in spread.shares
            ]
    return {
        names.get(key, key): value.value if isinstance(value, StrEnum) else value
        for key, value in values.items()
    }
