"""Reads and writes of the store; every desired-state change is one transaction."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from sagellmd.errors import ConflictError, NotFoundError
from sagellmd.instance import Instance, InstanceState, StopIntent
from sagellmd.reconcile.plan import DesiredEngine
from sagellmd.spec import EngineSpec, Preset, engine_id, parse_engine
from sagellmd.store.models import (
    ActivePresetRow,
    DesiredEngineRow,
    EventRow,
    GenerationRow,
    InstanceRow,
)


@dataclass(frozen=True)
class EventRecord:
    id: int
    ts: float
    engine: str | None
    type: str
    message: str
    generation: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": iso(self.ts),
            "engine": self.engine,
            "type": self.type,
            "message": self.message,
            "generation": self.generation,
        }


@dataclass(frozen=True)
class ActivePreset:
    name: str
    document: dict[str, Any]
    source: str
    set_at: float


@dataclass(frozen=True)
class GenerationRecord:
    id: int
    ts: float
    cause: str
    snapshot: dict[str, Any]
    healthy: bool | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": iso(self.ts),
            "cause": self.cause,
            "healthy": self.healthy,
            "presets": sorted(self.snapshot.get("presets", {})),
            "engines": self.snapshot.get("engines", []),
        }


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


@lru_cache(maxsize=4096)
def _spec_from_json(text: str) -> EngineSpec:
    # Every reconcile pass reads the whole desired state; validate each text once.
    return parse_engine(json.loads(text))


def _desired_from_row(row: DesiredEngineRow) -> DesiredEngine:
    spec = _spec_from_json(row.spec)
    return DesiredEngine(row.id, row.preset, spec, row.restart_requested_at)


def _instance_from_row(row: InstanceRow) -> Instance:
    return Instance(
        engine_id=row.engine_id,
        generation=row.generation,
        spec_hash=row.spec_hash,
        state=InstanceState(row.state),
        message=row.message,
        pid=row.pid,
        create_time=row.create_time,
        port=row.port,
        restarts=row.restarts,
        failures=row.failures,
        last_exit_code=row.last_exit_code,
        last_exit_signal=row.last_exit_signal,
        started_at=row.started_at,
        ready_at=row.ready_at,
        exited_at=row.exited_at,
        stop_intent=StopIntent(row.stop_intent) if row.stop_intent else None,
        gpus=tuple(int(gpu) for gpu in row.gpus.split(",") if gpu),
        gpu_bytes=row.gpu_bytes,
    )


class Store:
    """The daemon's only door to SQLite."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    def session(self) -> Session:
        return Session(self._engine, expire_on_commit=False)

    # -- desired state -------------------------------------------------------

    def desired(self) -> list[DesiredEngine]:
        with self.session() as session:
            rows = session.scalars(select(DesiredEngineRow).order_by(DesiredEngineRow.id))
            return [_desired_from_row(row) for row in rows]

    def desired_engine(self, engine_id_: str) -> DesiredEngine | None:
        with self.session() as session:
            row = session.get(DesiredEngineRow, engine_id_)
            return _desired_from_row(row) if row else None

    def active_presets(self) -> list[ActivePreset]:
        with self.session() as session:
            rows = session.scalars(select(ActivePresetRow).order_by(ActivePresetRow.name))
            return [ActivePreset(r.name, json.loads(r.document), r.source, r.set_at) for r in rows]

    def current_generation(self) -> int:
        with self.session() as session:
            return session.scalar(select(func.max(GenerationRow.id))) or 0

    def _check_ports(
        self, session: Session, specs: dict[str, EngineSpec], replacing_preset: str | None = None
    ) -> None:
        """Two desired engines may not ask for the same fixed port."""
        others = session.scalars(select(DesiredEngineRow)).all()
        claimed: dict[int, str] = {}
        for row in others:
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

    def _new_generation(self, session: Session, cause: str) -> int:
        session.flush()
        presets = {
            row.name: json.loads(row.document)
            for row in session.scalars(select(ActivePresetRow).order_by(ActivePresetRow.name))
        }
        engines = [
            {"id": row.id, "preset": row.preset, "spec": json.loads(row.spec)}
            for row in session.scalars(select(DesiredEngineRow).order_by(DesiredEngineRow.id))
        ]
        snapshot = json.dumps({"presets": presets, "engines": engines}, sort_keys=True)
        generation = GenerationRow(ts=self._clock(), cause=cause, snapshot=snapshot)
        session.add(generation)
        session.flush()
        session.add(
            EventRow(
                ts=self._clock(),
                engine=None,
                type="generation",
                message=cause,
                generation=generation.id,
            )
        )
        return generation.id

    def set_preset(self, preset: Preset, source: str, cause: str) -> int:
        """Add or replace the engines of a preset; returns the new generation."""
        now = self._clock()
        specs = {engine_id(preset.name, spec.name): spec for spec in preset.engines}
        with self.session() as session, session.begin():
            self._check_ports(session, specs, replacing_preset=preset.name)
            existing = session.get(ActivePresetRow, preset.name)
            document = json.dumps(preset.to_dict(), sort_keys=True)
            if existing is None:
                session.add(
                    ActivePresetRow(name=preset.name, document=document, source=source, set_at=now)
                )
            else:
                existing.document, existing.source, existing.set_at = document, source, now
            session.flush()
            rows = session.scalars(
                select(DesiredEngineRow).where(DesiredEngineRow.preset == preset.name)
            ).all()
            current = {row.id: row for row in rows}
            for stale in set(current) - set(specs):
                session.delete(current[stale])
            for new_id, spec in specs.items():
                self._upsert_engine(session, current.get(new_id), new_id, preset.name, spec, now)
            return self._new_generation(session, cause)

    def unset_preset(self, name: str, cause: str) -> int:
        with self.session() as session, session.begin():
            row = session.get(ActivePresetRow, name)
            if row is None:
                active = ", ".join(r.name for r in session.scalars(select(ActivePresetRow)))
                raise NotFoundError(f"preset {name!r} is not active; active: {active or 'none'}")
            session.execute(delete(DesiredEngineRow).where(DesiredEngineRow.preset == name))
            session.delete(row)
            return self._new_generation(session, cause)

    def _upsert_engine(
        self,
        session: Session,
        row: DesiredEngineRow | None,
        new_id: str,
        preset: str | None,
        spec: EngineSpec,
        now: float,
    ) -> None:
        encoded = json.dumps(spec.to_dict(), sort_keys=True)
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

    def put_engine(self, new_id: str, spec: EngineSpec, cause: str) -> tuple[int, bool]:
        """Create or replace an ad-hoc engine; (generation, created)."""
        now = self._clock()
        with self.session() as session, session.begin():
            row = session.get(DesiredEngineRow, new_id)
            if row is not None and row.preset is not None:
                raise ConflictError(
                    f"engine {new_id!r} belongs to preset {row.preset!r}; change the preset instead"
                )
            self._check_ports(session, {new_id: spec})
            self._upsert_engine(session, row, new_id, None, spec, now)
            return self._new_generation(session, cause), row is None

    def delete_engine(self, engine_id_: str, cause: str) -> int:
        with self.session() as session, session.begin():
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
            return self._new_generation(session, cause)

    def request_restart(self, engine_id_: str) -> float:
        now = self._clock()
        with self.session() as session, session.begin():
            row = session.get(DesiredEngineRow, engine_id_)
            if row is None:
                raise NotFoundError(f"no engine {engine_id_!r} in the desired state")
            row.restart_requested_at = now
        return now

    def generations(self, limit: int = 50) -> list[GenerationRecord]:
        with self.session() as session:
            rows = session.scalars(
                select(GenerationRow).order_by(GenerationRow.id.desc()).limit(limit)
            )
            return [
                GenerationRecord(r.id, r.ts, r.cause, json.loads(r.snapshot), r.healthy)
                for r in rows
            ]

    # -- observed state ------------------------------------------------------

    def instances(self) -> dict[str, Instance]:
        with self.session() as session:
            return {
                row.engine_id: _instance_from_row(row)
                for row in session.scalars(select(InstanceRow))
            }

    def save_instance(
        self,
        instance: Instance,
        event: tuple[str, str] | None = None,
        generation: int | None = None,
    ) -> EventRecord | None:
        """Persist an instance (and the event of its transition) in one commit."""
        now = self._clock()
        values = {
            "generation": instance.generation,
            "spec_hash": instance.spec_hash,
            "state": instance.state.value,
            "message": instance.message,
            "stop_intent": instance.stop_intent.value if instance.stop_intent else None,
            "gpus": ",".join(str(gpu) for gpu in instance.gpus),
            "gpu_bytes": instance.gpu_bytes,
            "pid": instance.pid,
            "create_time": instance.create_time,
            "port": instance.port,
            "restarts": instance.restarts,
            "failures": instance.failures,
            "last_exit_code": instance.last_exit_code,
            "last_exit_signal": instance.last_exit_signal,
            "started_at": instance.started_at,
            "ready_at": instance.ready_at,
            "exited_at": instance.exited_at,
            "updated_at": now,
        }
        with self.session() as session, session.begin():
            row = session.get(InstanceRow, instance.engine_id)
            if row is None:
                session.add(InstanceRow(engine_id=instance.engine_id, **values))
            else:
                for key, value in values.items():
                    setattr(row, key, value)
            if event is None:
                return None
            event_row = EventRow(
                ts=now,
                engine=instance.engine_id,
                type=event[0],
                message=event[1],
                generation=generation,
            )
            session.add(event_row)
            session.flush()
            return _event(event_row)

    def forget_instance(self, engine_id_: str) -> None:
        with self.session() as session, session.begin():
            session.execute(delete(InstanceRow).where(InstanceRow.engine_id == engine_id_))

    # -- events --------------------------------------------------------------

    def add_event(
        self, engine: str | None, type_: str, message: str, generation: int | None = None
    ) -> EventRecord:
        with self.session() as session, session.begin():
            row = EventRow(
                ts=self._clock(), engine=engine, type=type_, message=message, generation=generation
            )
            session.add(row)
            session.flush()
            return _event(row)

    def events(self, after: int | None, limit: int, engine: str | None = None) -> list[EventRecord]:
        with self.session() as session:
            query = select(EventRow)
            if engine is not None:
                query = query.where(EventRow.engine == engine)
            if after is not None:
                query = query.where(EventRow.id > after).order_by(EventRow.id).limit(limit)
                return [_event(row) for row in session.scalars(query)]
            query = query.order_by(EventRow.id.desc()).limit(limit)
            return [_event(row) for row in reversed(list(session.scalars(query)))]

    def last_event_id(self) -> int:
        with self.session() as session:
            return session.scalar(select(func.max(EventRow.id))) or 0

    def count_rows(self) -> dict[str, int]:
        with self.session() as session:
            return {
                model.__tablename__: session.scalar(select(func.count()).select_from(model))
                for model in (ActivePresetRow, DesiredEngineRow, GenerationRow)
            }


def _event(row: EventRow) -> EventRecord:
    return EventRecord(row.id, row.ts, row.engine, row.type, row.message, row.generation)
