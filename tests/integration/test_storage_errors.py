"""A full disk: the API answers JSON 503 naming it, and the loop catches up soon after."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Daemon


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of our own, unmounted (lazily, in case of a leftover) at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 16, 512, 1):  # big blocks, then the last few bytes
            with contextlib.suppress(OSError):
                while handle.write(b"\0" * size):
                    pass
    with pytest.raises(OSError) as raised:
        (disk / "probe").write_bytes(b"x" * 4096)
    assert raised.value.errno == errno.ENOSPC
    return filler


def test_full_disk_answers_503_and_a_crash_restarts_soon_after_space_returns(
    small_disk: Path, make_daemon
) -> None:
    daemon: Daemon = make_daemon(start=False, home=small_disk / "home")
    daemon.log_path = small_disk.parent / "daemon.log"  # off the disk we fill
    daemon.start()
    daemon.put("/v1/engines/a", {"model": "fake/a-1B"})
    first = daemon.wait_state("a", "ready")
    filler = fill(small_disk)

    response = daemon.put("/v1/engines/b", {"model": "fake/b-1B"})
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "storage_unavailable"
    assert str(small_disk) in error["message"]
    assert "sagellm.db" in error["message"]
    assert "full" in error["message"]
    assert error["details"]["path"].endswith("sagellm.db")

    os.kill(first["pid"], signal.SIGKILL)
    time.sleep(2.0)  # the exit is seen; recording it fails while the disk is full
    filler.unlink()
    freed = time.monotonic()
    again = daemon.wait_for(
        lambda: (e := daemon.engine("a"))["state"] == "ready" and e["pid"] != first["pid"] and e,
        15,
        "a restarted after the disk has room again",
    )
    took = time.monotonic() - freed
    assert took < 8, f"restarted {took:.1f}s after space was freed"
    assert again["pid"]
    # The exit seen while the disk was full was recorded once there was room, in order.
    types = [(e["type"], e["message"]) for e in daemon.events("a")]
    exited = next(i for i, (t, m) in enumerate(types) if t == "exited" and "signal 9" in m)
    assert types[exited + 1][0] == "backoff"
    assert any(t == "restarting" for t, _ in types[exited:])
    # The change refused with 503 was not committed.
    assert daemon.get("/v1/engines/b").status_code == 404
    assert daemon.put("/v1/engines/b", {"model": "fake/b-1B"}).status_code == 201
