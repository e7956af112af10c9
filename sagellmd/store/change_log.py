"""The per-engine record of each generation: what it changed, and undoing exactly that."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from sagellmd.engine_change import NONE, PENDING
from sagellmd.spec import parse_engine
from sagellmd.store import changes
from sagellmd.store.models import (
    ActivePresetRow,
    DesiredEngineRow,
    EngineChangeRow,
    PresetChangeRow,
)


@dataclass(frozen=True)
class EngineState:
    """One desired engine as a change sees it."""

    preset: str | None
    spec: str  # the stored JSON text
    spec_hash: str


@dataclass(frozen=True)
class PresetState:
    document: str
    source: str


@dataclass(frozen=True)
class DesiredRows:
    """The desired rows at one moment of a transaction."""

    engines: dict[str, EngineState]
    presets: dict[str, PresetState]


def read_rows(
    session: Session, engine_rows: Iterable[DesiredEngineRow] | None = None
) -> DesiredRows:
    """The desired rows now; `engine_rows` when the caller has just read them anyway."""
    if engine_rows is None:
        engine_rows = session.scalars(select(DesiredEngineRow))
    engines = {row.id: EngineState(row.preset, row.spec, row.spec_hash) for row in engine_rows}
    presets = {
        row.name: PresetState(row.document, row.source)
        for row in session.scalars(select(ActivePresetRow))
    }
    return DesiredRows(engines, presets)


def snapshot(rows: DesiredRows) -> dict[str, Any]:
    """The whole desired set, as a generation records it."""
    return {
        "presets": {name: json.loads(state.document) for name, state in rows.presets.items()},
        "sources": {name: state.source for name, state in rows.presets.items()},
        "engines": [
            {"id": engine_id, "preset": state.preset, "spec": json.loads(state.spec)}
            for engine_id, state in sorted(rows.engines.items())
        ],
    }


def _engine_json(state: EngineState | None) -> str | None:
    if state is None:
        return None
    return json.dumps({"preset": state.preset, "spec": json.loads(state.spec)}, sort_keys=True)


def _preset_json(state: PresetState | None) -> str | None:
    if state is None:
        return None
    return json.dumps(
        {"document": json.loads(state.document), "source": state.source}, sort_keys=True
    )


@dataclass(frozen=True)
class Recorded:
    """What one generation changed: the engines, and how many of them await a verdict."""

    engines: tuple[str, ...]
    waiting: int


def record(session: Session, before: DesiredRows, after: DesiredRows, generation: int) -> Recorded:
    """Write what `generation` changed; earlier changes of the same engines are superseded.

    A change whose engine needs a new process (new, or a new spec hash) is `pending` until
    the rollout judge decides; one that does not (removed, label or metadata only) is `none`.
    """
    changed: list[str] = []
    waiting = 0
    for engine_id in sorted(set(before.engines) | set(after.engines)):
        old, new = before.engines.get(engine_id), after.engines.get(engine_id)
        if old == new:
            continue
        changed.append(engine_id)
        session.execute(
            update(EngineChangeRow)
            .where(EngineChangeRow.engine_id == engine_id, EngineChangeRow.superseded_by.is_(None))
            .values(superseded_by=generation)
        )
        starts = new is not None and (old is None or old.spec_hash != new.spec_hash)
        waiting += starts
        session.add(
            EngineChangeRow(
                generation=generation,
                engine_id=engine_id,
                before=_engine_json(old),
                after_preset=new.preset if new else None,
                after_hash=new.spec_hash if new else None,
                verdict=PENDING if starts else NONE,
                reason="" if starts else _unjudged_reason(old, new),
            )
        )
    for name in sorted(set(before.presets) | set(after.presets)):
        old_preset, new_preset = before.presets.get(name), after.presets.get(name)
        if old_preset == new_preset:
            continue
        session.execute(
            update(PresetChangeRow)
            .where(PresetChangeRow.name == name, PresetChangeRow.superseded_by.is_(None))
            .values(superseded_by=generation)
        )
        session.add(
            PresetChangeRow(generation=generation, name=name, before=_preset_json(old_preset))
        )
    return Recorded(tuple(changed), waiting)


def _unjudged_reason(old: EngineState | None, new: EngineState | None) -> str:
    if new is None:
        return "removed"
    if old is not None and old.preset != new.preset:
        return "moved to another preset; same process"
    return "label or metadata only; same process"


def revert(session: Session, generation: int, now: float) -> None:
    """Put back what `generation` changed and nobody changed since.

    Presets first (an engine row refers to its preset), then engines; a preset whose
    document is not restored (changed again since) gets its engine list brought in line
    with the engine rows, so `preset show` tells the truth.
    """
    preset_rows = session.scalars(
        select(PresetChangeRow).where(
            PresetChangeRow.generation == generation, PresetChangeRow.superseded_by.is_(None)
        )
    ).all()
    engine_rows = session.scalars(
        select(EngineChangeRow)
        .where(EngineChangeRow.generation == generation, EngineChangeRow.superseded_by.is_(None))
        .order_by(EngineChangeRow.engine_id)
    ).all()
    restored_presets: set[str] = set()
    for change in preset_rows:
        if change.before is not None:
            old = json.loads(change.before)
            changes.set_preset_row(session, change.name, old["document"], old["source"], now)
            restored_presets.add(change.name)
    session.flush()
    touched_presets: set[str] = set()
    for change in engine_rows:
        row = session.get(DesiredEngineRow, change.engine_id)
        if row is not None and row.preset:
            touched_presets.add(row.preset)
        if change.before is None:
            if row is not None:
                session.delete(row)
            continue
        old = json.loads(change.before)
        if old["preset"] is not None and session.get(ActivePresetRow, old["preset"]) is None:
            continue  # its preset is gone since; nothing to put the engine back into
        if row is not None and row.preset != old["preset"]:
            session.delete(row)
            session.flush()
            row = None
        changes.upsert_engine(
            session, row, change.engine_id, old["preset"], parse_engine(old["spec"]), now
        )
        if old["preset"]:
            touched_presets.add(old["preset"])
    session.flush()
    for change in preset_rows:
        if change.before is None:
            preset = session.get(ActivePresetRow, change.name)
            if preset is not None and not _preset_engines(session, change.name):
                session.delete(preset)
                restored_presets.add(change.name)
    session.flush()
    for name in touched_presets | restored_presets:
        _align_document(session, name, now)


def _preset_engines(session: Session, name: str) -> list[DesiredEngineRow]:
    return list(
        session.scalars(
            select(DesiredEngineRow)
            .where(DesiredEngineRow.preset == name)
            .order_by(DesiredEngineRow.id)
        )
    )


def _align_document(session: Session, name: str, now: float) -> None:
    preset = session.get(ActivePresetRow, name)
    if preset is None:
        return
    document: dict[str, Any] = json.loads(preset.document)
    rows = {row.name: json.loads(row.spec) for row in _preset_engines(session, name)}
    listed = [entry.get("name") for entry in document.get("engines", [])]
    # Keep the document's order; the rows say which engines, with which spec.
    document["engines"] = [rows[n] for n in listed if n in rows] + [
        spec for n, spec in rows.items() if n not in listed
    ]
    encoded = json.dumps(document, sort_keys=True)
    if encoded != preset.document:
        preset.document, preset.set_at = encoded, now
