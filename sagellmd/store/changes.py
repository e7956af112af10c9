"""Desired-state changes on an open session: checks, row edits and the generation row."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from sagellmd.errors import ConflictError, NotFoundError
from sagellmd.json_values import strict_dumps
from sagellmd.spec import EngineSpec, Preset, engine_id, parse_engine
from sagellmd.store.models import ActivePresetRow, DesiredEngineRow, EventRow, GenerationRow


def check_ports(
    session: Session, specs: dict[str, EngineSpec], replacing_preset: str | None = None
) -> None:
    """Two desired engines may not ask for the same fixed port."""
    claimed: dict[int, str] = {}
    for row in session.scalars(select(DesiredEngineRow)):
        # A preset being set replaces all its engines, so their ports are free to take.
        if row.id in specs or (replacing_preset and row.preset == replacing_preset):
            continue
        port = json.loads(row.spec).get("port")
        if port is not None:
            claimed[port] = row.id
    for new_id, spec in specs.items():
        if spec.port is not None and spec.port in claimed:
            raise ConflictError(
                f"{new_id}.port: port {spec.port} is already declared by engine"
                f" {claimed[spec.port]!r}; choose another port or leave it out for automatic",
                {"field": "port", "engine": claimed[spec.port]},
            )


def new_generation(
    session: Session,
    snapshot: Mapping[str, Any],
    cause: str,
    now: float,
    auto_rollback: bool,
    reverts: int | None = None,
) -> int:
    """Record `snapshot` (the whole desired set) as a new generation, and its event; its id."""
    encoded = json.dumps(snapshot, sort_keys=True)
    generation = GenerationRow(
        ts=now, cause=cause, snapshot=encoded, auto_rollback=auto_rollback, reverts=reverts
    )
    session.add(generation)
    session.flush()
    session.add(
        EventRow(ts=now, engine=None, type="generation", message=cause, generation=generation.id)
    )
    return generation.id


def upsert_engine(
    session: Session,
    row: DesiredEngineRow | None,
    new_id: str,
    preset: str | None,
    spec: EngineSpec,
    now: float,
) -> None:
    encoded = strict_dumps(spec.to_dict())  # never commit what no answer could carry back
    if row is None:
        session.add(
            DesiredEngineRow(
                id=new_id,
                preset=preset,
                name=spec.name,
                spec=encoded,
                spec_hash=spec.spec_hash,
                updated_at=now,
            )
        )
    elif row.spec != encoded:
        row.spec, row.spec_hash, row.updated_at = encoded, spec.spec_hash, now


def set_preset_row(
    session: Session, name: str, document: dict[str, Any], source: str, now: float
) -> None:
    encoded = strict_dumps(document)
    existing = session.get(ActivePresetRow, name)
    if existing is None:
        session.add(ActivePresetRow(name=name, document=encoded, source=source, set_at=now))
    else:
        existing.document, existing.source, existing.set_at = encoded, source, now
    session.flush()


def set_preset(session: Session, preset: Preset, source: str, now: float) -> bool:
    """Add or replace the engines of a preset; True if it was not active before."""
    specs = {engine_id(preset.name, spec.name): spec for spec in preset.engines}
    check_ports(session, specs, replacing_preset=preset.name)
    created = session.get(ActivePresetRow, preset.name) is None
    set_preset_row(session, preset.name, preset.to_dict(), source, now)
    rows = session.scalars(
        select(DesiredEngineRow).where(DesiredEngineRow.preset == preset.name)
    ).all()
    current = {row.id: row for row in rows}
    for stale in set(current) - set(specs):
        session.delete(current[stale])
    for new_id, spec in specs.items():
        upsert_engine(session, current.get(new_id), new_id, preset.name, spec, now)
    return created


def unset_preset(session: Session, name: str) -> bool:
    row = session.get(ActivePresetRow, name)
    if row is None:
        active = ", ".join(r.name for r in session.scalars(select(ActivePresetRow)))
        raise NotFoundError(f"preset {name!r} is not active; active: {active or 'none'}")
    session.execute(delete(DesiredEngineRow).where(DesiredEngineRow.preset == name))
    session.delete(row)
    return False


def put_engine(session: Session, new_id: str, spec: EngineSpec, now: float) -> bool:
    """Create or replace an ad-hoc engine; True if it was created."""
    row = session.get(DesiredEngineRow, new_id)
    if row is not None and row.preset is not None:
        raise ConflictError(
            f"engine {new_id!r} belongs to preset {row.preset!r}; change the preset instead"
        )
    check_ports(session, {new_id: spec})
    upsert_engine(session, row, new_id, None, spec, now)
    return row is None


def delete_engine(session: Session, engine_id_: str) -> bool:
    row = session.get(DesiredEngineRow, engine_id_)
    if row is None:
        raise NotFoundError(f"no engine {engine_id_!r} in the desired state")
    if row.preset is not None:
        raise ConflictError(
            f"engine {engine_id_!r} belongs to preset {row.preset!r}; remove it with"
            f" `sagellm preset unset {row.preset}` or change the preset",
            {"preset": row.preset},
        )
    session.delete(row)
    return False


def restore(session: Session, target: dict[str, Any], now: float) -> bool:
    """Make the desired rows equal to a generation's snapshot; unchanged rows stay as they are."""
    wanted = {engine["id"]: engine for engine in target.get("engines", [])}
    presets = target.get("presets", {})
    sources = target.get("sources", {})
    for row in session.scalars(select(DesiredEngineRow)).all():
        if row.id not in wanted:
            session.delete(row)
    for row in session.scalars(select(ActivePresetRow)).all():
        if row.name not in presets:
            session.delete(row)
    session.flush()
    for name, document in presets.items():
        existing = session.get(ActivePresetRow, name)
        if existing is None or json.loads(existing.document) != document:
            set_preset_row(session, name, document, sources.get(name, "rollback"), now)
    for new_id, engine in wanted.items():
        spec = parse_engine(engine["spec"])
        upsert_engine(
            session, session.get(DesiredEngineRow, new_id), new_id, engine["preset"], spec, now
        )
    return False
