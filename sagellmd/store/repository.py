"""Reads and writes of the store; every desired-state change is one transaction."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from sagellmd.desired import DesiredEngine
from sagellmd.engine_change import (
    GENERATION_FAILED,
    GENERATION_HEALTHY,
    ROLLING_OUT,
    SUPERSEDED,
    EngineChange,
)
from sagellmd.errors import NotFoundError
from sagellmd.instance import Instance, InstanceState, Retiring, StopIntent
from sagellmd.spec import EngineSpec, Preset
from sagellmd.store import change_log, changes
from sagellmd.store.legacy import decode_stored_spec, readable
from sagellmd.store.models import (
    ActivePresetRow,
    DesiredEngineRow,
    EngineChangeRow,
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


@dataclass(frozen=True)
class ActivePreset:
    name: str
    document: dict[str, Any]
    source: str
    set_at: float


@dataclass(frozen=True)
class ChangeResult:
    """A desired-state change: its generation (None for a dry run) and the set after it."""

    generation: int | None
    desired: list[DesiredEngine]
    created: bool = False
    changed: tuple[str, ...] = ()  # the engines it added, changed or removed


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
            engine["id"]: _spec_from_json(json.dumps(engine["spec"], sort_keys=True)).spec_hash
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


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


@lru_cache(maxsize=4096)
def _decode_spec(text: str) -> tuple[EngineSpec, str | None]:
    # Every reconcile pass reads the whole desired state; validate each text once.
    return decode_stored_spec(text)


def _spec_from_json(text: str) -> EngineSpec:
    return _decode_spec(text)[0]


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


def _desired_from_row(row: DesiredEngineRow) -> DesiredEngine:
    spec, problem = _decode_spec(row.spec)
    return DesiredEngine(row.id, row.preset, spec, row.restart_requested_at, problem)


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
            return [
                ActivePreset(r.name, readable(json.loads(r.document)), r.source, r.set_at)
                for r in rows
            ]

    def current_generation(self) -> int:
        with self.session() as session:
            return session.scalar(select(func.max(GenerationRow.id))) or 0

    def _change(
        self,
        apply: Callable[[Session, float], bool],
        cause: str,
        dry_run: bool = False,
        auto_rollback: bool = True,
        reverts: int | None = None,
    ) -> ChangeResult:
        """Run one desired-state change in a transaction; a dry run rolls it back.

        The generation it makes records, engine by engine, what the change did (for the
        rollout judge and for undoing exactly this change later).
        """
        now = self._clock()
        with self.session() as session:
            transaction = session.begin()
            try:
                before = change_log.read_rows(session)
                created = apply(session, now)
                session.flush()
                rows = session.scalars(select(DesiredEngineRow).order_by(DesiredEngineRow.id)).all()
                desired = [_desired_from_row(row) for row in rows]
                if dry_run:
                    transaction.rollback()
                    return ChangeResult(None, desired, created)
                after = change_log.read_rows(session, rows)
                generation = changes.new_generation(session, cause, now, auto_rollback, reverts)
                recorded = change_log.record(session, before, after, generation)
                if not recorded.waiting:
                    # Nothing to start: healthy now, in the same commit (a fsync saved).
                    row = session.get(GenerationRow, generation)
                    row.healthy, row.verdict = True, "nothing to start"
                transaction.commit()
                return ChangeResult(generation, desired, created, recorded.engines)
            except BaseException:
                if transaction.is_active:
                    transaction.rollback()
                raise

    def set_preset(self, preset: Preset, source: str, cause: str, **options: bool) -> int:
        """Add or replace the engines of a preset; returns the new generation."""
        return self.change_set_preset(preset, source, cause, **options).generation or 0

    def change_set_preset(
        self, preset: Preset, source: str, cause: str, **options: bool
    ) -> ChangeResult:
        return self._change(
            lambda session, now: changes.set_preset(session, preset, source, now), cause, **options
        )

    def unset_preset(self, name: str, cause: str, **options: bool) -> int:
        return self.change_unset_preset(name, cause, **options).generation or 0

    def change_unset_preset(self, name: str, cause: str, **options: bool) -> ChangeResult:
        return self._change(
            lambda session, now: changes.unset_preset(session, name), cause, **options
        )

    def put_engine(
        self, new_id: str, spec: EngineSpec, cause: str, **options: bool
    ) -> tuple[int, bool]:
        """Create or replace an ad-hoc engine; (generation, created)."""
        result = self.change_put_engine(new_id, spec, cause, **options)
        return result.generation or 0, result.created

    def change_put_engine(
        self, new_id: str, spec: EngineSpec, cause: str, **options: bool
    ) -> ChangeResult:
        return self._change(
            lambda session, now: changes.put_engine(session, new_id, spec, now), cause, **options
        )

    def delete_engine(self, engine_id_: str, cause: str, **options: bool) -> int:
        return self.change_delete_engine(engine_id_, cause, **options).generation or 0

    def change_delete_engine(self, engine_id_: str, cause: str, **options: bool) -> ChangeResult:
        return self._change(
            lambda session, now: changes.delete_engine(session, engine_id_), cause, **options
        )

    def restore_generation(self, target: int, cause: str, **options: bool) -> ChangeResult:
        """Make the desired state equal to generation `target` (0: nothing) as a new one."""
        if target == 0:
            snapshot: dict[str, Any] = {"presets": {}, "engines": []}
        else:
            record = self.generation(target)
            if record is None:
                raise NotFoundError(f"no generation {target}; `sagellm history` lists them")
            snapshot = record.snapshot
        return self._change(
            lambda session, now: changes.restore(session, snapshot, now), cause, **options
        )

    def revert_generation(self, generation_id: int, cause: str) -> ChangeResult:
        """Undo what generation `generation_id` changed and nothing changed since, as a new
        generation on top of everything declared after it (never itself rolled back)."""

        def undo(session: Session, now: float) -> bool:
            change_log.revert(session, generation_id, now)
            return False

        return self._change(
            undo,
            cause,
            auto_rollback=False,
            reverts=generation_id,
        )

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
            ).all()
            by_generation = _changes_of(session, [row.id for row in rows])
            return [_generation(row, by_generation) for row in rows]

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


def _event(row: EventRow) -> EventRecord:
    details = json.loads(row.details) if row.details else None
    return EventRecord(row.id, row.ts, row.engine, row.type, row.message, row.generation, details)
