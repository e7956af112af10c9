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
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from sagellmd.cli.app import app
from sagellmd.cli.changes import ChangeOptions
from sagellmd.cli.generation_commands import generation_state, history_table
from sagellmd.cli.gpu_commands import device_name, gpu_table, gpu_title
from sagellmd.cli.render import plan_lines
from sagellmd.cli.waiting import (
    ROLLBACK_GRACE_S,
    EngineRow,
    Outcome,
    Window,
    changed_rows,
    engine_row,
    engine_rows,
    judge,
    outcome_lines,
    reverted_engines,
    watched_engines,
)
from sagellmd.spec import name_from_model

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
        ("preset", "set", "minilm-cpu", "--dry-run"),
        ("events",),
        ("history",),
        ("rollback", "2"),
        ("gpu",),
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


def test_rollback_to_a_negative_generation_is_a_usage_error():
    assert CliRunner().invoke(app, ["rollback", "--", "-1"]).exit_code == 2


def test_status_offers_watch_and_the_app_shell_completion():
    # The watch itself runs against a real daemon in tests/integration/test_watch.py.
    status_help = CliRunner().invoke(app, ["status", "--help"], env={"COLUMNS": "200"})
    assert status_help.exit_code == 0 and "--watch" in status_help.output
    root_help = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert "--install-completion" in root_help.output
    assert "--show-completion" in root_help.output


# --- pure pieces ----------------------------------------------------------------------


def test_engine_name_from_model():
    assert name_from_model("Qwen/Qwen2.5-7B-Instruct") == "qwen2-5-7b-instruct"
    assert name_from_model("/models/My_Model/") == "my-model"
    assert len(name_from_model("x" * 100)) == 63


def test_change_options_become_query_parameters():
    assert ChangeOptions().params() == {}
    assert ChangeOptions(dry_run=True, rollback=False).params() == {
        "dry_run": "true",
        "rollback": "false",
    }


def test_plan_lines_show_gpu_placement_of_starts_and_say_a_dry_run_changed_nothing():
    answer = {
        "dry_run": True,
        "generation": 4,
        "plan": [
            {"action": "replace", "engine": "p.a", "reason": "spec changed"},
            {
                "action": "start",
                "engine": "p.b",
                "reason": "new",
                "gpus": [0, 1],
                "gpu_bytes": 3 << 30,
            },
            {"action": "start", "engine": "p.e", "reason": "new", "gpus": [], "gpu_bytes": 0},
            {"action": "stop", "engine": "p.c", "reason": "no longer desired"},
        ],
    }
    lines = plan_lines(answer)
    assert lines[0].startswith("dry run: nothing was changed (the daemon stays at generation 4)")
    assert lines[1] == "  replace   p.a  (spec changed)"
    assert lines[2] == "  start     p.b  (new)  GPU0+GPU1 x 3.0 GiB"
    assert lines[3] == "  start     p.e  (new)  no GPU"
    assert lines[4] == "  stop      p.c  (no longer desired)"
    assert plan_lines({"generation": 5, "plan": []}) == [
        "generation 5",
        "  nothing to do: the engines already match",
    ]


STATUS = {
    "generation": 7,
    "engines": [
        {
            "id": "p.a",
            "state": "ready",
            "pid": 10,
            "port": 20000,
            "gpus": [0],
            "restarts": 1,
            "message": "healthy",
            "desired": True,
            "spec_hash": "h1",
            "running_spec_hash": "h1",
        },
        # Still the old process: ready, but not with the spec the generation wants.
        {"id": "p.b", "state": "ready", "spec_hash": "new", "running_spec_hash": "old"},
        {"id": "p.c", "state": "stopping", "desired": False, "pid": 12},
    ],
}


def test_engine_rows_settle_only_when_ready_with_the_wanted_spec_or_gone():
    rows = engine_rows(STATUS, ["p.a", "p.b", "p.c", "p.gone"])
    assert [row.settled for row in rows] == [True, False, False, True]
    assert rows[0] == EngineRow("p.a", "ready", 10, 20000, (0,), 1, "healthy", True)
    assert rows[3].state == "removed"
    assert rows[0].line() == "p.a  ready  pid 10  port 20000  gpus 0  restarts 1  healthy"
    assert rows[3].line() == "p.gone  removed"
    assert engine_row("x", {"state": "starting", "pid": True}).pid is None


def test_watched_engines_are_the_generations_then_those_the_plan_removes():
    record = {"engines": [{"id": "p.a"}, {"id": "solo"}]}
    plan = [{"action": "start", "engine": "p.a"}, {"action": "stop", "engine": "p.c"}]
    assert watched_engines(record, plan) == ["p.a", "solo", "p.c"]


def test_changed_rows_are_those_not_shown_yet():
    a, b = EngineRow("a", "starting"), EngineRow("b", "ready", settled=True)
    assert changed_rows({}, [a, b]) == [a, b]
    assert changed_rows({"a": a, "b": b}, [a, EngineRow("b", "stopping")]) == [
        EngineRow("b", "stopping")
    ]


HISTORY = [
    {
        "id": 5,
        "cause": "rollback of 4: p.b not ready",
        "healthy": None,
        "changes": [{"engine": "p.b"}],
    },
    {"id": 4, "cause": "preset set p", "healthy": False, "verdict": "p.b not ready"},
    {"id": 3, "cause": "preset set q", "healthy": None},
    {"id": 2, "cause": "preset set p", "healthy": True},
    {"id": 1, "cause": "engine put x", "healthy": False},
]
WINDOW = Window(started=100.0, timeout_s=30.0)
ROWS = [EngineRow("p.a", "ready", settled=True), EngineRow("p.b", "starting", message="probe")]


def test_judge_healthy():
    record = {
        "id": 4,
        "healthy": True,
        "verdict": "all engines ready",
        "engines": [{"id": "p.a"}, {"id": "p.b"}],
    }
    outcome = judge(record, [], ROWS, WINDOW, 101.0)
    assert outcome == Outcome(True, True, "generation 4 is healthy: all engines ready")


def test_judge_healthy_waits_for_the_engines_the_change_removes():
    record = {"id": 5, "healthy": True, "verdict": "all engines ready", "engines": []}
    stopping = [EngineRow("p.a", "stopping")]
    outcome = judge(record, [], stopping, WINDOW, 101.0)
    assert not outcome.done
    assert outcome.reason == (
        "generation 5 is healthy: all engines ready; waiting for: p.a stopping"
    )
    gone = [EngineRow("p.a", "removed", settled=True)]
    outcome = judge(record, [], gone, WINDOW, 102.0)
    assert outcome.done and outcome.ok and outcome.removal_only
    assert outcome.reason == "generation 5 is healthy: all engines ready; p.a stopped"
    late = judge(record, [], stopping, WINDOW, 131.0)
    assert late.done and not late.ok and late.timed_out
    assert "still waiting for: p.a stopping" in late.reason


def test_judge_rolling_out_names_what_it_waits_for():
    outcome = judge({"id": 4, "healthy": None}, [], ROWS, WINDOW, 101.0)
    assert not outcome.done
    assert outcome.reason == "rolling out; waiting for: p.b starting (probe)"


def test_judge_times_out_with_the_engines_not_ready():
    outcome = judge({"id": 4, "healthy": None}, [], ROWS, WINDOW, 130.0)
    assert outcome.done and not outcome.ok and outcome.timed_out
    assert outcome.reason == "timed out after 30 s; waiting for: p.b starting (probe)"
    assert "goes on in the daemon" in outcome_lines(outcome)[0]


def test_judge_failed_and_rolled_back_names_the_rollback_and_what_it_restored():
    record = HISTORY[1] | {"auto_rollback": True}
    outcome = judge(record, HISTORY, ROWS, WINDOW, 101.0, failed_seen_at=101.0)
    assert outcome.done and not outcome.ok
    assert outcome.reason == "generation 4 failed: p.b not ready"
    assert (outcome.rollback, outcome.reverted) == (5, ("p.b",))
    assert outcome_lines(outcome) == [
        "the daemon rolled it back: generation 5 undoes this change (p.b); changes made since stay"
    ]


def test_judge_failed_waits_briefly_for_the_rollback_generation():
    record = {"id": 4, "healthy": False, "verdict": "p.b failed", "auto_rollback": True}
    waiting = judge(record, HISTORY[1:], ROWS, WINDOW, 101.0, failed_seen_at=101.0)
    assert not waiting.done and "waiting for the daemon's rollback" in waiting.reason
    late = 101.0 + ROLLBACK_GRACE_S
    outcome = judge(record, HISTORY[1:], ROWS, WINDOW, late, failed_seen_at=101.0)
    assert outcome.done and "made no rollback generation" in outcome.reason


def test_judge_failed_with_rollback_off_is_kept():
    record = {"id": 4, "healthy": False, "verdict": "p.b failed", "auto_rollback": False}
    outcome = judge(record, HISTORY[1:], ROWS, WINDOW, 101.0, failed_seen_at=101.0)
    assert outcome.done and outcome.kept and outcome.rollback is None
    assert outcome_lines(outcome, "--no-rollback") == [
        "the failed state is kept as it is (--no-rollback); `sagellm rollback` undoes it"
    ]


def test_judge_superseded_once_the_daemon_says_so_not_because_newer_ones_exist():
    record = {"id": 4, "healthy": None, "state": "rolling out"}
    assert not judge(record, [], ROWS, WINDOW, 101.0).done  # newer generations do not matter
    superseded = record | {
        "state": "superseded",
        "verdict": "superseded by generation 5 before it was judged",
    }
    outcome = judge(superseded, [], ROWS, WINDOW, 101.0)
    assert outcome.done and not outcome.ok
    assert outcome.reason == "generation 4 was superseded by generation 5 before it was judged"


def test_reverted_engines_are_the_changes_of_the_rollback_generation():
    assert reverted_engines(HISTORY[0]) == ["p.b"]
    assert reverted_engines({"id": 3}) == []
    rolled = Outcome(True, reason="x", rollback=3)
    assert outcome_lines(rolled) == [
        "the daemon rolled it back: generation 3 undoes this change; changes made since stay"
    ]


def render(renderable: object) -> str:
    out = Console(width=200, record=True, highlight=False, color_system=None)
    out.print(renderable)
    return out.export_text()


def test_history_marks_the_current_generation_and_the_state_of_each():
    assert generation_state({"healthy": None}, current=True) == "rolling out"
    assert generation_state({"healthy": None}, current=False) == "superseded"
    assert generation_state({"healthy": None, "state": "rolling out"}, current=False) == (
        "rolling out"
    )
    records = [
        {
            "id": 2,
            "ts": "2026-01-02T03:04:05.000000Z",
            "cause": "rollback of 1: x",
            "healthy": True,
            "verdict": "all engines ready",
            "engines": [{"id": "a"}, {"id": "b"}],
        },
        {
            "id": 1,
            "ts": "2026-01-02T03:04:00.000000Z",
            "cause": "preset set p",
            "healthy": False,
            "verdict": "x",
            "engines": [{"id": "a"}],
        },
    ]
    text = render(history_table(records, current=2))
    lines = text.splitlines()
    assert lines[0].split() == ["GEN", "TIME", "CAUSE", "STATE", "VERDICT", "ENGINES"]
    assert lines[1].startswith("* 2 ") and "rollback of 1: x" in lines[1]
    assert "healthy" in lines[1] and lines[1].rstrip().endswith("2")
    assert lines[2].startswith("  1 ") and "failed" in lines[2]


GPUS = {
    "mode": "simulated",
    "simulated": True,
    "message": "simulated GPUs: GPU0 80 GiB",
    "headroom": 0.95,
    "devices": [
        {
            "index": 0,
            "name": "simulated 80 GiB",
            "simulated": True,
            "total_gb": 80.0,
            "used_gb": 0.0,
            "free_gb": 80.0,
            "reserved_gb": 6.86,
            "reservations": [{"engine": "p.a", "gb": 6.86}],
            "foreign_gb": 1.5,
            "available_gb": 67.64,
        },
    ],
}


def test_gpu_table_shows_reservations_and_the_simulated_label():
    text = render(gpu_table(GPUS))
    assert "simulated GPUs" in text.splitlines()[0]
    row = next(line for line in text.splitlines() if line.lstrip().startswith("0 "))
    for part in ("80.0 GiB", "6.9 GiB", "p.a 6.9 GiB", "1.5 GiB", "67.6 GiB"):
        assert part in row
    # A label is added wherever the daemon's own text does not already say it.
    assert gpu_title({"simulated": True, "message": "two GPUs"}) == "two GPUs (simulated)"
    assert device_name({"name": "A100", "simulated": True}) == "A100 (simulated)"
    assert device_name({"name": "A100", "simulated": False}) == "A100"


# --- item 21 of issue 11: version, help, argument errors, completion ---------------------


def test_version_prints_the_package_version(env):
    from sagellmd import __version__

    result = sagellm(env, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sagellm {__version__}"


def _command_paths(command: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths += _command_paths(sub, (*prefix, name))
    return paths


def test_no_help_screen_shows_a_bool_placeholder():
    import typer.main

    paths = _command_paths(typer.main.get_command(app))
    assert ("engine", "start") in paths and ("preset", "apply") in paths
    for path in paths:
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert "<bool>" not in result.output, (path, result.output)
        assert "[[" not in result.output, (path, result.output)
    # Flags still say what they do; options that take a value still show it.
    start = CliRunner().invoke(app, ["engine", "start", "--help"], env={"COLUMNS": "200"})
    assert "--dry-run" in start.output and "K=V" in start.output


def test_preset_apply_help_mentions_no_wait_flag_it_lacks():
    result = CliRunner().invoke(app, ["preset", "apply", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--wait" not in result.output
    assert "--timeout" in result.output


def test_an_engine_argument_with_a_value_says_to_repeat_arg(env):
    result = sagellm(env, "engine", "start", "m", "--arg", "--max-batch-size", "8")
    assert result.returncode == 2, result.stderr
    assert "unexpected extra argument" not in result.stderr.lower()
    assert "repeat --arg once per argv word" in result.stderr
    assert "--arg=--max-batch-size=8" in result.stderr
    assert "--arg --max-batch-size --arg 8" in result.stderr


def test_arg_with_an_equals_sign_is_one_argv_word(env):
    # Parsed without complaint: it fails only on the daemon being unreachable.
    result = sagellm(env, "engine", "start", "m", "--arg=--max-batch-size=8", "--arg", "--x=1")
    assert result.returncode == 3, result.stderr


def _complete(env: dict[str, str], words: str) -> list[str]:
    """What bash completion offers for the last word of `words` (Typer's protocol)."""
    parts = words.split(" ")
    result = subprocess.run(
        [sys.executable, "-m", "sagellmd.cli.app"],
        env={
            **env,
            "_SAGELLM_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(parts) - 1),
        },
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return result.stdout.split()


def test_completion_without_a_daemon_is_quiet_and_offers_local_presets(env):
    assert _complete(env, "sagellm engine stop ") == []
    assert _complete(env, "sagellm engine logs ") == []
    assert _complete(env, "sagellm preset unset ") == []
    offered = _complete(env, "sagellm preset set minilm")
    assert offered and all(name.startswith("minilm") for name in offered)
    assert "minilm-cpu" in offered
