"""Owns the tests of the stand-in engine's sleep mode (tests/fixtures/fake_vllm_sleep.py).

Each test runs tests/fixtures/fake_vllm.py as a real process on a free port (the Launcher
of test_fake_vllm.py kills its process group at teardown) and talks HTTP to it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.unit.test_fake_vllm import HOST, FakeEngine, Launcher, free_port, wait_for

MODEL = "facebook/opt-125m"
COMPLETION = {"model": MODEL, "prompt": "hello there", "max_tokens": 3}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
EMBEDDING = {"model": MODEL, "input": "hi"}
DEV_MODE = {"VLLM_SERVER_DEV_MODE": "1"}


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.cleanup()


def sleepy(launch: Launcher, env: dict[str, str] | None = None, flag: bool = True) -> FakeEngine:
    port = free_port()
    argv = ["--model", MODEL, "--host", HOST, "--port", str(port)]
    engine = launch([*argv, "--enable-sleep-mode"] if flag else argv, env)
    engine.wait_healthy()
    return engine


def is_sleeping(engine: FakeEngine) -> bool:
    answer = engine.get("/is_sleeping")
    assert answer is not None and answer.status_code == 200, answer
    return bool(answer.json()["is_sleeping"])


def sleep_stats(engine: FakeEngine) -> dict[str, Any]:
    answer = engine.get("/fake/stats")
    assert answer is not None and answer.status_code == 200
    return dict(answer.json()["sleep"])


def work_statuses(engine: FakeEngine) -> list[int]:
    return [
        engine.post("/v1/completions", json=COMPLETION).status_code,
        engine.post("/v1/chat/completions", json=CHAT).status_code,
        engine.post("/v1/embeddings", json=EMBEDDING).status_code,
    ]


def test_sleep_then_wake_up_with_dev_mode_and_the_flag(launch: Launcher) -> None:
    engine = sleepy(launch, DEV_MODE)
    assert is_sleeping(engine) is False
    assert work_statuses(engine) == [200, 200, 200]

    slept = engine.post("/sleep?level=1")
    assert (slept.status_code, slept.content) == (200, b"")
    assert is_sleeping(engine) is True
    assert work_statuses(engine) == [503, 503, 503]
    refused = engine.post("/v1/completions", json=COMPLETION).json()["error"]
    assert refused["type"] == "ModelSleepingError"
    assert refused["code"] == 503
    assert "/wake_up" in refused["message"]
    # What needs no weights still answers.
    assert engine.health_status() == 200
    models = engine.get("/v1/models")
    assert models is not None and models.status_code == 200
    assert sleep_stats(engine)["level"] == 1

    woken = engine.post("/wake_up")
    assert (woken.status_code, woken.content) == (200, b"")
    assert is_sleeping(engine) is False
    assert work_statuses(engine) == [200, 200, 200]
    stats = sleep_stats(engine)
    assert (stats["sleeps"], stats["wakes"], stats["level"]) == (1, 1, None)


def test_sleep_and_wake_take_the_configured_time_and_serve_nothing_meanwhile(
    launch: Launcher,
) -> None:
    engine = sleepy(launch, {**DEV_MODE, "FAKE_VLLM_SLEEP_S": "0.6", "FAKE_VLLM_WAKE_S": "0.4"})
    answers: list[httpx.Response] = []
    started = time.monotonic()
    sleeper = threading.Thread(target=lambda: answers.append(engine.post("/sleep")))
    sleeper.start()
    try:
        # One snapshot, taken under the fake's lock: falling asleep is not asleep yet.
        changing = wait_for(lambda: s if (s := sleep_stats(engine))["changing"] else None)
        assert changing["is_sleeping"] is False
        # Falling asleep or asleep by now: no work is served either way.
        assert engine.post("/v1/completions", json=COMPLETION).status_code == 503
    finally:
        sleeper.join(timeout=5)
    slept_in = time.monotonic() - started
    assert [a.status_code for a in answers] == [200]
    assert 0.6 <= slept_in < 3.0
    assert is_sleeping(engine) is True

    started = time.monotonic()
    assert engine.post("/wake_up").status_code == 200
    woke_in = time.monotonic() - started
    assert 0.4 <= woke_in < 3.0
    assert engine.post("/v1/completions", json=COMPLETION).status_code == 200


def test_without_dev_mode_the_endpoints_are_not_found(launch: Launcher) -> None:
    engine = sleepy(launch)

    for path in ("/sleep?level=1", "/wake_up"):
        answer = engine.post(path)
        assert (answer.status_code, answer.json()) == (404, {"detail": "Not Found"})
    answer = engine.get("/is_sleeping")
    assert answer is not None
    assert (answer.status_code, answer.json()) == (404, {"detail": "Not Found"})
    assert work_statuses(engine) == [200, 200, 200]


def test_without_the_flag_a_change_fails_like_vllms_assertion(launch: Launcher) -> None:
    engine = sleepy(launch, DEV_MODE, flag=False)

    for path in ("/sleep", "/wake_up"):
        answer = engine.post(path)
        assert answer.status_code == 500
        assert answer.json()["error"]["message"] == "Sleep mode is not enabled in the model config"
    assert is_sleeping(engine) is False
    assert work_statuses(engine) == [200, 200, 200]


def test_sleep_levels_and_wrong_methods(launch: Launcher) -> None:
    engine = sleepy(launch, DEV_MODE)

    bad = engine.post("/sleep?level=3")
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "level"
    assert is_sleeping(engine) is False
    wrong = engine.get("/sleep")
    assert wrong is not None and wrong.status_code == 405
    assert engine.post("/is_sleeping").status_code == 405

    assert engine.post("/sleep?level=2").status_code == 200
    assert sleep_stats(engine)["level"] == 2


def test_repeated_sleep_and_wake_up_change_nothing(launch: Launcher) -> None:
    engine = sleepy(launch, DEV_MODE)

    assert engine.post("/wake_up").status_code == 200
    assert engine.post("/sleep").status_code == 200
    assert engine.post("/sleep").status_code == 200
    stats = sleep_stats(engine)
    assert (stats["is_sleeping"], stats["sleeps"], stats["wakes"]) == (True, 1, 0)


def test_sleep_while_loading_answers_503_like_every_other_request(launch: Launcher) -> None:
    port = free_port()
    argv = ["--model", MODEL, "--host", HOST, "--port", str(port), "--enable-sleep-mode"]
    engine = launch(argv, {**DEV_MODE, "FAKE_VLLM_STARTUP_DELAY": "30"})
    wait_for(lambda: True if engine.health_status() == 503 else None)

    assert engine.post("/sleep").status_code == 503
    assert sleep_stats(engine)["sleeps"] == 0


def test_the_flag_and_dev_mode_are_recorded(launch: Launcher) -> None:
    engine = sleepy(launch, DEV_MODE)

    [record] = engine.records()
    assert "--enable-sleep-mode" in record["argv"]
    assert record["env"]["VLLM_SERVER_DEV_MODE"] == "1"
