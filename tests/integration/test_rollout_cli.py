"""Dry runs, `--wait` with the daemon's automatic rollback, history, rollback and gpu, all
through the `sagellm` CLI as a subprocess against a real sagellmd (stand-in engines,
`gpus: simulate:2x80`)."""

from __future__ import annotations

import json
import os
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from tests.integration.conftest import Daemon, engine_processes, fake_preset
from tests.integration.test_cli import engines_by_id, ok, run, status_json, write_preset

# Never healthy: /health answers 500 for as long as the process lives.
SICK = {"FAKE_VLLM_HEALTH": "fail"}


def rows(daemon: Daemon) -> dict[str, list[tuple[Any, ...]]]:
    """The desired-state rows of the database file (what a dry run must leave alone)."""
    with sqlite3.connect(daemon.home / "sagellm.db") as connection:
        return {
            table: connection.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("active_presets", "desired_engines", "generations")
        }


def engine_pids(daemon: Daemon) -> list[int]:
    return sorted(process.pid for process in engine_processes(daemon.home))


def generation(daemon: Daemon, number: int) -> dict[str, Any]:
    return daemon.get(f"/v1/generations/{number}").json()


def healthy(daemon: Daemon, number: int) -> None:
    daemon.wait_for(lambda: generation(daemon, number)["healthy"] is True, 20, f"gen {number}")


def specs(engines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {engine["id"]: engine["spec"] for engine in engines}


def test_dry_runs_print_the_plan_and_change_nothing(daemon: Daemon, tmp_path: Path):
    path = write_preset(tmp_path, fake_preset("p", {"name": "a"}))
    before = rows(daemon)

    out = ok(daemon, "preset", "set", "p", "--file", str(path), "--dry-run")
    assert out.splitlines()[0] == (
        "dry run: nothing was changed (the daemon stays at generation 0); the plan would be:"
    )
    # Starts carry their GPU placement: one simulated GPU, the stand-in 1B model's estimate.
    assert out.splitlines()[1].split()[:3] == ["start", "p.a", "(new"]
    assert "GPU0 x " in out.splitlines()[1] and " GiB" in out.splitlines()[1]
    time.sleep(0.5)  # long enough for a reconcile pass to have started something, had it
    assert status_json(daemon)["generation"] == 0
    assert not engine_processes(daemon.home)
    assert rows(daemon) == before

    ok(daemon, "preset", "set", "p", "--file", str(path), "--wait", "--timeout", "30")
    pids, before = engine_pids(daemon), rows(daemon)
    changed = fake_preset("p", {"name": "a", "model": "fake/other-1B"}, {"name": "b"})
    out = ok(
        daemon, "preset", "set", "p", "--file", str(write_preset(tmp_path, changed)), "--dry-run"
    )
    assert "stays at generation 1" in out
    assert any(line.split()[:2] == ["surge", "p.a"] for line in out.splitlines()), out
    assert any(line.split()[:2] == ["start", "p.b"] for line in out.splitlines()), out
    out = ok(daemon, "preset", "unset", "p", "--dry-run")
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [["stop", "p.a"]]
    out = ok(daemon, "engine", "start", "fake/x-1B", "--name", "x", "--dry-run")
    assert out.splitlines()[:2] == ["engine x", out.splitlines()[1]]
    assert out.splitlines()[2].split()[:2] == ["start", "x"]
    out = ok(daemon, "rollback", "0", "--dry-run")
    assert out.splitlines()[0] == "restoring generation 0"
    assert out.splitlines()[2].split()[:2] == ["stop", "p.a"]

    time.sleep(0.5)
    assert status_json(daemon)["generation"] == 1
    assert engine_pids(daemon) == pids
    assert rows(daemon) == before


def test_set_wait_of_a_good_preset_exits_0_once_healthy(daemon: Daemon, tmp_path: Path):
    path = write_preset(
        tmp_path,
        fake_preset("p", {"name": "a", "env": {"FAKE_VLLM_STARTUP_DELAY": "1"}}, {"name": "b"}),
    )
    out = ok(daemon, "preset", "set", "p", "--file", str(path), "--wait", "--timeout", "30")
    assert out.splitlines()[-1] == "ready: generation 1 is healthy: p.a, p.b ready"
    assert generation(daemon, 1)["healthy"] is True
    engines = engines_by_id(status_json(daemon))
    assert {e["state"] for e in engines.values()} == {"ready"}
    # Not a terminal: one plain line per engine change, the last with the serving process.
    for engine_id in ("p.a", "p.b"):
        assert f"  {engine_id}  starting  pid " in out
        assert f"  {engine_id}  ready  pid {engines[engine_id]['pid']}  port " in out


def test_set_wait_of_a_failing_change_is_rolled_back_by_the_daemon(daemon: Daemon, tmp_path: Path):
    good = write_preset(tmp_path, fake_preset("p", {"name": "a"}, {"name": "b"}), "good.yaml")
    ok(daemon, "preset", "set", "p", "--file", str(good), "--wait", "--timeout", "30")
    first = engines_by_id(status_json(daemon))

    bad = fake_preset(
        "p",
        {"name": "a"},
        {"name": "b", "model": "fake/new-1B", "startup_timeout_s": 2, "env": SICK},
    )
    started = time.monotonic()
    result = run(
        daemon, "preset", "set", "p", "--file", str(write_preset(tmp_path, bad, "bad.yaml")),
        "--wait", "--timeout", "60",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 15  # the daemon's verdict, not the CLI's timeout
    assert result.stderr.startswith(
        "error: preset p did not become ready: generation 2 failed:"
        " p.b not ready within startup_timeout_s=2"
    ), result.stderr
    assert "the daemon rolled it back: generation 3 undoes this change (p.b)" in result.stderr

    # The earlier engines are back; the one the change did not touch never stopped.
    def restored(answer: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
        engines = engines_by_id(answer)
        back = engines["p.b"]["state"] == "ready" and engines["p.b"]["model"] == "fake/model-1B"
        return engines if back and set(engines) == {"p.a", "p.b"} else None

    engines = daemon.wait_for(lambda: restored(status_json(daemon)), 20, "p.b restored")
    assert engines["p.a"]["pid"] == first["p.a"]["pid"] and engines["p.a"]["restarts"] == 0
    assert engines["p.b"]["pid"] != first["p.b"]["pid"]
    assert engines["p.b"]["spec"] == first["p.b"]["spec"]
    healthy(daemon, 3)

    table = ok(daemon, "history").splitlines()
    assert table[0].split() == ["GEN", "TIME", "CAUSE", "STATE", "VERDICT", "ENGINES"]
    assert table[1].startswith("* 3 ")
    assert "rollback of 2: p.b not ready within startup_timeout_s=2" in table[1]
    assert table[2].startswith("  2 ") and "preset set p" in table[2] and " failed " in table[2]
    assert table[3].startswith("  1 ") and " healthy " in table[3]
    listed = json.loads(ok(daemon, "history", "--json", "--limit", "2"))["generations"]
    assert [g["id"] for g in listed] == [3, 2]
    assert listed[0]["cause"].startswith("rollback of 2: ")


def test_no_rollback_keeps_the_failed_engine(daemon: Daemon, tmp_path: Path):
    good = write_preset(tmp_path, fake_preset("p", {"name": "a"}), "good.yaml")
    ok(daemon, "preset", "set", "p", "--file", str(good), "--wait", "--timeout", "30")
    bad = fake_preset(
        "p", {"name": "a", "model": "fake/new-1B", "startup_timeout_s": 2, "env": SICK}
    )
    result = run(
        daemon, "preset", "set", "p", "--file", str(write_preset(tmp_path, bad, "bad.yaml")),
        "--no-rollback", "--wait", "--timeout", "60",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "generation 2 failed: p.a not ready within startup_timeout_s=2" in result.stderr
    assert "the failed state is kept as it is (rollback off)" in result.stderr
    assert "rolled it back" not in result.stderr

    time.sleep(1)  # a rollback, had there been one, comes right after the verdict
    answer = status_json(daemon)
    assert answer["generation"] == 2
    entry = engines_by_id(answer)["p.a"]
    assert entry["model"] == "fake/new-1B" and entry["state"] != "ready"
    assert generation(daemon, 2)["auto_rollback"] is False


def test_rollback_restores_exactly_the_engines_of_generation_n(daemon: Daemon, tmp_path: Path):
    path = write_preset(tmp_path, fake_preset("p", {"name": "a"}, {"name": "b"}))
    ok(daemon, "preset", "set", "p", "--file", str(path))  # 1
    ok(daemon, "engine", "start", "fake/solo-1B", "--name", "solo", "--label", "v1")  # 2
    solo = daemon.wait_state("solo", "ready")
    ok(daemon, "preset", "unset", "p")  # 3
    ok(daemon, "engine", "start", "fake/extra-1B", "--name", "extra")  # 4
    # Settled first, so the plan below starts rather than queues behind a start on a GPU.
    healthy(daemon, 4)
    wanted = specs(generation(daemon, 2)["engines"])

    out = ok(daemon, "rollback", "2", "--wait", "--timeout", "30")
    lines = out.splitlines()
    assert lines[:2] == ["restoring generation 2", "generation 5"]
    planned = {tuple(line.split()[:2]) for line in lines[2:] if line.startswith("  ")}
    assert {("start", "p.a"), ("start", "p.b"), ("stop", "extra")} <= planned
    # --wait ends once the engine the rollback drops is gone too, and says so.
    assert lines[-1] == "ready: generation 5 is healthy: p.a, p.b ready; extra stopped"

    daemon.wait_for(
        lambda: set(engines_by_id(status_json(daemon))) == set(wanted), 15, "extra removed"
    )
    answer = status_json(daemon)
    assert answer["presets"] == ["p"]
    assert specs(answer["engines"]) == wanted
    assert engines_by_id(answer)["solo"]["pid"] == solo["pid"]  # untouched by either change
    assert generation(daemon, 5)["cause"] == "rollback to 2"

    # Without N: the last healthy generation before the current one.
    healthy(daemon, 5)
    out = ok(daemon, "rollback", "--dry-run")
    assert out.splitlines()[0] == "restoring generation 4"
    assert ("start", "extra") in {tuple(line.split()[:2]) for line in out.splitlines()}


def test_a_change_made_while_another_fails_is_judged_on_its_own_engines(
    daemon: Daemon, tmp_path: Path
):
    # Long enough that `q` is set (a second CLI process) before generation 1 is judged.
    bad = fake_preset("p", {"name": "bad", "startup_timeout_s": 6, "env": SICK})
    ok(daemon, "preset", "set", "p", "--file", str(write_preset(tmp_path, bad)))  # 1
    other = write_preset(tmp_path, fake_preset("q", {"name": "ok"}))
    result = run(daemon, "preset", "set", "q", "--file", str(other), "--wait", "--timeout", "20")
    # q's change is judged on q.ok alone: p.bad, still coming up, is not its business.
    assert result.returncode == 0, result.stdout + result.stderr
    assert "generation 2 is healthy: q.ok ready" in result.stdout
    # p.bad fails its own change, which alone is reverted; q stays.
    daemon.wait_for(lambda: generation(daemon, 1)["healthy"] is False, 20, "generation 1 failed")
    assert generation(daemon, 1)["verdict"].startswith("p.bad not ready within")
    daemon.wait_for(lambda: status_json(daemon)["presets"] == ["q"], 10, "only q left")


def test_gpu_shows_the_simulated_gpus_and_reservations(daemon: Daemon):
    out = ok(daemon, "gpu")
    assert out.splitlines()[0].strip() == "simulated GPUs: GPU0 80 GiB, GPU1 80 GiB"
    devices = [line.split() for line in out.splitlines() if line.lstrip()[:1].isdigit()]
    assert [d[:6] for d in devices] == [
        [str(i), "simulated", "80", "GiB", "80.0", "GiB"] for i in (0, 1)
    ]

    ok(daemon, "engine", "start", "fake/m-1B", "--name", "m")
    entry = daemon.wait_state("m", "ready")
    (index,) = entry["gpus"]
    out = ok(daemon, "gpu")
    row = next(line for line in out.splitlines() if line.lstrip().startswith(f"{index} "))
    assert f"m {entry['gpu_memory_gb']:.1f} GiB" in row

    answer = json.loads(ok(daemon, "gpu", "--json"))
    assert answer["simulated"] is True and answer["mode"] == "simulated"
    assert [d["total_gb"] for d in answer["devices"]] == [80.0, 80.0]
    assert answer["devices"][index]["reservations"] == [
        {"engine": "m", "gb": entry["gpu_memory_gb"]}
    ]


def read_pty(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run `command` with stdout and stderr on a pseudo-terminal; its exit code and output."""
    leader, follower = os.openpty()
    process = subprocess.Popen(
        command, env=env, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL
    )
    os.close(follower)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the process closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        return process.wait(5), output.decode(errors="replace")
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()


def test_set_wait_on_a_terminal_shows_a_live_table(daemon: Daemon, tmp_path: Path):
    path = write_preset(tmp_path, fake_preset("p", {"name": "a"}))
    code, output = read_pty(
        [sys.executable, "-m", "sagellmd.cli.app", "preset", "set", "p", "--file", str(path),
         "--wait", "--timeout", "30"],
        {**daemon.env, "COLUMNS": "150", "TERM": "xterm"},
        40,
    )  # fmt: skip
    assert code == 0, output
    pid = daemon.engine("p.a")["pid"]
    # A rich table redrawn in place (cursor-up sequences), not one line per change.
    assert "\x1b[1A" in output
    for header in ("ENGINE", "STATE", "PID", "PORT", "GPUS", "RESTARTS", "MESSAGE"):
        assert header in output
    assert str(pid) in output
    assert "ready: generation 1 is healthy: p.a ready" in output
    assert psutil.pid_exists(pid)


def test_apply_on_a_terminal_says_healthy_once(daemon: Daemon, tmp_path: Path):
    path = write_preset(tmp_path, fake_preset("p", {"name": "a"}))
    code, output = read_pty(
        [sys.executable, "-m", "sagellmd.cli.app", "preset", "apply", "p", "--file", str(path),
         "--timeout", "30"],
        {**daemon.env, "COLUMNS": "150", "TERM": "xterm"},
        40,
    )  # fmt: skip
    assert code == 0, output
    assert output.count("generation 1 is healthy") == 1, output
    assert "ready: generation 1 is healthy: p.a ready" in output


def test_unset_wait_returns_once_the_engines_are_gone(daemon: Daemon, tmp_path: Path):
    # Ignores SIGTERM: the stop takes the whole grace period (2 s), then SIGKILL.
    stubborn = {"name": "a", "env": {"FAKE_VLLM_IGNORE_SIGTERM": "1"}}
    path = write_preset(tmp_path, fake_preset("p", stubborn))
    ok(daemon, "preset", "set", "p", "--file", str(path), "--wait", "--timeout", "30")
    pid = daemon.engine("p.a")["pid"]
    out = ok(daemon, "preset", "unset", "p", "--wait", "--timeout", "30")
    # Returned only after the process is gone, and says what it waited for.
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not engine_processes(daemon.home)
    last = out.splitlines()[-1]
    assert last.startswith("done: generation 2 is healthy") and "p.a stopped" in last, out
    assert "ready:" not in out, out
