"""Owns the tests of sagellmd/store/: migrations, pragmas and every read and write of Store."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from sagellmd.errors import ConflictError, NotFoundError
from sagellmd.instance import Instance, InstanceState, StopIntent
from sagellmd.shipped_files import migrations_dir
from sagellmd.spec import parse_engine, parse_preset
from sagellmd.store.db import migrate, open_database
from sagellmd.store.repository import Store

TABLES = {"active_presets", "desired_engines", "generations", "instances", "events"}


class Clock:
    """A clock that ticks one second per reading."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._ticks = itertools.count()
        self._start = start

    def __call__(self) -> float:
        return self._start + next(self._ticks)


def preset(name="tiny", *engines) -> object:
    engines = engines or (
        {"name": "chat", "model": "org/chat"},
        {"name": "embed", "kind": "embedding", "model": "org/embed"},
    )
    return parse_preset({"version": 1, "name": name, "engines": list(engines)})


def sql(engine: Engine, statement: str):
    with engine.connect() as connection:
        return connection.exec_driver_sql(statement).scalar()


def open_store(path: Path) -> tuple[Engine, Store]:
    engine = open_database(path)
    migrate(engine)
    return engine, Store(engine, clock=Clock())


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "home" / "sagellm.db"


@pytest.fixture
def database(db_path) -> Iterator[Engine]:
    engine = open_database(db_path)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def store(database) -> Store:
    return Store(database, clock=Clock())


def snapshot(store: Store):
    """Everything a rejected write must leave unchanged."""
    return (
        store.count_rows(),
        store.desired(),
        store.active_presets(),
        store.last_event_id(),
        store.current_generation(),
    )


# -- database ------------------------------------------------------------------


def test_migrations_create_the_schema(database, db_path):
    assert db_path.exists()
    tables = set(inspect(database).get_table_names())
    assert TABLES <= tables
    assert "alembic_version" in tables
    head = ScriptDirectory(str(migrations_dir())).get_current_head()
    assert head is not None and head >= "0002"
    assert sql(database, "SELECT version_num FROM alembic_version") == head
    indexes = {index["name"] for index in inspect(database).get_indexes("events")}
    assert "ix_events_engine" in indexes
    columns = {column["name"] for column in inspect(database).get_columns("instances")}
    assert {"stop_intent", "pid", "create_time", "failures", "ready_at"} <= columns


def test_migrations_are_idempotent(database, store):
    store.set_preset(preset(), "builtin", "first")
    migrate(database)
    migrate(database)
    assert sql(database, "SELECT count(*) FROM alembic_version") == 1
    assert [engine.id for engine in store.desired()] == ["tiny.chat", "tiny.embed"]


def test_pragmas_are_on(database):
    with database.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA synchronous").scalar() == 2
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA busy_timeout").scalar() == 5000


def test_open_database_creates_the_parent_folder(tmp_path):
    engine = open_database(tmp_path / "a" / "b" / "sagellm.db")
    try:
        migrate(engine)
        assert (tmp_path / "a" / "b" / "sagellm.db").exists()
    finally:
        engine.dispose()


# -- presets and generations ---------------------------------------------------


def test_empty_store(store):
    assert store.desired() == []
    assert store.active_presets() == []
    assert store.current_generation() == 0
    assert store.generations() == []
    assert store.instances() == {}
    assert store.events(None, 10) == []
    assert store.last_event_id() == 0


def test_set_preset_makes_a_generation_with_a_snapshot(store):
    generation = store.set_preset(preset(), "builtin", "preset set tiny")
    assert generation == 1 == store.current_generation()

    (record,) = store.generations()
    assert (record.id, record.cause, record.healthy) == (1, "preset set tiny", None)
    assert sorted(record.snapshot["presets"]) == ["tiny"]
    assert [(e["id"], e["preset"], e["spec"]["name"]) for e in record.snapshot["engines"]] == [
        ("tiny.chat", "tiny", "chat"),
        ("tiny.embed", "tiny", "embed"),
    ]
    assert record.to_dict()["presets"] == ["tiny"]

    desired = {engine.id: engine for engine in store.desired()}
    assert set(desired) == {"tiny.chat", "tiny.embed"}
    assert desired["tiny.embed"].preset == "tiny"
    assert desired["tiny.embed"].spec == preset().engines[1]
    assert desired["tiny.chat"].restart_requested_at is None

    (active,) = store.active_presets()
    assert (active.name, active.source) == ("tiny", "builtin")
    assert active.document["engines"][0]["name"] == "chat"

    (event,) = store.events(None, 10)
    assert (event.type, event.message, event.generation, event.engine) == (
        "generation",
        "preset set tiny",
        1,
        None,
    )


def test_snapshot_holds_every_engine_not_only_the_presets(store):
    store.put_engine("solo", parse_engine({"name": "solo", "model": "m"}), "engine add solo")
    store.set_preset(preset(), "file", "preset set tiny")
    snap = store.generations()[0].snapshot
    assert [engine["id"] for engine in snap["engines"]] == ["solo", "tiny.chat", "tiny.embed"]


def _tables_as_a_snapshot(database: Engine) -> dict:
    """The desired tables as they are, in the shape a generation records (read with SQL)."""
    with database.connect() as connection:
        presets = connection.exec_driver_sql(
            "SELECT name, document, source FROM active_presets"
        ).all()
        engines = connection.exec_driver_sql(
            "SELECT id, preset, spec FROM desired_engines ORDER BY id"
        ).all()
    return {
        "presets": {name: json.loads(document) for name, document, _ in presets},
        "sources": {name: source for name, _, source in presets},
        "engines": [
            {"id": id_, "preset": preset_, "spec": json.loads(spec)}
            for id_, preset_, spec in engines
        ],
    }


def test_each_generation_records_the_desired_tables_as_its_change_left_them(database, store):
    changes = [
        lambda: store.put_engine("zz", parse_engine({"name": "zz", "model": "m"}), "add zz"),
        lambda: store.set_preset(preset(), "builtin", "set tiny"),
        lambda: store.set_preset(preset("b", {"name": "x", "model": "m"}), "file", "set b"),
        lambda: store.set_preset(preset("tiny", {"name": "chat", "model": "n"}), "api", "edit"),
        lambda: store.delete_engine("zz", "delete zz"),
        lambda: store.unset_preset("b", "unset b"),
        lambda: store.revert_generation(4, "revert 4"),
        lambda: store.restore_generation(2, "restore 2"),
    ]
    for number, change in enumerate(changes, start=1):
        change()
        assert store.current_generation() == number
        text = sql(database, f"SELECT snapshot FROM generations WHERE id = {number}")
        assert text == json.dumps(_tables_as_a_snapshot(database), sort_keys=True), number


def test_setting_a_preset_again_with_fewer_engines_removes_the_stale_one(store):
    store.set_preset(preset(), "builtin", "first")
    generation = store.set_preset(
        preset("tiny", {"name": "chat", "model": "org/chat-v2"}), "file", "second"
    )
    assert generation == 2
    (only,) = store.desired()
    assert (only.id, only.spec.model) == ("tiny.chat", "org/chat-v2")
    assert store.active_presets()[0].source == "file"
    newest = store.generations()[0]
    assert [engine["id"] for engine in newest.snapshot["engines"]] == ["tiny.chat"]
    assert [g.cause for g in store.generations()] == ["second", "first"]
    assert store.count_rows() == {"active_presets": 1, "desired_engines": 1, "generations": 2}


def test_two_presets_live_side_by_side(store):
    store.set_preset(preset("one"), "builtin", "one")
    store.set_preset(preset("two"), "builtin", "two")
    assert [engine.id for engine in store.desired()] == [
        "one.chat",
        "one.embed",
        "two.chat",
        "two.embed",
    ]
    store.unset_preset("one", "unset one")
    assert [engine.id for engine in store.desired()] == ["two.chat", "two.embed"]


def test_unset_removes_the_presets_engines(store):
    store.set_preset(preset(), "builtin", "set")
    store.put_engine("solo", parse_engine({"name": "solo", "model": "m"}), "add")
    generation = store.unset_preset("tiny", "preset unset tiny")
    assert generation == 3
    assert [engine.id for engine in store.desired()] == ["solo"]
    assert store.active_presets() == []
    assert store.generations()[0].snapshot == {
        "presets": {},
        "sources": {},
        "engines": [{"id": "solo", "preset": None, "spec": store.desired()[0].spec.to_dict()}],
    }


def test_unset_of_an_unknown_preset_is_not_found(store):
    store.set_preset(preset(), "builtin", "set")
    before = snapshot(store)
    with pytest.raises(NotFoundError, match="preset 'nope' is not active; active: tiny"):
        store.unset_preset("nope", "unset")
    assert snapshot(store) == before


def test_unset_with_nothing_active_says_none(store):
    with pytest.raises(NotFoundError, match="active: none"):
        store.unset_preset("nope", "unset")


# -- ad-hoc engines ------------------------------------------------------------


def test_put_engine_creates_then_replaces(store):
    spec = parse_engine({"name": "solo", "model": "m"})
    assert store.put_engine("solo", spec, "add") == (1, True)
    changed = parse_engine({"name": "solo", "model": "m2"})
    assert store.put_engine("solo", changed, "change") == (2, False)
    (engine,) = store.desired()
    assert (engine.id, engine.preset, engine.spec) == ("solo", None, changed)
    assert store.desired_engine("solo") == engine
    assert store.desired_engine("other") is None


def test_put_engine_may_keep_its_own_port(store):
    store.put_engine("solo", parse_engine({"name": "solo", "model": "m", "port": 9000}), "add")
    store.put_engine("solo", parse_engine({"name": "solo", "model": "m2", "port": 9000}), "edit")
    assert store.desired()[0].spec.model == "m2"


def test_put_engine_over_a_preset_engine_conflicts_and_changes_nothing(store):
    store.set_preset(preset(), "builtin", "set")
    before = snapshot(store)
    with pytest.raises(ConflictError, match="belongs to preset 'tiny'"):
        store.put_engine("tiny.chat", parse_engine({"name": "chat", "model": "x"}), "add")
    assert snapshot(store) == before


def test_put_engine_on_a_taken_port_conflicts_and_changes_nothing(store):
    store.set_preset(preset("tiny", {"name": "embed", "model": "m", "port": 8090}), "file", "set")
    before = snapshot(store)
    with pytest.raises(ConflictError) as caught:
        store.put_engine("solo", parse_engine({"name": "solo", "model": "m", "port": 8090}), "add")
    assert "solo.port: port 8090 is already declared by engine 'tiny.embed'" in str(caught.value)
    assert caught.value.details == {"field": "port", "engine": "tiny.embed"}
    assert snapshot(store) == before


def test_set_preset_on_a_taken_port_conflicts_and_changes_nothing(store):
    store.put_engine("solo", parse_engine({"name": "solo", "model": "m", "port": 8090}), "add")
    store.set_preset(preset(), "builtin", "set")
    before = snapshot(store)
    clash = preset("tiny", {"name": "embed", "model": "m", "port": 8090})
    with pytest.raises(ConflictError, match="tiny.embed.port: port 8090 is already declared"):
        store.set_preset(clash, "file", "set again")
    assert snapshot(store) == before


def test_delete_engine(store):
    store.put_engine("solo", parse_engine({"name": "solo", "model": "m"}), "add")
    assert store.delete_engine("solo", "rm") == 2
    assert store.desired() == []
    with pytest.raises(NotFoundError, match="no engine 'solo'"):
        store.delete_engine("solo", "rm")


def test_delete_of_a_preset_engine_conflicts(store):
    store.set_preset(preset(), "builtin", "set")
    before = snapshot(store)
    with pytest.raises(ConflictError, match="sagellm preset unset tiny"):
        store.delete_engine("tiny.chat", "rm")
    assert snapshot(store) == before


def test_request_restart(store):
    store.put_engine("solo", parse_engine({"name": "solo", "model": "m"}), "add")
    at = store.request_restart("solo")
    assert store.desired_engine("solo").restart_requested_at == at
    with pytest.raises(NotFoundError):
        store.request_restart("ghost")


# -- instances -----------------------------------------------------------------

FULL_INSTANCE = Instance(
    engine_id="tiny.chat",
    generation=7,
    spec_hash="0123456789abcdef",
    state=InstanceState.STOPPING,
    message="health check failed 3 times",
    pid=4242,
    create_time=1_700_000_000.25,
    port=20001,
    restarts=3,
    failures=2,
    last_exit_code=1,
    last_exit_signal=9,
    started_at=1_700_000_100.5,
    ready_at=1_700_000_101.5,
    exited_at=1_700_000_050.0,
    stop_intent=StopIntent.FAILURE,
    # A prefill or decode instance's KV side-channel ports (migration 0007).
    side_ports=(20101, 20102),
    # Its cluster node, and the nodes and GPUs of an engine spanning nodes (migration 0008).
    node="box2",
    spans=(("box2", (0, 1)), ("box3", (1, 0))),
)


@pytest.mark.parametrize("intent", [StopIntent.FAILURE, StopIntent.DELIBERATE, None])
def test_instance_round_trip(store, intent):
    instance = Instance(**{**vars(FULL_INSTANCE), "stop_intent": intent})
    assert store.save_instance(instance) is None
    assert store.instances() == {"tiny.chat": instance}


def test_a_stop_intent_written_before_the_rename_reads_as_deliberate(database, store):
    store.save_instance(Instance(**{**vars(FULL_INSTANCE), "stop_intent": StopIntent.DELIBERATE}))
    with database.begin() as connection:
        connection.exec_driver_sql("UPDATE instances SET stop_intent = 'remove'")
    assert store.instances()["tiny.chat"].stop_intent is StopIntent.DELIBERATE
    assert sql(database, "SELECT stop_intent FROM instances") == "remove"


@pytest.mark.parametrize("state", list(InstanceState))
def test_every_state_round_trips(store, state):
    instance = Instance("solo", 1, "h", state)
    store.save_instance(instance)
    assert store.instances()["solo"] == instance


def test_save_instance_updates_in_place_and_records_the_event(store):
    store.save_instance(FULL_INSTANCE)
    ready = Instance(
        **{
            **vars(FULL_INSTANCE),
            "state": InstanceState.READY,
            "stop_intent": None,
            "pid": 5151,
            "message": "healthy",
        }
    )
    event = store.save_instance(ready, ("ready", "healthy after 3.0s"), 7)
    assert store.instances() == {"tiny.chat": ready}
    assert (event.engine, event.type, event.message, event.generation) == (
        "tiny.chat",
        "ready",
        "healthy after 3.0s",
        7,
    )
    assert store.events(None, 10) == [event]


def test_forget_instance(store):
    store.save_instance(FULL_INSTANCE)
    store.save_instance(Instance("other", 1, "h", InstanceState.READY))
    store.forget_instance("tiny.chat")
    store.forget_instance("never-there")
    assert list(store.instances()) == ["other"]


# -- events --------------------------------------------------------------------


@pytest.fixture
def events(store):
    made = []
    for index in range(10):
        engine = "a" if index % 2 == 0 else "b"
        made.append(store.add_event(engine, "note", f"event {index}", generation=index))
    made.append(store.add_event(None, "generation", "daemon event"))
    return made


def test_add_event_returns_the_record(events):
    assert [event.id for event in events] == list(range(1, 12))
    assert events[0].to_dict()["ts"].endswith("Z")
    assert events[-1].engine is None and events[-1].generation is None


def test_events_without_after_are_the_newest_in_order(store, events):
    assert store.events(None, 3) == events[-3:]
    assert store.events(None, 100) == events


def test_events_after(store, events):
    assert store.events(4, 100) == events[4:]
    assert store.events(4, 2) == events[4:6]
    assert store.events(11, 100) == []
    assert store.events(0, 1) == events[:1]


def test_events_of_one_engine(store, events):
    only_a = [event for event in events if event.engine == "a"]
    assert store.events(None, 100, engine="a") == only_a
    assert store.events(None, 2, engine="a") == only_a[-2:]
    assert store.events(3, 2, engine="a") == [e for e in only_a if e.id > 3][:2]
    assert store.events(None, 10, engine="nobody") == []
    assert store.last_event_id() == 11


# -- durability ----------------------------------------------------------------


def test_data_survives_closing_and_reopening(db_path):
    engine, store = open_store(db_path)
    try:
        store.set_preset(preset(), "builtin", "set")
        store.put_engine("solo", parse_engine({"name": "solo", "model": "m", "port": 9000}), "add")
        store.request_restart("solo")
        store.save_instance(FULL_INSTANCE, ("stopping", "too slow"), 2)
        before = (
            store.desired(),
            store.active_presets(),
            store.generations(),
            store.instances(),
            store.events(None, 100),
        )
    finally:
        engine.dispose()

    engine, store = open_store(db_path)
    try:
        after = (
            store.desired(),
            store.active_presets(),
            store.generations(),
            store.instances(),
            store.events(None, 100),
        )
        assert after == before
        assert store.current_generation() == 2
        with pytest.raises(ConflictError):
            store.put_engine(
                "other", parse_engine({"name": "other", "model": "m", "port": 9000}), "add"
            )
    finally:
        engine.dispose()


# -- bugs ------------------------------------------------------------------------


def test_preset_engine_may_take_over_the_port_of_an_engine_it_replaces(store):
    store.set_preset(preset("tiny", {"name": "old", "model": "m", "port": 9000}), "file", "v1")
    store.set_preset(preset("tiny", {"name": "new", "model": "m", "port": 9000}), "file", "v2")
    assert [engine.id for engine in store.desired()] == ["tiny.new"]
