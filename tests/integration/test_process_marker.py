"""An engine's processes are found by its env marker too: a `setsid()` grandchild goes
with its engine, and only with its own run of it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from tests.integration.conftest import Daemon


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def engine_with_grandchild(daemon: Daemon, engine_id: str, pid_file: Path) -> tuple[int, int]:
    spec = {"model": "fake/g-1B", "env": {"FAKE_VLLM_SETSID_CHILD": str(pid_file)}}
    assert daemon.put(f"/v1/engines/{engine_id}", spec).status_code in (200, 201)
    entry = daemon.wait_for(
        lambda: (
            (e := daemon.engine(engine_id))["state"] == "ready"
            and pid_file.exists()
            and pid_file.read_text().strip()
            and e
        ),
        20,
        f"{engine_id} ready with its grandchild",
    )
    grandchild = int(pid_file.read_text())
    assert alive(grandchild)
    assert os.getsid(grandchild) != os.getsid(entry["pid"])  # out of the group's reach
    assert psutil.Process(grandchild).environ()["SAGELLM_ENGINE_ID"] == engine_id
    return entry["pid"], grandchild


def test_a_setsid_grandchild_goes_when_its_engine_is_removed(daemon: Daemon, tmp_path: Path):
    _, grandchild = engine_with_grandchild(daemon, "g", tmp_path / "g.pid")
    assert daemon.delete("/v1/engines/g").status_code == 200
    daemon.wait_for(lambda: not alive(grandchild), 10, "the setsid grandchild to be gone")


def test_a_setsid_grandchild_goes_when_its_engine_crashes(daemon: Daemon, tmp_path: Path):
    leader, grandchild = engine_with_grandchild(daemon, "g", tmp_path / "g.pid")
    os.kill(leader, signal.SIGKILL)
    daemon.wait_for(lambda: not alive(grandchild), 10, "the crashed engine's grandchild gone")


def test_a_replacement_keeps_the_new_runs_grandchild(daemon: Daemon, tmp_path: Path):
    old_leader, old_child = engine_with_grandchild(daemon, "g", tmp_path / "old.pid")
    # Another env: another spec hash, so a new process replaces the old one.
    new_leader, new_child = engine_with_grandchild(daemon, "g", tmp_path / "new.pid")
    assert new_leader != old_leader
    daemon.wait_for(lambda: not alive(old_child), 10, "the old run's grandchild gone")
    assert alive(new_child) and daemon.engine("g")["pid"] == new_leader


def test_across_a_daemon_restart_the_grandchild_is_kept_then_stopped_with_its_engine(
    daemon: Daemon, tmp_path: Path
):
    leader, grandchild = engine_with_grandchild(daemon, "g", tmp_path / "g.pid")
    assert daemon.stop() == 0  # engines are left running
    daemon.start()
    daemon.wait_for(
        lambda: any(e["type"] == "adopted" for e in daemon.events("g")), 10, "g adopted"
    )
    assert daemon.engine("g")["pid"] == leader
    assert alive(grandchild), "recovery killed a live engine's grandchild as a stray"
    assert daemon.delete("/v1/engines/g").status_code == 200
    daemon.wait_for(lambda: not alive(grandchild), 10, "the grandchild gone after the restart")


def test_a_grandchild_whose_engine_died_with_the_daemon_away_is_stopped(
    daemon: Daemon, tmp_path: Path
):
    leader, grandchild = engine_with_grandchild(daemon, "g", tmp_path / "g.pid")
    daemon.stop()
    os.kill(leader, signal.SIGKILL)
    daemon.start()
    daemon.wait_for(lambda: not alive(grandchild), 10, "the dead engine's grandchild gone")
