"""Reads of the desired state: the declared engines and the active presets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select

from sagellmd.desired import DesiredEngine
from sagellmd.spec import EngineSpec
from sagellmd.store.legacy import decode_stored_spec, readable
from sagellmd.store.models import ActivePresetRow, DesiredEngineRow, GenerationRow
from sagellmd.store.sessions import StoreSessions


@dataclass(frozen=True)
class ActivePreset:
    name: str
    document: dict[str, Any]
    source: str
    set_at: float


@lru_cache(maxsize=4096)
def decode_spec(text: str) -> tuple[EngineSpec, str | None]:
    """A stored spec and the problem that stops it running, if any (see store/legacy.py)."""
    # Every reconcile pass reads the whole desired state; validate each text once.
    return decode_stored_spec(text)


def spec_from_json(text: str) -> EngineSpec:
    return decode_spec(text)[0]


def desired_from_row(row: DesiredEngineRow) -> DesiredEngine:
    spec, problem = decode_spec(row.spec)
    return DesiredEngine(row.id, row.preset, spec, row.restart_requested_at, problem)


class DesiredStateReads(StoreSessions):
    """The `Store`'s reads of what is declared (its changes are in store/repository.py)."""

    def desired(self) -> list[DesiredEngine]:
        with self.session() as session:
            rows = session.scalars(select(DesiredEngineRow).order_by(DesiredEngineRow.id))
            return [desired_from_row(row) for row in rows]

    def desired_engine(self, engine_id_: str) -> DesiredEngine | None:
        with self.session() as session:
            row = session.get(DesiredEngineRow, engine_id_)
            return desired_from_row(row) if row else None

    def active_presets(self) -> list[ActivePreset]:
        with self.session() as session:
            rows = session.scalars(select(ActivePresetRow).order_by(ActivePresetRow.name))
            return [
                ActivePreset(r.name, readable(json.loads(r.document)), r.source, r.set_at)
                for r in rows
            ]

    def count_rows(self) -> dict[str, int]:
        with self.session() as session:
            return {
                model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (ActivePresetRow, DesiredEngineRow, GenerationRow)
            }
