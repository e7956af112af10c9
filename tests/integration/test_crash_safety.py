"""The daemon can stop or die at any moment: engines live on, nothing is lost or duplicated."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.integration.conftest import Daemon, engine_processes, fake_preset

# Bound for the daemon to converge after a restart or at the end of the fault run.
CONVERGE_S = 20.0
# SAGELLM_FAULT_SEED=N reruns one sequence; the default keeps CI reproducible.
FAULT_SEED = int(os.environ.get("SAGELLM_FAULT_SEED", "20261123"))
FAULT_OPERATIONS = int(os.environ.get("SAGELLM_FAULT_OPERATIONS", "34"))
# The test kills engines on purpose, which a rollout would count as a crash loop and roll
# back: a decision of the daemon, not a change the API acknowledged. Off for this test.
NO_ROLLBACK = "?rollback=false"
# At least one daemon kill in this many operations, whatever the dice say.
MAX_OPERATIONS_BETWEEN_KILLS = 4


def health(port: int) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code


def ready_engines(daemon: Daemon, ids: list[str]) -> dict[str, dict[str, Any]]:
    return {engine_id: daemon.wait_state(engine_id, "ready") for engine_id in ids}


def five_engines(daemon: Daemon) -> list[str]:
    preset = fake_preset("p", {"name": "a"}, {"name": "b"}, {"name": "c"})
    assert daemon.put("/v1/presets/p", preset).status_code == 200
    for name in ("solo", "duo"):
        response = daemon.put(f"/v1/engines/{name}", {"model": f"fake/{name}-1B"})
        assert response.status_code == 201, response.text
    return ["p.a", "p.b", "p.c", "solo", "duo"]


# -- live restore ----------------------------------------------------------------


def test_a_daemon_restart_with_five_ready_engines_restarts_none(daemon: Daemon):
    ids = five_engines(daemon)
    before = {engine_id: entry["pid"] for engine_id, entry in ready_engines(daemon, ids).items()}
    last_event = daemon.events()[-1]["id"]
    assert daemon.stop() == 0
    daemon.start()
    after = {engine_id: entry["pid"] for engine_id, entry in ready_engines(daemon, ids).items()}
    assert after == before
    assert all(daemon.engine(engine_id)["restarts"] == 0 for engine_id in ids)
    since = daemon.events(after=last_event)
    assert not [e for e in since if e["type"] in ("starting", "restarting", "exited")], since
    adopted = {e["engine"] for e in since if e["type"] == "adopted"}
    assert adopted == set(ids)
    leaders = {p.pid for p in engine_processes(daemon.home) if os.getpgid(p.pid) == p.pid}
    assert leaders == set(before.values())


def test_sigterm_exits_within_5s_and_the_engines_keep_serving(daemon: Daemon):
    preset = fake_preset("p", {"name": "a"}, {"name": "b"})
    assert daemon.put("/v1/presets/p", preset).status_code == 200
    entries = ready_engines(daemon, ["p.a", "p.b"])
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0
    took = time.monotonic() - started
    assert took < 5, f"sagellmd took {took:.1f}s to exit on SIGTERM"
    # The daemon is gone; the engines answer on their own.
    time.sleep(0.5)
    for entry in entries.values():
        assert psutil.pid_exists(entry["pid"])
        assert health(entry["port"]) == 200
    assert "left running" in daemon.log()


def test_stop_engines_on_exit_stops_them_gracefully_and_they_return(make_daemon):
    # A long grace period: a stop that needed SIGKILL would take over 8 s.
    daemon = make_daemon(stop_engines_on_exit=True, stop_grace_s=8)
    preset = fake_preset("p", {"name": "a"}, {"name": "b"})
    assert daemon.put("/v1/presets/p", preset).status_code == 200
    before = ready_engines(daemon, ["p.a", "p.b"])
    processes = {engine_id: psutil.Process(e["pid"]) for engine_id, e in before.items()}
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM, timeout=10) == 0
    # The stand-in engine exits at once on SIGTERM; a SIGKILL would only come after the
    # 8 s grace period, so a quicker exit means a graceful stop (with room for a slow box).
    assert time.monotonic() - started < 6
    assert not engine_processes(daemon.home)
    assert all(not p.is_running() for p in processes.values())
    with sqlite3.connect(daemon.home / "sagellm.db") as connection:
        rows = connection.execute("SELECT engine, type FROM events ORDER BY id").fetchall()
    for engine_id in before:
        assert (engine_id, "stopping") in rows and (engine_id, "stopped") in rows, rows
    daemon.start()
    after = ready_engines(daemon, ["p.a", "p.b"])
    assert all(after[e]["pid"] != before[e]["pid"] for e in before)
    assert all(health(entry["port"]) == 200 for entry in after.values())


# -- refused databases -----------------------------------------------------------


def file_hashes(home: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in home.iterdir()
        if path.name.startswith("sagellm.db") and not path.name.endswith("-shm")
    }


def test_a_corrupt_database_is_refused_and_left_untouched(make_daemon):
    daemon = make_daemon(start=False)
    (daemon.home / "sagellm.db").write_bytes(random.Random(5).randbytes(8192))
    before = file_hashes(daemon.home)
    daemon.start(wait=False)
    assert daemon.process.wait(20) == 2
    assert file_hashes(daemon.home) == before
    log = daemon.log()
    assert f"{daemon.home / 'sagellm.db'}" in log and "not an SQLite database" in log


def test_a_database_of_a_newer_sagellmd_is_refused_and_left_untouched(daemon: Daemon):
    assert daemon.stop() == 0
    with sqlite3.connect(daemon.home / "sagellm.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'zzzz'")
    connection.close()
    before = file_hashes(daemon.home)
    daemon.start(wait=False)
    assert daemon.process.wait(20) == 2
    assert file_hashes(daemon.home) == before
    assert "this database was written by a newer sagellmd (revision zzzz)" in daemon.log()


# -- fault injection ---------------------------------------------------------------


@dataclass
class Acknowledged:
    """What the API answered 2xx to: the desired state the daemon must converge to."""

    presets: dict[str, dict[str, str]] = field(default_factory=dict)  # preset -> name -> model
    adhoc: dict[str, str] = field(default_factory=dict)  # id -> model

    def engines(self) -> dict[str, str]:
        found = dict(self.adhoc)
        for preset, engines in self.presets.items():
            found.update({f"{preset}.{name}": model for name, model in engines.items()})
        return found


class FaultRun:
    """One seeded sequence of API calls, engine kills and daemon kills, with its log."""

    PRESETS = ("p1", "p2")
    PRESET_ENGINES = ("a", "b", "c")
    ADHOC = ("s1", "s2")
    MODELS = ("fake/alpha-1B", "fake/beta-1B")

    def __init__(self, daemon: Daemon, seed: int, workers: bool = False) -> None:
        self.daemon = daemon
        self.seed = seed
        self.workers = workers
        self.rng = random.Random(seed)
        self.ack = Acknowledged()
        self.steps: list[str] = []
        self.daemon_kills = 0

    def note(self, text: str) -> None:
        self.steps.append(f"{len(self.steps):02d} {text}")

    def failure(self, what: str) -> str:
        return (
            f"seed {self.seed}, workers {self.workers} (rerun: SAGELLM_FAULT_SEED={self.seed}):"
            f" {what}\n"
            + "\n".join(self.steps[-40:])
            + f"\n--- daemon log ---\n{self.daemon.log()[-3000:]}"
        )

    def spec(self, model: str) -> dict[str, Any]:
        # Slow-ish starts so that a daemon kill often lands while an engine is starting or
        # stopping; with `workers`, every engine forks a worker, as vLLM does.
        env = {"FAKE_VLLM_STARTUP_DELAY": f"{self.rng.uniform(0, 0.4):.2f}"}
        if self.workers:
            env["FAKE_VLLM_FORK_CHILD"] = "1"
        return {"model": model, "env": env}

    def pick(self, items: list[Any]) -> Any:
        """One of `items`, drawing the same randomness whatever their number, so that a
        list that depends on timing (live pids) does not change the rest of the sequence."""
        return items[int(self.rng.random() * len(items))]

    # Each operation returns the API answer (None for a signal) and updates `ack`.

    def preset_set(self) -> httpx.Response:
        name = self.rng.choice(self.PRESETS)
        chosen = self.rng.sample(self.PRESET_ENGINES, self.rng.randint(1, 3))
        engines = {engine: self.rng.choice(self.MODELS) for engine in sorted(chosen)}
        document = fake_preset(
            name, *({"name": engine, **self.spec(model)} for engine, model in engines.items())
        )
        response = self.daemon.put(f"/v1/presets/{name}{NO_ROLLBACK}", document)
        self.note(f"preset set {name} {engines} -> {response.status_code}")
        if response.is_success:
            self.ack.presets[name] = engines
        return response

    def preset_unset(self) -> httpx.Response:
        name = self.rng.choice(sorted(self.ack.presets))
        response = self.daemon.delete(f"/v1/presets/{name}{NO_ROLLBACK}")
        self.note(f"preset unset {name} -> {response.status_code}")
        if response.is_success:
            del self.ack.presets[name]
        return response

    def engine_put(self) -> httpx.Response:
        engine_id = self.rng.choice(self.ADHOC)
        model = self.rng.choice(self.MODELS)
        response = self.daemon.put(f"/v1/engines/{engine_id}{NO_ROLLBACK}", self.spec(model))
        self.note(f"engine put {engine_id} {model} -> {response.status_code}")
        if response.is_success:
            self.ack.adhoc[engine_id] = model
        return response

    def engine_delete(self) -> httpx.Response:
        engine_id = self.rng.choice(sorted(self.ack.adhoc))
        response = self.daemon.delete(f"/v1/engines/{engine_id}{NO_ROLLBACK}")
        self.note(f"engine delete {engine_id} -> {response.status_code}")
        if response.is_success:
            del self.ack.adhoc[engine_id]
        return response

    def engine_restart(self) -> httpx.Response:
        engine_id = self.rng.choice(sorted(self.ack.engines()))
        response = self.daemon.post(f"/v1/engines/{engine_id}/restart")
        self.note(f"engine restart {engine_id} -> {response.status_code}")
        return response

    def engine_kill(self) -> None:
        leaders = sorted(
            (engine_id, pid) for pid, engine_id in marked_leaders(self.daemon.home).items()
        )
        if not leaders:
            self.rng.random()
            self.note("engine kill: no engine process")
            return
        engine_id, pid = self.pick(leaders)
        with_suppressed_lookup(os.kill, pid, signal.SIGKILL)
        self.note(f"SIGKILL engine {engine_id} pid {pid}")

    def engine_kill_while_the_daemon_is_down(self) -> None:
        # Converged first, so which process dies depends on the seed alone.
        self.check_converged("before an engine dies with the daemon down")
        engine_id = self.pick(sorted(self.ack.engines()))
        pid = self.daemon.engine(engine_id)["pid"]
        self.daemon.stop(signal.SIGKILL)
        self.daemon_kills += 1
        with_suppressed_lookup(os.kill, pid, signal.SIGKILL)
        self.note(f"SIGKILL daemon, then engine {engine_id} pid {pid}")
        self.daemon.start()
        self.note("daemon started")
        self.check_converged(f"after daemon kill {self.daemon_kills}")

    def operation(self) -> Callable[[], Any]:
        choices: list[Callable[[], Any]] = [self.preset_set, self.engine_put]
        if self.ack.presets:
            choices.append(self.preset_unset)
        if self.ack.adhoc:
            choices.append(self.engine_delete)
        if self.ack.engines():
            choices += [
                self.engine_restart,
                self.engine_kill,
                self.engine_kill_while_the_daemon_is_down,
            ]
        return self.rng.choice(choices)

    def kill_daemon(self) -> None:
        if self.rng.random() < 0.4:
            where = "right after the answer"
        else:
            delay = self.rng.uniform(0, 0.3)
            time.sleep(delay)
            where = f"after {delay * 1000:.0f} ms"
        self.daemon.stop(signal.SIGKILL)
        self.daemon_kills += 1
        self.note(f"SIGKILL daemon {where}")
        self.daemon.start()
        self.note("daemon started")

    def check_converged(self, when: str) -> None:
        deadline = time.monotonic() + CONVERGE_S
        problem = self.mismatch()
        while problem and time.monotonic() < deadline:
            time.sleep(0.1)
            problem = self.mismatch()
        assert problem is None, self.failure(f"not converged {CONVERGE_S}s {when}: {problem}")
        self.note(f"converged {when}: {sorted(self.ack.engines())}")

    def mismatch(self) -> str | None:
        """None when the daemon and the machine match what was acknowledged, else why not."""
        expected = self.ack.engines()
        entries = self.daemon.get("/v1/engines").json()["engines"]
        desired = {e["id"]: e["model"] for e in entries if e["desired"]}
        if desired != expected:
            return f"/v1/engines desired {desired} != acknowledged {expected}"
        status = self.daemon.get("/v1/status").json()
        in_status = {e["id"]: e["model"] for e in status["engines"] if e["desired"]}
        if in_status != expected:
            return f"/v1/status desired {in_status} != acknowledged {expected}"
        leftovers = sorted(e["id"] for e in entries if not e["desired"])
        if leftovers:
            return f"removed engines still listed: {leftovers}"
        not_ready = {e["id"]: e["state"] for e in entries if e["state"] != "ready"}
        if not_ready:
            return f"not ready: {not_ready}"
        by_engine: dict[str, list[int]] = {}
        for pid, engine_id in marked_leaders(self.daemon.home).items():
            by_engine.setdefault(engine_id, []).append(pid)
        if set(by_engine) - set(expected):
            return f"processes of removed engines: {by_engine}"
        for entry in entries:
            if by_engine.get(entry["id"]) != [entry["pid"]]:
                return (
                    f"{entry['id']}: engine processes {by_engine.get(entry['id'])},"
                    f" status says pid {entry['pid']}"
                )
        # Every process with the marker, workers included, belongs to a current engine.
        current = {entry["pid"] for entry in entries}
        for process in engine_processes(self.daemon.home):
            with_group = process_group(process.pid)
            if with_group is not None and with_group not in current:
                return (
                    f"pid {process.pid} (group {with_group}) carries the marker but belongs to"
                    f" no current engine (current leaders {sorted(current)})"
                )
        return None

    def run(self, operations: int) -> None:
        self.note(f"seed {self.seed}")
        since_kill = 0
        for _ in range(operations):
            operation = self.operation()
            response = operation()
            if response is not None and response.status_code >= 500:
                raise AssertionError(self.failure(f"server error {response.text}"))
            since_kill += 1
            if self.rng.random() < 0.35 or since_kill >= MAX_OPERATIONS_BETWEEN_KILLS:
                since_kill = 0
                self.kill_daemon()
                self.check_converged(f"after daemon kill {self.daemon_kills}")
        self.check_converged("at the end")


def marked_leaders(home: Path) -> dict[int, str]:
    """Live process-group leaders carrying this home's marker: pid -> engine id."""
    found = {}
    for process in engine_processes(home):
        try:
            # Read again: a process that exited since it was listed has no environment left.
            engine_id = process.environ().get("SAGELLM_ENGINE_ID")
            if engine_id is not None and os.getpgid(process.pid) == process.pid:
                found[process.pid] = engine_id
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def with_suppressed_lookup(function: Callable[..., Any], *args: Any) -> None:
    try:
        function(*args)
    except ProcessLookupError:
        pass


def test_seeded_fault_injection_converges_to_what_the_api_acknowledged(make_daemon):
    run = FaultRun(make_daemon(), FAULT_SEED)
    started = time.monotonic()
    run.run(FAULT_OPERATIONS)
    print(
        f"fault run seed={FAULT_SEED}: {len(run.steps)} steps, {run.daemon_kills} daemon kills,"
        f" {time.monotonic() - started:.0f}s"
    )
    assert run.daemon_kills >= 5, run.failure("too few daemon kills to mean anything")


# Found by the fault run with worker processes (seeds 4, 5, 9, 10 of 1-12 at the time):
# an engine's leader SIGKILLed just before the daemon was left its workers running.


def test_workers_of_an_engine_that_died_while_the_daemon_was_down_are_killed(
    make_daemon, tmp_path: Path
):
    daemon = make_daemon()
    record = tmp_path / "record.jsonl"
    spec = {
        "model": "fake/solo-1B",
        "env": {"FAKE_VLLM_FORK_CHILD": "1", "FAKE_VLLM_RECORD": str(record)},
    }
    assert daemon.put("/v1/engines/solo", spec).status_code == 201
    leader = daemon.wait_state("solo", "ready")["pid"]
    worker = json.loads(record.read_text().splitlines()[-1])["child_pid"]
    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    os.kill(leader, signal.SIGKILL)  # the leader only: its worker stays in the group
    daemon.start()
    daemon.wait_for(
        lambda: (e := daemon.engine("solo"))["state"] == "ready" and e["pid"] != leader,
        CONVERGE_S,
        "a new solo process",
    )
    daemon.wait_for(lambda: not alive(worker), 5, f"the old worker {worker} to be killed")


def test_seeded_fault_injection_with_engine_workers(make_daemon):
    # The same sequence as the test above (the seed decides it alone, workers or not); it
    # contains an engine killed while the daemon is down, which leaks that engine's worker.
    FaultRun(make_daemon(), FAULT_SEED, workers=True).run(FAULT_OPERATIONS)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.skipif(
    not os.environ.get("SAGELLM_FAULT_MORE"), reason="more seeds: set SAGELLM_FAULT_MORE=1"
)
@pytest.mark.parametrize("workers", [False, True])
@pytest.mark.parametrize("seed", range(1, 11))
def test_more_seeds(make_daemon, seed: int, workers: bool):
    FaultRun(make_daemon(), seed, workers=workers).run(FAULT_OPERATIONS)
