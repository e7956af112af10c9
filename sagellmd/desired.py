"""One engine of the desired state, as the store returns it and the loop reads it."""

from __future__ import annotations

from dataclasses import dataclass

from sagellmd.spec import EngineSpec


@dataclass(frozen=True)
class PdMember:
    """What makes a desired engine one instance of a disaggregated engine (pd_expand.py)."""

    group: str  # the engine id the user declared, e.g. `p.chat`
    role: str  # prefill | decode
    index: int
    connector: str
    threshold_input_tokens: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "role": self.role,
            "index": self.index,
            "connector": self.connector,
            "threshold_input_tokens": self.threshold_input_tokens,
        }


@dataclass(frozen=True)
class DesiredEngine:
    """One engine of the desired state: its id, its preset, its spec and restart request."""

    id: str
    preset: str | None
    spec: EngineSpec
    restart_requested_at: float | None = None
    # Why the stored spec failed validation (a row an older version let in); `spec` is
    # then its repaired copy, so the engine keeps running and status can say so.
    invalid: str | None = None
    # Set on the instances expand_desired() makes of a disaggregated engine.
    pd: PdMember | None = None
