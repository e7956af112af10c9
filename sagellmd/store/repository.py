"""The `Store`, the daemon's only door to SQLite; every desired-state change is one transaction.

Its reads and the observed state live by concern in desired_state.py, generations.py and
observed.py; the `Store` combines them with the changes written here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sagellmd.desired import DesiredEngine
from sagellmd.errors import NotFoundError
from sagellmd.spec import EngineSpec, Preset
from sagellmd.store import change_log, changes
from sagellmd.store.desired_state import DesiredStateReads, desired_from_row
from sagellmd.store.generations import GenerationStore
from sagellmd.store.models import DesiredEngineRow, GenerationRow
from sagellmd.store.observed import ObservedStore


@dataclass(frozen=True)
class ChangeResult:
    """A desired-state change: its generation (None for a dry run) and the set after it."""

    generation: int | None
    desired: list[DesiredEngine]
    created: bool = False
    changed: tuple[str, ...] = ()  # the engines it added, changed or removed


class Store(DesiredStateReads, GenerationStore, ObservedStore):
    """The daemon's only door to SQLite."""

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
                desired = [desired_from_row(row) for row in rows]
                if dry_run:
                    transaction.rollback()
                    return ChangeResult(None, desired, created)
                after = change_log.read_rows(session, rows)
                generation = changes.new_generation(
                    session, change_log.snapshot(after), cause, now, auto_rollback, reverts
                )
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

    def request_restart(self, engine_id_: str) -> float:
        now = self._clock()
        with self.session() as session, session.begin():
            row = session.get(DesiredEngineRow, engine_id_)
            if row is None:
                raise NotFoundError(f"no engine {engine_id_!r} in the desired state")
            row.restart_requested_at = now
        return now
