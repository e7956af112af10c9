"""The loop's published snapshot: taken once per state, and immune to later changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sagellmd.config import Settings
from sagellmd.events import EventHub
from sagellmd.instance import Instance, InstanceState
from sagellmd.reconcile.loop import Reconciler
from sagellmd.spec import parse_engine
from sagellmd.store.db import migrate, open_database
from sagellmd.store.repository import Store


def _reconciler(home: Path) -> tuple[Reconciler, Store, EventHub]:
    engine = open_database(home / "sagellm.db")
    migrate(engine)
    store, hub = Store(engine), EventHub()
    settings = Settings(home=home, gpus="simulate:1x80", runtimes={"vllm": ("python",)})
    return Reconciler(settings, store, hub), store, hub


def test_a_snapshot_is_taken_once_per_state_and_copies_what_it_shows(tmp_path):
    async def scenario() -> None:
        reconciler, store, hub = _reconciler(tmp_path)
        reconciler.observe_gpus(store.desired())
        first = reconciler.snapshot()
        assert reconciler.snapshot() is first  # nothing recorded, no pass: the same one
        store.put_engine("a", parse_engine({"name": "a", "model": "org/a-1B"}), "put a")
        assert reconciler.snapshot() is first  # not notified yet: still the published one
        hub.notify()
        second = reconciler.snapshot()
        assert second is not first and [e.id for e in second.desired] == ["a"]
        assert second.estimates["a"].source == "name"
        reconciler.world.instances["a"] = Instance("a", 1, "h", InstanceState.PENDING)
        assert "a" not in second.instances  # a copy: later changes do not show in it
        hub.notify()
        assert reconciler.snapshot().instances["a"].state is InstanceState.PENDING

    asyncio.run(scenario())
