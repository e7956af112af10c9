"""README.md and `sagellmd --help` tell a new user the truth: commands, defaults, switches."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def _sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_the_first_two_commands_are_unchanged_and_ci_runs_the_second():
    blocks = _sh_blocks(README)
    first, second = blocks[0].strip(), blocks[1].strip()
    assert first.endswith("SAGELLM_HOME=$PWD/.sagellm .venv/bin/sagellmd --preset minilm-cpu")
    assert first.startswith("python3 -m venv .venv && ")
    assert second in (REPO / ".ci" / "run").read_text()


def test_readme_says_how_to_start_the_daemon_again_without_reinstalling():
    commands = [line.split("#")[0].strip() for b in _sh_blocks(README) for line in b.splitlines()]
    assert "SAGELLM_HOME=$PWD/.sagellm .venv/bin/sagellmd" in commands
    assert "without reinstalling" in README


def test_readme_says_the_suite_starts_a_private_systemd_and_how_to_skip_it():
    assert "PID 1" in README and "SAGELLM_SKIP_SYSTEMD_TESTS=1" in README


def test_the_systemd_test_has_an_environment_switch(monkeypatch: pytest.MonkeyPatch):
    # Only the prerequisite check is called: nothing of systemd is started here.
    from tests.integration.test_systemd_e2e import missing_prerequisite

    monkeypatch.setenv("SAGELLM_SKIP_SYSTEMD_TESTS", "1")
    reason = missing_prerequisite()
    assert reason is not None and "SAGELLM_SKIP_SYSTEMD_TESTS" in reason


def test_sagellmd_help_gives_the_real_home_default(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("SAGELLM_HOME", "STATE_DIRECTORY")}
    env.update({"HOME": str(tmp_path), "COLUMNS": "300", "PYTHONPATH": str(REPO)})
    result = subprocess.run(
        [sys.executable, "-m", "sagellmd.daemon", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())
    assert "~/.local/share/sagellm" in help_text
    assert f"now {tmp_path / '.local' / 'share' / 'sagellm'}" in help_text
    assert "(default: $SAGELLM_HOME)" not in help_text
