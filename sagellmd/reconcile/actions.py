"""The planner's vocabulary: actions and plans, as plain values."""

from __future__ import annotations

from dataclasses import dataclass

from sagellmd.instance import StopIntent


@dataclass(frozen=True)
class Start:
    """Spawn the engine's process (first start, or after a stop or a replace)."""

    engine_id: str
    reason: str
    gpus: tuple[int, ...] = ()
    gpu_bytes: int = 0
    action: str = "start"


@dataclass(frozen=True)
class Restart:
    """Spawn the engine again after a crash, its backoff delay having passed."""

    engine_id: str
    reason: str
    gpus: tuple[int, ...] = ()
    gpu_bytes: int = 0
    action: str = "restart"


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
    intent: StopIntent = StopIntent.REMOVE
    action: str = "stop"


@dataclass(frozen=True)
class Surge:
    """The spec changed: start the new process beside the old one (start-then-stop)."""

    engine_id: str
    reason: str
    gpus: tuple[int, ...] = ()
    gpu_bytes: int = 0
    action: str = "surge"


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


Action = Start | Restart | Surge | Retire | Stop | Replace | Forget | Wait | Pend


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]

    @property
    def changes(self) -> tuple[Action, ...]:
        """The actions that do something now (everything but waits)."""
        return tuple(action for action in self.actions if not isinstance(action, Wait))

    def to_list(self) -> list[dict[str, object]]:
        # "engine" is the key of the API contract (docs/api.md).
        return [
            {
                ("engine" if key == "engine_id" else key): (
                    value.value if isinstance(value, StopIntent) else value
                )
                for key, value in vars(action).items()
            }
            for action in self.actions
        ]
