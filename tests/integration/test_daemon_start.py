"""`sagellmd` refuses bad start-up input with one line and exit code 2, before it creates
anything; a home or database it cannot write is said so, not a traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, Daemon, free_port

UNSHARE = shutil.which("unshare")


def run_sagellmd(
    *args: str, home: Path, prefix: list[str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SAGELLM_GPUS": "none"}
    env.pop("SAGELLM_HOME", None)
    env.pop("SAGELLM_LOG_LEVEL", None)
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "sagellmd.daemon", "--home", str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_refused(result: subprocess.CompletedProcess[str], needle: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sagellmd: error: "), lines
    assert needle in lines[0], lines
    assert "Traceback" not in result.stderr


def test_a_port_out_of_range_is_refused_before_the_home_is_made(tmp_path: Path):
    home = tmp_path / "home"
    result = run_sagellmd("--port", "80000", home=home)
    assert_refused(result, "--port: must be <= 65535, got 80000")
    assert not home.exists()


def test_an_unknown_preset_is_refused_before_the_home_is_made(tmp_path: Path):
    home = tmp_path / "home"
    result = run_sagellmd("--port", str(free_port()), "--preset", "minlm-cpu", home=home)
    assert_refused(result, "no preset named 'minlm-cpu'")
    assert "minilm-cpu" in result.stderr  # the known ones are listed
    assert not home.exists()


def test_a_port_in_use_is_refused_before_the_home_is_made(tmp_path: Path):
    home = tmp_path / "home"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_sagellmd("--port", str(port), home=home)
    assert_refused(result, f"cannot listen on 127.0.0.1:{port}")
    assert not home.exists()


def test_a_home_that_is_a_file_is_one_line(tmp_path: Path):
    home = tmp_path / "home"
    home.write_text("not a directory")
    result = run_sagellmd("--port", str(free_port()), home=home)
    assert_refused(result, str(home))


def _read_only_prefix(path: Path) -> list[str]:
    """Run the daemon in a mount namespace where `path` is a read-only bind mount.

    Root ignores file modes, so chmod proves nothing for it; a read-only mount refuses
    root's writes too (EROFS), as a read-only disk or a systemd ReadOnlyPaths= would.
    """
    if UNSHARE is None:
        pytest.skip("needs unshare(1) to make a read-only mount")
    probe = subprocess.run(
        [UNSHARE, "-m", "--propagation", "private", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.strip()}")
    script = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'
    return [UNSHARE, "-m", "--propagation", "private", "sh", "-c", script, str(path)]


def _prepared_home(make_daemon) -> Daemon:
    daemon: Daemon = make_daemon()
    assert daemon.put("/v1/engines/solo", {"model": "fake/solo-1B"}).status_code == 201
    assert daemon.stop() == 0
    return daemon


def _snapshot(home: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(home)): path.read_bytes()
        for path in sorted(home.rglob("*"))
        if path.is_file() and path.name != "daemon.log"
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="the read-only mount needs root")
def test_a_read_only_home_is_one_line_and_left_untouched(make_daemon):
    daemon = _prepared_home(make_daemon)
    before = _snapshot(daemon.home)
    result = run_sagellmd(
        "--port", str(free_port()), home=daemon.home, prefix=_read_only_prefix(daemon.home)
    )
    assert_refused(result, f"{daemon.home}: read-only")
    assert _snapshot(daemon.home) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="the read-only mount needs root")
def test_a_read_only_database_is_one_line_and_left_untouched(make_daemon):
    daemon = _prepared_home(make_daemon)
    database = daemon.home / "sagellm.db"
    before = _snapshot(daemon.home)
    result = run_sagellmd(
        "--port", str(free_port()), home=daemon.home, prefix=_read_only_prefix(database)
    )
    assert_refused(result, f"{database}: read-only")
    assert _snapshot(daemon.home) == before


def test_a_second_daemon_on_the_same_home_says_which_one_runs(daemon: Daemon):
    pid = daemon.get("/healthz").json()["pid"]
    for port in (daemon.port, free_port()):  # its port, then a free one
        result = run_sagellmd("--port", str(port), home=daemon.home)
        assert_refused(result, f"another sagellmd (pid {pid}) is already running")
    assert daemon.get("/healthz").status_code == 200


def test_a_malformed_flag_is_one_line(tmp_path: Path):
    home = tmp_path / "home"
    result = run_sagellmd("--port", "abc", home=home)
    assert_refused(result, "--port: invalid int value: 'abc'")
    assert not home.exists()
