"""Observed state in the store: the instance of each engine, and the event log."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select

from sagellmd.instance import Instance, InstanceState, Retiring, StopIntent
from sagellmd.store.models import EventRow, InstanceRow
from sagellmd.store.sessions import StoreSessions
from sagellmd.store.timestamps import iso


@dataclass(frozen=True)
class EventRecord:
    id: int
    ts: float
    engine: str | None
    type: str
    message: str
    generation: int | None
    details: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": iso(self.ts),
            "engine": self.engine,
            "type": self.type,
            "message": self.message,
            "generation": self.generation,
            "details": self.details or {},
        }


def _retiring_to_json(retiring: Retiring | None) -> str | None:
    if retiring is None:
        return None
    data = {**vars(retiring), "gpus": list(retiring.gpus)}
    return json.dumps(data, sort_keys=True)


def _retiring_from_json(text: str | None) -> Retiring | None:
    if not text:
        return None
    data = json.loads(text)
    return Retiring(**{**data, "gpus": tuple(data.get("gpus", ()))})


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
        retiring=_retiring_from_json(row.retiring),
        side_ports=tuple(int(port) for port in row.side_ports.split(",") if port),
        node=row.node or None,
        spans=tuple((name, tuple(gpus)) for name, gpus in json.loads(row.spans or "[]")),
    )


def _event(row: EventRow) -> EventRecord:
    details = json.loads(row.details) if row.details else None
    return EventRecord(row.id, row.ts, row.engine, row.type, row.message, row.generation, details)


class ObservedStore(StoreSessions):
    """The `Store`'s reads and writes of instances and events."""

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
        details: Mapping[str, Any] | None = None,
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
            "retiring": _retiring_to_json(instance.retiring),
            "side_ports": ",".join(str(port) for port in instance.side_ports),
            "node": instance.node or "",
            "spans": json.dumps([[name, list(gpus)] for name, gpus in instance.spans]),
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
                details=json.dumps(dict(details)) if details else None,
            )
            session.add(event_row)
            session.flush()
            return _event(event_row)

    def forget_instance(self, engine_id_: str) -> None:
        with self.session() as session, session.begin():
            session.execute(delete(InstanceRow).where(InstanceRow.engine_id == engine_id_))

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
