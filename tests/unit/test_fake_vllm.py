"""Owns the tests of tests/fixtures/fake_vllm.py, the stand-in engine other tests start.

Every test runs the fake as a real process in its own session, so the teardown can kill
the whole process group (the fake and any worker it forked) without touching pytest.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

FAKE_VLLM = Path(__file__).resolve().parents[1] / "fixtures" / "fake_vllm.py"
# Generous against a loaded CI box; a healthy fake answers within ~0.1 s.
START_TIMEOUT_S = 5.0
HOST = "127.0.0.1"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T | None], timeout: float = START_TIMEOUT_S) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    """True for a running process; a zombie (exited, not yet reaped) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@dataclass
class FakeEngine:
    proc: subprocess.Popen[bytes]
    port: int
    record: Path
    stdout: Path
    stderr: Path
    started: float

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def out(self) -> str:
        return self.stdout.read_text()

    def err(self) -> str:
        return self.stderr.read_text()

    def get(self, path: str) -> httpx.Response | None:
        """The answer, or None while nothing listens on the port."""
        try:
            return httpx.get(self.url + path, timeout=1.0)
        except httpx.TransportError:
            return None

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=2.0, **kwargs)

    def health_status(self) -> int | None:
        response = self.get("/health")
        return None if response is None else response.status_code

    def wait_healthy(self) -> None:
        def healthy() -> bool | None:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"fake vLLM exited {self.proc.returncode}: {self.err()}{self.out()}"
                )
            return True if self.health_status() == 200 else None

        wait_for(healthy)


class Launcher:
    """Starts fake engines and kills each one's process group at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.engines: list[FakeEngine] = []

    def flags(self, port: int, model: str = "facebook/opt-125m") -> list[str]:
        return ["--model", model, "--host", HOST, "--port", str(port)]

    def __call__(
        self, argv: list[str] | None = None, env: dict[str, str] | None = None
    ) -> FakeEngine:
        port = free_port()
        argv = self.flags(port) if argv is None else argv
        if "--port" in argv:
            port = int(argv[argv.index("--port") + 1])
        index = len(self.engines)
        record = self.tmp_path / f"record-{index}.jsonl"
        stdout = self.tmp_path / f"stdout-{index}.log"
        stderr = self.tmp_path / f"stderr-{index}.log"
        # Variables from the runner's own environment must not change the fake's behaviour.
        child_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("FAKE_", "SAGELLM_"))
            and key not in ("CUDA_VISIBLE_DEVICES", "VLLM_SERVER_DEV_MODE")
        }
        child_env["FAKE_VLLM_RECORD"] = str(record)
        child_env.update(env or {})
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(FAKE_VLLM), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=child_env,
                start_new_session=True,
            )
        engine = FakeEngine(proc, port, record, stdout, stderr, time.monotonic())
        self.engines.append(engine)
        return engine

    def cleanup(self) -> None:
        for engine in self.engines:
            # start_new_session made the fake a group leader: its pid is the group id,
            # and the group outlives the fake while a worker it forked is still in it.
            try:
                os.killpg(engine.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                engine.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                engine.proc.kill()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.cleanup()


def test_flags_are_parsed_and_recorded(launch: Launcher) -> None:
    port = free_port()
    argv = [
        "--model", "/models/qwen", "--host", HOST, "--port", str(port),
        "--tensor-parallel-size", "2", "--pipeline-parallel-size", "1",
        "--max-num-seqs", "8", "--gpu-memory-utilization", "0.55",
        "--served-model-name", "qwen", "qwen-alias", "--dtype", "float16",
        "--max-model-len", "2048", "--trust-remote-code", "--enforce-eager",
    ]  # fmt: skip
    env = {
        "SAGELLM_ENGINE_ID": "qwen-mini.chat",
        "CUDA_VISIBLE_DEVICES": "1,0",
        "FAKE_VLLM_STARTUP_DELAY": "0",
        "UNRELATED_VARIABLE": "not recorded",
    }
    engine = launch(argv, env)
    engine.wait_healthy()

    [record] = engine.records()
    assert record["pid"] == engine.proc.pid
    assert record["pgid"] == engine.proc.pid
    assert record["argv"] == argv
    assert record["env"] == {
        "SAGELLM_ENGINE_ID": "qwen-mini.chat",
        "CUDA_VISIBLE_DEVICES": "1,0",
        "FAKE_VLLM_STARTUP_DELAY": "0",
        "FAKE_VLLM_RECORD": str(engine.record),
    }
    assert "child_pid" not in record
    assert abs(record["t"] - time.time()) < 60

    models = engine.get("/v1/models")
    assert models is not None and models.status_code == 200
    data = models.json()["data"]
    assert [m["id"] for m in data] == ["qwen", "qwen-alias"]
    assert {(m["root"], m["max_model_len"], m["object"]) for m in data} == {
        ("/models/qwen", 2048, "model")
    }
    assert f"INFO: fake vLLM serving /models/qwen on http://{HOST}:{port}" in engine.out()

    answer = engine.post("/v1/completions", json={"model": "qwen-alias", "prompt": "x"})
    assert answer.status_code == 200 and answer.json()["model"] == "qwen-alias"
    wrong = engine.post("/v1/completions", json={"model": "/models/qwen", "prompt": "x"})
    assert wrong.status_code == 404
    assert wrong.json()["error"]["type"] == "NotFoundError"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "m", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--model", "m", "--gpu-memory-utilization", "lots"], "invalid float value"),
        (["--port", "8000"], "the following arguments are required: --model"),
    ],
)
def test_bad_flags_exit_2_like_argparse(launch: Launcher, argv: list[str], message: str) -> None:
    engine = launch(argv)
    assert engine.proc.wait(timeout=START_TIMEOUT_S) == 2
    assert message in engine.err()
    assert "usage: fake_vllm" in engine.err()
    assert engine.records() == []


def test_endpoints_answer_like_openai(launch: Launcher) -> None:
    engine = launch()
    engine.wait_healthy()

    health = engine.get("/health")
    assert health is not None and health.status_code == 200 and health.content == b""
    models = engine.get("/v1/models")
    assert models is not None
    assert models.json()["object"] == "list"
    assert [m["id"] for m in models.json()["data"]] == ["facebook/opt-125m"]

    completion = engine.post("/v1/completions", json={"prompt": "hello big world"})
    assert completion.status_code == 200
    body = completion.json()
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["model"] == "facebook/opt-125m"
    assert body["choices"][0]["text"] == "fake completion of 15 chars"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}

    chat = engine.post(
        "/v1/chat/completions",
        json={
            "model": "facebook/opt-125m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi there you"}]},
            ],
        },
    )
    assert chat.status_code == 200
    body = chat.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"] == "fake completion of 20 chars"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}

    cut = engine.post("/v1/completions", json={"prompt": "a b", "max_tokens": 2})
    assert cut.json()["choices"][0]["text"] == "fake completion"
    assert cut.json()["choices"][0]["finish_reason"] == "length"
    assert cut.json()["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/v1/completions", b"{not json"),
        ("/v1/completions", b'{"max_tokens": 3}'),
        ("/v1/completions", b'["a list"]'),
        ("/v1/chat/completions", b'{"prompt": "chat needs messages"}'),
        ("/v1/chat/completions", b'{"messages": []}'),
    ],
)
def test_bad_requests_get_400(launch: Launcher, path: str, content: bytes) -> None:
    engine = launch()
    engine.wait_healthy()
    answer = engine.post(path, content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == 400 and error["message"]
    # The connection stays usable after an error, as keep-alive clients expect.
    assert engine.health_status() == 200


def test_startup_delay_answers_503_then_200(launch: Launcher) -> None:
    engine = launch(env={"FAKE_VLLM_STARTUP_DELAY": "0.8"})
    first = wait_for(engine.health_status)
    assert first == 503
    loading = engine.post("/v1/completions", json={"prompt": "too early"})
    assert loading.status_code == 503
    engine.wait_healthy()
    assert time.monotonic() - engine.started >= 0.75


def test_listen_delay_refuses_connections_first(launch: Launcher) -> None:
    engine = launch(env={"FAKE_VLLM_LISTEN_DELAY": "0.5"})
    wait_for(lambda: engine.records() or None)
    assert engine.health_status() is None
    engine.wait_healthy()
    assert time.monotonic() - engine.started >= 0.45


def test_health_fail_always_answers_500(launch: Launcher) -> None:
    engine = launch(env={"FAKE_VLLM_HEALTH": "fail"})
    assert wait_for(engine.health_status) == 500
    assert engine.proc.poll() is None


def test_health_fail_after_turns_unhealthy(launch: Launcher) -> None:
    engine = launch(env={"FAKE_VLLM_HEALTH_FAIL_AFTER": "0.4"})
    engine.wait_healthy()
    wait_for(lambda: True if engine.health_status() == 500 else None)
    assert time.monotonic() - engine.started >= 0.35
    assert engine.proc.poll() is None


def test_crash_after_exits_with_the_code(launch: Launcher) -> None:
    engine = launch(env={"FAKE_VLLM_CRASH_AFTER": "0.3", "FAKE_VLLM_EXIT_CODE": "7"})
    assert engine.proc.wait(timeout=START_TIMEOUT_S) == 7
    assert time.monotonic() - engine.started >= 0.25
    assert "fake_vllm: crashing as told" in engine.err()


def test_crash_once_file_fails_once_then_runs(launch: Launcher, tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    env = {"FAKE_VLLM_CRASH_ONCE_FILE": str(marker)}
    first = launch(env=env)
    assert first.proc.wait(timeout=START_TIMEOUT_S) == 1
    assert marker.exists()
    second = launch(env=env)
    second.wait_healthy()


def test_sigterm_stops_promptly_with_exit_0(launch: Launcher) -> None:
    engine = launch()
    engine.wait_healthy()
    sent = time.monotonic()
    engine.proc.send_signal(signal.SIGTERM)
    assert engine.proc.wait(timeout=START_TIMEOUT_S) == 0
    assert time.monotonic() - sent < 0.5
    assert engine.get("/health") is None


def test_ignore_sigterm_needs_sigkill(launch: Launcher) -> None:
    engine = launch(env={"FAKE_VLLM_IGNORE_SIGTERM": "1"})
    engine.wait_healthy()
    engine.proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        engine.proc.wait(timeout=0.3)
    assert engine.health_status() == 200
    engine.proc.kill()
    assert engine.proc.wait(timeout=START_TIMEOUT_S) == -signal.SIGKILL


def test_fork_child_stays_in_the_group_after_sigterm(launch: Launcher) -> None:
    engine = launch(env={"FAKE_VLLM_FORK_CHILD": "1"})
    engine.wait_healthy()
    [record] = engine.records()
    child = record["child_pid"]
    assert child != engine.proc.pid
    assert pid_alive(child)
    assert os.getpgid(child) == os.getpgid(engine.proc.pid) == engine.proc.pid
    assert f"pid {child}" in engine.out()

    engine.proc.send_signal(signal.SIGTERM)
    assert engine.proc.wait(timeout=START_TIMEOUT_S) == 0
    # Only a kill of the whole group reaches the worker, as with a real vLLM.
    time.sleep(0.1)
    assert pid_alive(child)
    os.killpg(engine.proc.pid, signal.SIGKILL)
    wait_for(lambda: True if not pid_alive(child) else None)
