"""The `sagellm` CLI without a daemon: local preset commands, exit codes, pure pieces.

Everything that needs a daemon runs against a real one in tests/integration/test_cli.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sagellmd.cli.app import app
from sagellmd.cli.engine_commands import slug
from sagellmd.cli.waiting import Progress, Rollout, judge

REPO = Path(__file__).resolve().parents[2]

GOOD_PRESET = """\
version: 1
name: tiny
description: one embedding engine
engines:
  - name: embed
    kind: embedding
    model: some/model
"""

BAD_PRESET = """\
version: 1
name: tiny
engines:
  - name: chat
    model: some/model
    tensor_parallel: 0
"""


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A URL on a port that is bound (so nobody else takes it) but never accepts."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def env(tmp_path: Path, dead_url: str) -> dict[str, str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SAGELLM_TOKEN", "STATE_DIRECTORY", "SAGELLM_CONFIG")
    }
    environ["SAGELLM_HOME"] = str(tmp_path / "home")
    environ["SAGELLM_URL"] = dead_url
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environ.get("PYTHONPATH")]))
    environ["COLUMNS"] = "200"
    return environ


def sagellm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sagellmd.cli.app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )


# --- the real CLI as a subprocess, no daemon ------------------------------------------


def test_preset_list_shows_builtins_without_daemon(env):
    result = sagellm(env, "preset", "list")
    assert result.returncode == 0, result.stderr
    for name in ("minilm-cpu", "qwen-mini", "qwen-plus-embeddings"):
        assert name in result.stdout
    assert "ACTIVE" not in result.stdout


def test_preset_list_json(env):
    result = sagellm(env, "preset", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["presets"]}
    assert rows["qwen-mini"]["engines"] == ["chat", "embed"]
    assert rows["minilm-cpu"]["source"] == "builtin"
    assert rows["minilm-cpu"]["active"] is None


def test_preset_show_fills_defaults(env):
    result = sagellm(env, "preset", "show", "minilm-cpu")
    assert result.returncode == 0, result.stderr
    assert "name: minilm-cpu" in result.stdout
    assert "runtime: embedding" in result.stdout
    assert "restart: always" in result.stdout
    shown = json.loads(sagellm(env, "preset", "show", "minilm-cpu", "--json").stdout)
    assert shown["engines"][0]["startup_timeout_s"] == 180.0


def test_preset_show_unknown_is_bad_input(env):
    result = sagellm(env, "preset", "show", "nope")
    assert result.returncode == 2
    assert "minilm-cpu" in result.stderr


def test_validate_good_file(env, tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_PRESET)
    result = sagellm(env, "preset", "validate", "--file", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: tiny (1 engine)"


def test_validate_bad_file_names_the_field(env, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_PRESET)
    result = sagellm(env, "preset", "validate", "--file", str(path))
    assert result.returncode == 2
    assert "engines[0].tensor_parallel" in result.stderr
    assert all(line.startswith("error: ") for line in result.stderr.splitlines())


def test_validate_builtin_by_name(env):
    result = sagellm(env, "preset", "validate", "qwen-plus-embeddings")
    assert result.returncode == 0, result.stderr
    assert "ok: qwen-plus-embeddings (2 engines)" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("engine", "list"),
        ("preset", "set", "minilm-cpu"),
        ("events",),
    ],
)
def test_no_daemon_exits_3_and_says_how_to_start_it(env, args):
    result = sagellm(env, *args)
    assert result.returncode == 3, result.stderr
    assert "sagellmd" in result.stderr
    assert env["SAGELLM_URL"] in result.stderr


def test_url_option_overrides_environment(env, dead_url):
    env = {**env, "SAGELLM_URL": "http://127.0.0.1:1"}
    result = sagellm(env, "--url", dead_url, "status")
    assert result.returncode == 3
    assert dead_url in result.stderr


def test_set_with_bad_file_fails_before_contacting_the_daemon(env, tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    try:
        env = {**env, "SAGELLM_URL": f"http://127.0.0.1:{listener.getsockname()[1]}"}
        path = tmp_path / "bad.yaml"
        path.write_text(BAD_PRESET)
        result = sagellm(env, "preset", "set", "x", "--file", str(path))
        assert result.returncode == 2
        assert "engines[0].tensor_parallel" in result.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_set_name_must_match_the_file(env, tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_PRESET)
    result = sagellm(env, "preset", "set", "other", "--file", str(path))
    assert result.returncode == 2
    assert "'other'" in result.stderr and "'tiny'" in result.stderr


def test_engine_start_bad_env_is_bad_input(env):
    result = sagellm(env, "engine", "start", "m", "--env", "NOEQUALS")
    assert result.returncode == 2
    assert "--env" in result.stderr


def test_usage_error_exits_2():
    # In-process: a usage error never reaches the daemon, so no subprocess is needed.
    assert CliRunner().invoke(app, ["engine", "start", "m", "--kind", "gpu"]).exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ["gpu"],
        ["history"],
        ["rollback"],
        ["model", "list"],
        ["status", "--watch"],
        ["preset", "set", "minilm-cpu", "--dry-run"],
        ["preset", "set", "minilm-cpu", "--no-rollback"],
    ],
)
def test_later_commands_are_absent(args):
    assert CliRunner().invoke(app, args).exit_code == 2


# --- pure pieces ----------------------------------------------------------------------


def test_slug_from_model():
    assert slug("Qwen/Qwen2.5-7B-Instruct") == "qwen2-5-7b-instruct"
    assert slug("/models/My_Model/") == "my-model"
    assert len(slug("x" * 100)) == 63


def test_judge_waits_for_a_fresh_ready_of_restarted_engines():
    rollout = Rollout.from_answer(
        "p",
        {
            "generation": 5,
            "plan": [{"action": "replace", "engine": "p.a"}, {"action": "keep", "engine": "p.b"}],
        },
    )
    status = {
        "generation": 5,
        "presets": ["p"],
        "engines": [
            {"id": "p.a", "preset": "p", "state": "ready"},
            {"id": "p.b", "preset": "p", "state": "ready"},
        ],
    }
    # p.a still shows the old instance's `ready` until the loop replaces it.
    assert not judge(rollout, status, Progress()).done
    assert judge(rollout, status, Progress(ready_seen={"p.a"})).ok


def test_judge_fails_when_the_preset_is_gone_at_a_newer_generation():
    rollout = Rollout("p", 5, frozenset())
    verdict = judge(rollout, {"generation": 6, "presets": [], "engines": []}, Progress())
    assert verdict.done and not verdict.ok and "no longer active" in verdict.reason
