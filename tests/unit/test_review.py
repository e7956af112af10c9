"""Reviewing rollouts on a real SQLite store: changes are judged and reverted one by one, and
nothing another change declared is lost (the property of docs/presets.md, "Rollouts")."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sagellmd.errors import ConflictError, NotFoundError
from sagellmd.instance import Instance, InstanceState
from sagellmd.pd_expand import expand_desired
from sagellmd.reconcile.review import review
from sagellmd.reconcile.rollout import CRASH_LIMIT
from sagellmd.spec import parse_engine, parse_preset
from sagellmd.store.db import migrate, open_database
from sagellmd.store.repository import Store

T0 = 1_700_000_000.0
TIMEOUT_S = 100
ADHOC = ("x", "y", "z")
PRESET_ENGINES = ("a", "b")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@functools.cache
def migrated_template() -> bytes:
    """A freshly migrated database file, made once: the property test opens hundreds of
    stores, and running every migration for each took a third of its time."""
    with tempfile.TemporaryDirectory() as home:
        path = Path(home) / "sagellm.db"
        engine = open_database(path)
        migrate(engine)
        engine.dispose()  # the last connection's close checkpoints the WAL into the file
        return path.read_bytes()


def new_store(home: Path) -> tuple[Store, Clock]:
    path = home / "sagellm.db"
    path.write_bytes(migrated_template())
    engine = open_database(path)
    clock = Clock()
    return Store(engine, clock=clock), clock


def spec(name: str, version: int, label: int = 0) -> dict:
    return {
        "name": name,
        "model": f"org/m{version}-1B",
        "label": f"l{label}",
        "startup_timeout_s": TIMEOUT_S,
    }


def instance(store: Store, engine_id: str, state: InstanceState, failures: int = 0) -> Instance:
    desired = store.desired_engine(engine_id)
    assert desired is not None
    return Instance(
        engine_id=engine_id,
        generation=store.current_generation(),
        spec_hash=desired.spec.spec_hash,
        state=state,
        failures=failures,
        last_exit_code=1 if failures else None,
    )


def desired_view(store: Store) -> dict[str, tuple[str, str | None]]:
    return {e.id: (e.spec.model, e.spec.label) for e in store.desired()}


# -- the interleavings ---------------------------------------------------------------

versions = st.integers(0, 1)
labels = st.integers(0, 1)
put = st.tuples(st.just("put"), st.sampled_from(ADHOC), versions, labels, st.booleans())
delete = st.tuples(st.just("delete"), st.sampled_from(ADHOC))
preset_set = st.tuples(
    st.just("preset_set"),
    st.dictionaries(st.sampled_from(PRESET_ENGINES), st.tuples(versions, labels), min_size=1),
    st.booleans(),
)
unset = st.tuples(st.just("preset_unset"))
engines = st.sampled_from(ADHOC + tuple(f"p.{n}" for n in PRESET_ENGINES))
crash = st.tuples(st.just("crash"), engines)
ready = st.tuples(st.just("ready"), engines)
advance = st.tuples(st.just("advance"))
operation = st.one_of(
    put, preset_set, crash, ready, put, preset_set, crash, ready, delete, unset, advance
)


@dataclass
class Latest:
    """The oracle's view of one engine: its newest change and whether that awaits a verdict."""

    generation: int
    value: tuple[str, str | None] | None  # (model, label) it declared; None: removed
    by_user: bool
    open: bool


@dataclass
class Oracle:
    """What the rules say, computed without the daemon's code."""

    generation: int = 0
    latest: dict[str, Latest] = field(default_factory=dict)
    before: dict[int, dict[str, tuple[str, str | None] | None]] = field(default_factory=dict)
    rollback: dict[int, bool] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)
    to_revert: list[int] = field(default_factory=list)
    # engine id -> (model its instance runs, "ready" or "crashed"), as the test set it
    seen: dict[str, tuple[str, str]] = field(default_factory=dict)

    def value(self, engine_id: str) -> tuple[str, str | None] | None:
        latest = self.latest.get(engine_id)
        return latest.value if latest else None

    def change(
        self, after: dict[str, tuple[str, str | None] | None], by_user: bool, auto: bool
    ) -> None:
        self.generation += 1
        doomed: list[int] = []
        self.rollback[self.generation] = auto and by_user
        self.before[self.generation] = {}
        for engine_id, new in after.items():
            old = self.value(engine_id)
            if old == new:
                continue
            self.before[self.generation][engine_id] = old
            starts = new is not None and (old is None or old[0] != new[0])
            seen = self.seen.get(engine_id)
            # An instance already running that model decides the change at once.
            ready_now = starts and seen == (new[0], "ready")
            self.latest[engine_id] = Latest(self.generation, new, by_user, starts and not ready_now)
            if starts and seen == (new[0], "crashed"):
                doomed.append(self.generation)
        for generation in doomed:
            self.fail(generation)

    def fail(self, generation: int) -> None:
        if generation in self.failed:
            return
        self.failed.add(generation)
        for latest in self.latest.values():
            if latest.generation == generation:
                latest.open = False
        if self.rollback[generation]:
            self.to_revert.append(generation)

    def reviewed(self) -> None:
        """The daemon's review: each failed generation, oldest first, is reverted."""
        for generation in sorted(self.to_revert):
            mine = {
                engine_id: self.before[generation][engine_id]
                for engine_id, latest in self.latest.items()
                if latest.generation == generation
            }
            self.change(mine, by_user=False, auto=False)
        self.to_revert.clear()


def run(operations: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as home:
        store, clock = new_store(Path(home))
        oracle = Oracle()
        observed: dict[str, Instance] = {}
        for op in operations:
            apply(op, store, clock, oracle, observed)
            review(store, observed, clock())
            oracle.reviewed()
            check(store, oracle)


def apply(op: tuple, store: Store, clock: Clock, oracle: Oracle, observed: dict) -> None:
    kind = op[0]
    clock.now += 1
    if kind == "put":
        _, name, version, label, auto = op
        try:
            store.put_engine(name, parse_engine(spec(name, version, label)), "put", **_auto(auto))
        except ConflictError:
            return
        oracle.change({name: (f"org/m{version}-1B", f"l{label}")}, True, auto)
    elif kind == "delete":
        try:
            store.delete_engine(op[1], "delete")
        except NotFoundError:
            return
        oracle.change({op[1]: None}, True, True)
    elif kind == "preset_set":
        _, wanted, auto = op
        document = {
            "version": 1,
            "name": "p",
            "engines": [spec(n, v, lab) for n, (v, lab) in sorted(wanted.items())],
        }
        store.set_preset(parse_preset(document), "api", "preset set p", **_auto(auto))
        after = {
            f"p.{n}": (f"org/m{v}-1B", f"l{lab}") if n in wanted else None
            for n, (v, lab) in {n: wanted.get(n, (0, 0)) for n in PRESET_ENGINES}.items()
        }
        oracle.change(after, True, auto)
    elif kind == "preset_unset":
        try:
            store.unset_preset("p", "preset unset p")
        except NotFoundError:
            return
        oracle.change({f"p.{n}": None for n in PRESET_ENGINES}, True, True)
    elif kind in ("crash", "ready"):
        engine_id = op[1]
        if store.desired_engine(engine_id) is None:
            return
        if kind == "crash":
            observed[engine_id] = instance(
                store, engine_id, InstanceState.BACKOFF, failures=CRASH_LIMIT
            )
        else:
            observed[engine_id] = instance(store, engine_id, InstanceState.READY)
        model = store.desired_engine(engine_id).spec.model
        oracle.seen[engine_id] = (model, "crashed" if kind == "crash" else "ready")
        latest = oracle.latest.get(engine_id)
        if latest is not None and latest.open:
            if kind == "ready":
                latest.open = False
            else:
                oracle.fail(latest.generation)
    elif kind == "advance":
        clock.now += TIMEOUT_S * 10
        late = {latest.generation for latest in oracle.latest.values() if latest.open}
        for generation in sorted(late):
            oracle.fail(generation)


def _auto(auto: bool) -> dict[str, bool]:
    return {"auto_rollback": auto}


def check(store: Store, oracle: Oracle) -> None:
    assert store.current_generation() == oracle.generation
    desired = desired_view(store)
    for engine_id, latest in oracle.latest.items():
        if latest.by_user and latest.generation not in oracle.failed:
            # The engine's newest change was acknowledged and did not itself fail.
            assert desired.get(engine_id) == latest.value, (engine_id, latest)
    for record in store.generations(limit=1000):
        if record.healthy is False:
            assert record.id in oracle.failed, (record.id, record.verdict)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(operation, max_size=25))
# The reproduction A: b crashes after c was added and a deleted.
@example(
    [
        ("put", "x", 0, 0, True),
        ("ready", "x"),
        ("put", "y", 0, 0, True),
        ("put", "z", 0, 0, True),
        ("delete", "x"),
        ("crash", "y"),
    ]
)
# A preset set again with one engine changed, then the other engine of the first set fails.
@example(
    [
        ("preset_set", {"a": (1, 0), "b": (1, 0)}, True),
        ("preset_set", {"a": (0, 0), "b": (1, 0)}, True),
        ("crash", "p.b"),
    ]
)
# A label-only change after a failing one, and a time-out of the revert.
@example(
    [
        ("put", "x", 1, 0, True),
        ("put", "x", 1, 1, True),
        ("crash", "x"),
        ("advance",),
        ("put", "y", 0, 0, False),
        ("advance",),
    ]
)
def test_no_acknowledged_change_that_did_not_fail_is_ever_lost(operations):
    run(operations)


# -- the reproductions, as plain sequences ------------------------------------


def test_a_failed_change_reverts_only_its_own_engine():
    """b crashes after c was added and a deleted: only b is undone."""
    with tempfile.TemporaryDirectory() as home:
        store, clock = new_store(Path(home))
        store.put_engine("a", parse_engine(spec("a", 0)), "put a")  # 1
        observed = {"a": instance(store, "a", InstanceState.READY)}
        review(store, observed, clock())
        assert store.generation(1).healthy is True
        store.put_engine("b", parse_engine(spec("b", 0)), "put b")  # 2
        store.put_engine("c", parse_engine(spec("c", 0)), "put c")  # 3
        store.delete_engine("a", "delete a")  # 4
        observed["b"] = instance(store, "b", InstanceState.BACKOFF, failures=CRASH_LIMIT)
        outcomes = {o.generation: o for o in review(store, observed, clock())}
        assert outcomes[2].verdict.healthy is False
        assert outcomes[2].verdict.reason == "b exited 2 times (last: exit code 1)"
        assert outcomes[2].reverted_by == 5 and outcomes[2].reverted == ("b",)
        assert store.generation(4).healthy is True  # a deletion has nothing to start
        assert sorted(desired_view(store)) == ["c"]
        assert store.generation(5).reverts == 2


def test_a_later_change_to_the_same_engine_supersedes_the_earlier_verdict():
    with tempfile.TemporaryDirectory() as home:
        store, clock = new_store(Path(home))
        store.put_engine("a", parse_engine(spec("a", 1)), "put a v1")  # 1
        store.put_engine("a", parse_engine(spec("a", 2)), "put a v2")  # 2
        observed = {"a": instance(store, "a", InstanceState.READY)}
        review(store, observed, clock())
        first, second = store.generation(1), store.generation(2)
        assert first.state == "superseded" and "generation 2" in first.verdict
        assert second.healthy is True


def test_reverting_a_preset_set_restores_the_preset_beside_later_ones():
    """`preset set q` (crash-loops), then an unrelated preset: only q goes."""
    with tempfile.TemporaryDirectory() as home:
        store, clock = new_store(Path(home))
        q = {"version": 1, "name": "q", "engines": [spec("chat", 0), spec("embed", 0)]}
        m = {"version": 1, "name": "m", "engines": [spec("embed", 0)]}
        store.set_preset(parse_preset(q), "api", "preset set q")  # 1
        store.set_preset(parse_preset(m), "api", "preset set m")  # 2
        store.unset_preset("m", "preset unset m")  # 3
        store.set_preset(parse_preset(m), "api", "preset set m")  # 4
        observed = {
            "q.chat": instance(store, "q.chat", InstanceState.READY),
            "q.embed": instance(store, "q.embed", InstanceState.BACKOFF, failures=CRASH_LIMIT),
            "m.embed": instance(store, "m.embed", InstanceState.READY),
        }
        outcomes = {o.generation: o for o in review(store, observed, clock())}
        assert outcomes[1].verdict.healthy is False and "q.embed" in outcomes[1].verdict.reason
        assert outcomes[4].verdict.healthy is True
        assert "q.embed" not in store.generation(4).verdict
        assert sorted(desired_view(store)) == ["m.embed"]
        assert [p.name for p in store.active_presets()] == ["m"]


def test_a_disaggregated_change_is_judged_on_its_instances_and_reverted_as_one():
    """The change is the declared engine's; its verdict waits for every instance and fails
    with any (reconcile/rollout_set.py)."""

    def member(engine_id: str, state: InstanceState, failures: int = 0) -> Instance:
        (expanded,) = [e for e in expand_desired(store.desired()) if e.id == engine_id]
        return Instance(
            engine_id, store.current_generation(), expanded.spec.spec_hash, state,
            failures=failures, last_exit_code=1 if failures else None,
        )  # fmt: skip

    with tempfile.TemporaryDirectory() as home:
        store, clock = new_store(Path(home))
        block = {**spec("chat", 0), "disaggregated": {}}
        store.put_engine("chat", parse_engine(block), "put chat")  # 1
        observed = {"chat.prefill-0": member("chat.prefill-0", InstanceState.READY)}
        (waiting,) = review(store, observed, clock())
        assert waiting.verdict.healthy is None
        observed["chat.decode-0"] = member("chat.decode-0", InstanceState.READY)
        review(store, observed, clock())
        assert store.generation(1).healthy is True
        changed = {**spec("chat", 1), "disaggregated": {}}
        store.put_engine("chat", parse_engine(changed), "put chat v1")  # 2
        observed = {
            "chat.prefill-0": member("chat.prefill-0", InstanceState.READY),
            "chat.decode-0": member("chat.decode-0", InstanceState.BACKOFF, CRASH_LIMIT),
        }
        outcomes = {o.generation: o for o in review(store, observed, clock())}
        assert outcomes[2].verdict.healthy is False
        assert outcomes[2].verdict.reason == "chat.decode-0 exited 2 times (last: exit code 1)"
        assert outcomes[2].reverted == ("chat",)
        assert desired_view(store) == {"chat": ("org/m0-1B", "l0")}
