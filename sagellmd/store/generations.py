"""Generations as the store keeps them: reading them with their engine changes, and verdicts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sagellmd.engine_change import (
    GENERATION_FAILED,
    GENERATION_HEALTHY,
    ROLLING_OUT,
    SUPERSEDED,
    EngineChange,
)
from sagellmd.store.desired_state import spec_from_json
from sagellmd.store.legacy import readable
from sagellmd.store.models import EngineChangeRow, GenerationRow
from sagellmd.store.sessions import StoreSessions
from sagellmd.store.timestamps import iso


@dataclass(frozen=True)
class Settlement:
    """Verdicts to record: of engine changes (id -> (verdict, reason)) and, when `verdict`
    is given, of their generation."""

    generation: int
    change_verdicts: dict[int, tuple[str, str]]
    healthy: bool | None = None
    verdict: str | None = None


@dataclass(frozen=True)
class GenerationRecord:
    id: int
    ts: float
    cause: str
    snapshot: dict[str, Any]
    healthy: bool | None
    auto_rollback: bool = True
    verdict: str | None = None
    reverts: int | None = None
    changes: tuple[EngineChange, ...] = ()

    @property
    def state(self) -> str:
        """healthy, failed, superseded (overtaken before it was judged) or rolling out."""
        if self.healthy is True:
            return GENERATION_HEALTHY
        if self.healthy is False:
            return GENERATION_FAILED
        return SUPERSEDED if self.verdict else ROLLING_OUT

    def spec_hashes(self) -> dict[str, str]:
        """Engine id -> spec hash of every engine this generation declared."""
        return {
            engine["id"]: spec_from_json(json.dumps(engine["spec"], sort_keys=True)).spec_hash
            for engine in self.snapshot.get("engines", [])
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": iso(self.ts),
            "cause": self.cause,
            "healthy": self.healthy,
            "state": self.state,
            "verdict": self.verdict,
            "auto_rollback": self.auto_rollback,
            "reverts": self.reverts,
            "changes": [_change_dict(change) for change in self.changes],
            "presets": sorted(self.snapshot.get("presets", {})),
            "engines": self.snapshot.get("engines", []),
        }


def _change_dict(change: EngineChange) -> dict[str, Any]:
    return {
        "engine": change.engine_id,
        "removed": change.after_hash is None,
        "verdict": change.verdict,
        "reason": change.reason,
        "superseded_by": change.superseded_by,
    }


class GenerationStore(StoreSessions):
    """The `Store`'s reads of generations and its writes of their verdicts."""

    def current_generation(self) -> int:
        with self.session() as session:
            return session.scalar(select(func.max(GenerationRow.id))) or 0

    def generation(self, generation_id: int) -> GenerationRecord | None:
        with self.session() as session:
            row = session.get(GenerationRow, generation_id)
            return _generation(row, _changes_of(session, [row.id])) if row else None

    def open_generations(self) -> list[GenerationRecord]:
        """Generations without a verdict yet, oldest first, with their engine changes."""
        with self.session() as session:
            rows = session.scalars(
                select(GenerationRow)
                .where(GenerationRow.healthy.is_(None), GenerationRow.verdict.is_(None))
                .order_by(GenerationRow.id)
            ).all()
            by_generation = _changes_of(session, [row.id for row in rows])
            return [_generation(row, by_generation) for row in rows]

    def settle(self, settlements: list[Settlement]) -> None:
        """Record the verdicts of engine changes and generations, all in one commit."""
        if not any(item.change_verdicts or item.verdict is not None for item in settlements):
            return
        with self.session() as session, session.begin():
            for item in settlements:
                for change_id, (outcome, reason) in item.change_verdicts.items():
                    row = session.get(EngineChangeRow, change_id)
                    if row is not None:
                        row.verdict, row.reason = outcome, reason
                if item.verdict is not None:
                    generation = session.get(GenerationRow, item.generation)
                    if generation is not None:
                        generation.healthy, generation.verdict = item.healthy, item.verdict

    def last_healthy_before(self, generation_id: int) -> int:
        """The newest healthy generation older than `generation_id`; 0 (nothing) if none."""
        with self.session() as session:
            found = session.scalar(
                select(func.max(GenerationRow.id)).where(
                    GenerationRow.id < generation_id, GenerationRow.healthy.is_(True)
                )
            )
            return found or 0

    def mark_generation(self, generation_id: int, healthy: bool, verdict: str) -> None:
        with self.session() as session, session.begin():
            row = session.get(GenerationRow, generation_id)
            if row is not None:
                row.healthy, row.verdict = healthy, verdict

    def generations(self, limit: int = 50) -> list[GenerationRecord]:
        with self.session() as session:
            rows = session.scalars(
                select(GenerationRow).order_by(GenerationRow.id.desc()).limit(limit)
            ).all()
            by_generation = _changes_of(session, [row.id for row in rows])
            return [_generation(row, by_generation) for row in rows]


def _changes_of(session: Session, generation_ids: list[int]) -> dict[int, list[EngineChange]]:
    found: dict[int, list[EngineChange]] = {}
    if not generation_ids:
        return found
    rows = session.scalars(
        select(EngineChangeRow)
        .where(EngineChangeRow.generation.in_(generation_ids))
        .order_by(EngineChangeRow.engine_id)
    )
    for row in rows:
        found.setdefault(row.generation, []).append(
            EngineChange(
                row.id,
                row.generation,
                row.engine_id,
                row.after_hash,
                row.verdict,
                row.reason,
                row.superseded_by,
            )
        )
    return found


def _generation(
    row: GenerationRow, changes_by_generation: dict[int, list[EngineChange]] | None = None
) -> GenerationRecord:
    return GenerationRecord(
        row.id,
        row.ts,
        row.cause,
        readable(json.loads(row.snapshot)),
        row.healthy,
        row.auto_rollback,
        row.verdict,
        row.reverts,
        tuple((changes_by_generation or {}).get(row.id, ())),
    )
