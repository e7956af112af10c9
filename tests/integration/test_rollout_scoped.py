"""A failed change is judged on, and reverted to, its own engines only: the reproductions of
issue 11 item 1, through a real daemon (API and CLI), stand-in and real embedding engines."""

from __future__ import annotations

import random
import re
import threading
from typing import Any

import pytest

from tests.integration.conftest import Daemon, engine_processes

CRASHING = {"FAKE_VLLM_CRASH_AFTER": "1"}


def _generation(daemon: Daemon, number: int) -> dict[str, Any]:
    return daemon.get(f"/v1/generations/{number}").json()


def _desired(daemon: Daemon) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in daemon.get("/v1/engines").json()["engines"]}


def _judged(generation: dict[str, Any]) -> bool:
    return generation["healthy"] is not None or generation.get("state") == "superseded"


def _settled(daemon: Daemon, number: int, timeout: float = 30) -> dict[str, Any]:
    return daemon.wait_for(
        lambda: _judged(g := _generation(daemon, number)) and g,
        timeout,
        f"a verdict on generation {number}",
    )


def test_reproduction_a_a_crash_reverts_only_the_crashing_engine(daemon: Daemon):
    assert daemon.put("/v1/engines/a", {"model": "fake/a-1B"}).status_code == 201  # 1
    daemon.wait_for(lambda: _generation(daemon, 1)["healthy"] is True, 20, "generation 1")
    a_pid = daemon.engine("a")["pid"]
    # Client 1: b crashes 1 s after every start.
    assert daemon.put("/v1/engines/b", {"model": "fake/b-1B", "env": CRASHING}).status_code == 201
    # Client 2, while b is still coming up: c added, a deleted.
    assert daemon.put("/v1/engines/c", {"model": "fake/c-1B"}).status_code == 201  # 3
    assert daemon.delete("/v1/engines/a").status_code == 200  # 4

    failed = _settled(daemon, 2)
    assert failed["healthy"] is False
    assert failed["verdict"].startswith("b exited 2 times (last: exit code"), failed["verdict"]
    assert _settled(daemon, 3)["healthy"] is True
    deletion = _settled(daemon, 4)
    assert deletion["healthy"] is True and deletion["verdict"] == "nothing to start"
    revert = daemon.wait_for(
        lambda: (g := _generation(daemon, 5)).get("id") == 5 and g, 10, "the revert generation"
    )
    assert revert["cause"].startswith("rollback of 2: b exited 2 times")
    assert revert["reverts"] == 2 and [c["engine"] for c in revert["changes"]] == ["b"]
    daemon.wait_for(lambda: sorted(_desired(daemon)) == ["c"], 10, "desired state {c}")
    assert "a" not in _desired(daemon)  # the deleted engine stays deleted
    daemon.wait_state("c", "ready")
    daemon.wait_for(
        lambda: all(p.pid != a_pid for p in engine_processes(daemon.home)), 10, "a gone"
    )
    rollbacks = [e for e in daemon.events() if e["type"] == "rollback"]
    assert [e["message"] for e in rollbacks] == [
        "generation 5 reverts what generation 2 changed: b as before it"
    ]


@pytest.mark.slow
def test_reproduction_b_a_later_preset_is_not_judged_by_an_earlier_ones_engine(
    make_daemon: Any,
):
    daemon = make_daemon(start=False)
    # No hub here: the embedding engine of qwen-mini (BAAI/bge-small-zh-v1.5, not on disk)
    # fails at every start, fast when the hub is not even tried.
    daemon.extra_env["HF_HUB_OFFLINE"] = "1"
    daemon.start()

    def cli(*args: str) -> int:
        result = daemon.cli(*args)
        assert result.returncode == 0, result.stdout + result.stderr
        found = re.search(r"^generation (\d+)", result.stdout, re.MULTILINE)
        return int(found.group(1)) if found else 0

    cli("preset", "set", "minilm-cpu", "--wait", "--timeout", "120")
    embed_pid = daemon.engine("minilm-cpu.embed")["pid"]
    qwen_generation = cli("preset", "set", "qwen-mini")  # its embed engine crash-loops
    cli("preset", "unset", "minilm-cpu")
    later_generation = cli("preset", "set", "minilm-cpu")

    qwen = _settled(daemon, qwen_generation, timeout=120)
    assert qwen["healthy"] is False and "qwen-mini.embed" in qwen["verdict"], qwen
    later = _settled(daemon, later_generation, timeout=120)
    assert later["healthy"] is True, later
    assert later["verdict"] == "minilm-cpu.embed ready"
    revert = next(
        g
        for g in daemon.get("/v1/generations").json()["generations"]
        if g["cause"].startswith(f"rollback of {qwen_generation}:")
    )
    assert sorted(c["engine"] for c in revert["changes"]) == ["qwen-mini.chat", "qwen-mini.embed"]
    status = daemon.get("/v1/status").json()
    assert status["presets"] == ["minilm-cpu"]
    assert sorted(e["id"] for e in status["engines"]) == ["minilm-cpu.embed"]
    assert daemon.engine("minilm-cpu.embed")["pid"] != embed_pid  # unset, then set again


def test_a_storm_of_changes_loses_no_change_that_did_not_fail(daemon: Daemon):
    """8 clients change 12 engines at once; some specs crash-loop. Afterwards every engine's
    newest acknowledged change is declared, unless that change itself failed."""
    names = [f"e{i}" for i in range(12)]
    acknowledged: list[tuple[int, str, dict[str, Any] | None]] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(8):
            name = rng.choice(names)
            if rng.random() < 0.2:
                answer = daemon.delete(f"/v1/engines/{name}")
                spec = None
            else:
                spec = {
                    "model": f"fake/{name}-v{rng.randrange(3)}-1B",
                    "startup_timeout_s": 8,
                    "use_gpu": False,
                }
                if rng.random() < 0.25:
                    spec["env"] = CRASHING
                answer = daemon.put(f"/v1/engines/{name}", spec)
            if answer.status_code in (200, 201):
                with lock:
                    acknowledged.append((answer.json()["generation"], name, spec))

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def all_settled() -> bool:
        history = daemon.get("/v1/generations", params={"limit": 1000}).json()["generations"]
        return all(_judged(g) for g in history)

    daemon.wait_for(all_settled, 90, "every generation judged")
    latest: dict[str, tuple[int, dict[str, Any] | None]] = {}
    for number, name, spec in sorted(acknowledged, key=lambda item: item[0]):
        latest[name] = (number, spec)
    desired = _desired(daemon)
    checked = 0
    for name, (number, spec) in latest.items():
        if _generation(daemon, number)["healthy"] is False:
            continue
        checked += 1
        if spec is None:
            assert name not in desired, (name, number)
        else:
            assert desired[name]["model"] == spec["model"], (name, number, desired.get(name))
    assert checked > 0
