"""A real sagellmd in a temp home on free ports, with the stand-in vLLM engine as runtime."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FAKE_VLLM = ROOT / "tests" / "fixtures" / "fake_vllm.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_processes(home: Path) -> list[psutil.Process]:
    """Every live process (leaders and workers) that carries this home's marker."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            env = process.environ()
            if env.get("SAGELLM_HOME") == str(home) and "SAGELLM_ENGINE_ID" in env:
                found.append(process)
        except psutil.Error:
            continue
    return found


class Daemon:
    """Handle on one sagellmd process and its home."""

    def __init__(self, home: Path, config: dict[str, Any]) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = home / "daemon.log"
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.extra_env: dict[str, str] = {}
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.yaml").write_text(yaml.safe_dump(config))

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {"SAGELLM_HOME": str(self.home), "SAGELLM_URL": self.url, "SAGELLM_LOG_LEVEL": "debug"}
        )
        env.pop("SAGELLM_TOKEN", None)
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sagellmd.daemon", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if wait:
            self.wait_for(self._healthy, 30, "daemon /healthz")

    def _healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"sagellmd exited {self.process.returncode}:\n{self.log()}")
        try:
            return self.client.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def token(self) -> str:
        return (self.home / "token").read_text().strip()

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def put(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        content = (
            None if body is None else (body if isinstance(body, str | bytes) else json.dumps(body))
        )
        return self.client.put(path, content=content, headers=self.auth(), **kwargs)

    def delete(self, path: str) -> httpx.Response:
        return self.client.delete(path, headers=self.auth())

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.client.post(path, json=body, headers=self.auth())

    def engine(self, engine_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/engines/{engine_id}")
        if response.status_code != 200:
            # Say why it is gone (a rollout that failed and was rolled back, say).
            recent = [f"{e['engine']} {e['type']}: {e['message']}" for e in self.events()[-12:]]
            raise AssertionError(f"{response.text}; latest events: {recent}")
        return response.json()

    def events(self, engine: str | None = None, after: int = 0) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"after": after, "limit": 1000}
        if engine:
            params["engine"] = engine
        return self.get("/v1/events", params=params).json()["events"]

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}\n"
            f"--- daemon log ---\n{self.log()[-4000:]}"
        )

    def wait_state(self, engine_id: str, state: str, timeout: float = 20) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            entry = self.engine(engine_id)
            return entry if entry["state"] == state else None

        return self.wait_for(check, timeout, f"{engine_id} to be {state}")

    def cli(
        self, *args: str, input_text: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sagellmd.cli.app", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
        )

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        for process in engine_processes(self.home):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                process.kill()
            except psutil.Error:
                pass
        self.client.close()


# Engine port ranges lie below the kernel's ephemeral ports (32768-60999 here, where client
# sockets and free_port() land and would take an engine's port between its choice and its
# bind), and each xdist worker draws from its own share, so two tests running at once never
# pick the same range.
PORT_RANGES_START, PORT_RANGES_END = 20000, 32700


def _port_range_start() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker) if worker.isdigit() else 0
    ranges = (PORT_RANGES_END - PORT_RANGES_START) // 100
    share = max(1, ranges // max(1, workers))
    first = PORT_RANGES_START + (index % workers) * share * 100
    return first + random.randrange(share) * 100


def base_config(**overrides: Any) -> dict[str, Any]:
    start = _port_range_start()
    config: dict[str, Any] = {
        "runtimes": {"vllm": {"command": [sys.executable, str(FAKE_VLLM)]}},
        "ports": {"start": start, "end": start + 99},
        "restart": {"backoff_base_s": 0.2, "backoff_max_s": 2, "reset_after_s": 600},
        "probes": {"liveness_interval_s": 0.5, "liveness_failures": 2},
        "stop_grace_s": 2,
        # Long enough that a stand-in engine crashing 1 s after its start fails its change.
        "rollout": {"min_healthy_s": 1.5},
        # Stand-in llm engines want GPUs: two simulated 80 GiB ones, placement included.
        "gpus": "simulate:2x80",
        # Their fake/... models are on no disk and need no hub: do not ask it (offline here).
        "models": {"hub_check": False},
        # Every daemon would bind the gateway's port 8000; the gateway tests enable it on
        # a free port of their own.
        "gateway": {"enabled": False},
    }
    config.update(overrides)
    return config


@contextlib.contextmanager
def daemon_factory(
    tmp_path: Path,
    defaults: Callable[[], dict[str, Any]] = dict,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[Callable[..., Daemon]]:
    """`make(start=True, home=None, **overrides)` of daemons in `tmp_path`, cleaned up at the
    end; `defaults()` is laid under each one's overrides (tests/cluster: its cluster)."""
    daemons: list[Daemon] = []

    def make(start: bool = True, home: Path | None = None, **overrides: Any) -> Daemon:
        config = base_config(**{**defaults(), **overrides})
        daemon = Daemon(home or tmp_path / f"home{len(daemons)}", config)
        daemon.extra_env.update(extra_env or {})
        daemons.append(daemon)
        if start:
            daemon.start()
        return daemon

    try:
        yield make
    finally:
        for daemon in daemons:
            daemon.cleanup()


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    with daemon_factory(tmp_path) as make:
        yield make


@pytest.fixture
def daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon()


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon for every test of a module that takes it, for tests that neither stop it
    nor need a fresh one: each test names its own engines and compares with what it saw
    first. A daemon's start is a second of CPU, most of a cheap test's time."""
    daemon = Daemon(tmp_path_factory.mktemp("module-daemon") / "home", base_config())
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()


def fake_preset(name: str, *engines: dict[str, Any]) -> dict[str, Any]:
    """A preset document whose engines run the stand-in engine."""
    return {
        "version": 1,
        "name": name,
        "description": "test preset",
        "engines": [{"kind": "llm", "model": "fake/model-1B", **engine} for engine in engines],
    }
