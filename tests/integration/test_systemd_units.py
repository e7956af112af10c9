"""The shipped systemd units pass `systemd-analyze verify`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = [ROOT / "systemd" / "sagellmd.service", ROOT / "systemd" / "user" / "sagellmd.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: str(p.relative_to(ROOT)))
def test_unit_verifies(unit: Path, tmp_path: Path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package: systemd)")
    sagellmd = Path(sys.executable).with_name("sagellmd")
    assert sagellmd.exists()
    text = unit.read_text()
    # verify checks that ExecStart exists; point it at this checkout's sagellmd.
    text = re.sub(r"^ExecStart=.*$", f"ExecStart={sagellmd}", text, flags=re.M)
    copy = tmp_path / "sagellmd.service"
    copy.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sagellmd.service" not in result.stdout + result.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: str(p.relative_to(ROOT)))
def test_unit_keeps_engines_alive_across_daemon_restarts(unit: Path):
    text = unit.read_text()
    for line in ("Type=notify", "KillMode=process", "Restart=on-failure", "WatchdogSec="):
        assert line in text
