"""Engine env values stay private: file modes, unauthenticated reads, events and logs."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path
from typing import Any

from tests.integration.conftest import Daemon

SECRET = "hf_s3cr3tTOKENvalue1234567890"
ENGINE = {"model": "fake/secret-1B", "env": {"HF_TOKEN": SECRET, "PLAIN": "visible-to-owner"}}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def started_in_a_new_home(make_daemon, tmp_path: Path) -> Daemon:
    """A daemon whose home does not exist yet: it creates every file itself."""
    daemon = make_daemon(start=False, home=tmp_path / "parent" / "home")
    config = tmp_path / "config.yaml"
    shutil.move(daemon.home / "config.yaml", config)
    shutil.rmtree(daemon.home)
    daemon.extra_env["SAGELLM_CONFIG"] = str(config)
    daemon.log_path = tmp_path / "daemon.log"
    daemon.start()
    return daemon


def test_the_home_the_database_and_the_logs_are_private(make_daemon, tmp_path: Path) -> None:
    daemon = started_in_a_new_home(make_daemon, tmp_path)
    assert daemon.put("/v1/engines/s", ENGINE).status_code == 201
    daemon.wait_state("s", "ready")
    home = daemon.home
    assert mode(home) == 0o700
    assert mode(home / "logs") == 0o700
    for name in ("sagellm.db", "sagellm.db-wal", "sagellm.db-shm", "token", "logs/s.log"):
        assert (home / name).exists(), name
        assert mode(home / name) == 0o600, f"{name}: {oct(mode(home / name))}"
    # The secret is in the WAL (it is the desired state); only the owner can read it.
    assert any(
        SECRET.encode() in (home / name).read_bytes() for name in ("sagellm.db", "sagellm.db-wal")
    )


def test_an_existing_world_readable_database_is_made_private(make_daemon) -> None:
    daemon = make_daemon()
    daemon.stop()
    for name in ("sagellm.db", "sagellm.db-wal", "sagellm.db-shm"):
        if (daemon.home / name).exists():
            (daemon.home / name).chmod(0o644)
    daemon.start()
    daemon.put("/v1/engines/s", ENGINE)
    for name in ("sagellm.db", "sagellm.db-wal", "sagellm.db-shm"):
        assert mode(daemon.home / name) == 0o600, name


def reads(daemon: Daemon, **kwargs: Any) -> dict[str, str]:
    generation = daemon.get("/v1/status").json()["generation"]
    paths = [
        "/v1/status",
        "/v1/engines",
        "/v1/engines/s",
        "/v1/engines/p.e",
        "/v1/generations",
        f"/v1/generations/{generation}",
        "/v1/presets",
        "/v1/presets/p",
        "/v1/management/status",
    ]
    answers = {}
    for path in paths:
        response = daemon.get(path, **kwargs)
        assert response.status_code == 200, (path, response.text)
        answers[path] = response.text
    return answers


def test_env_values_go_only_to_requests_with_the_token(daemon: Daemon) -> None:
    assert daemon.put("/v1/engines/s", ENGINE).status_code == 201
    preset = {
        "version": 1,
        "name": "p",
        "engines": [{"name": "e", "kind": "llm", "model": "fake/p-1B", "env": {"API_KEY": SECRET}}],
    }
    assert daemon.put("/v1/presets/p", preset).status_code == 200
    daemon.wait_state("s", "ready")
    for path, text in reads(daemon).items():
        assert SECRET not in text, path
        assert "visible-to-owner" not in text, path
    anonymous = daemon.engine("s")["spec"]["env"]
    assert set(anonymous) == {"HF_TOKEN", "PLAIN"}  # the keys stay visible
    assert "hidden" in anonymous["HF_TOKEN"]
    for path, text in reads(daemon, headers=daemon.auth()).items():
        if path not in ("/v1/presets", "/v1/engines/p.e"):
            assert SECRET in text, path
    owner = daemon.get("/v1/engines/s", headers=daemon.auth()).json()["spec"]["env"]
    assert owner == ENGINE["env"]
    # Never in events or the daemon's log (which runs at debug level here).
    events = daemon.get("/v1/events", params={"limit": 1000}).text
    assert SECRET not in events
    daemon.delete("/v1/engines/s")
    daemon.wait_for(lambda: daemon.get("/v1/engines/s").status_code == 404, 15, "s removed")
    assert SECRET not in daemon.log()
    assert SECRET not in daemon.get("/v1/events", params={"limit": 1000}).text
