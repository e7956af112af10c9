"""Two stand-in engines as a prefill and a decode instance, the two-step protocol by hand.

They start with the argv and environment sagellm builds for a real vLLM
(runtime/kinds/vllm_kv_transfer.py) and get the bodies of gateway/pd_protocol.py; their
request records (FAKE_VLLM_REQUEST_RECORD) prove the route.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from sagellmd.gateway.pd_protocol import decode_body, kv_transfer_params_of, prefill_body
from sagellmd.runtime.kinds.vllm_kv_transfer import kv_transfer_launch
from tests.integration.conftest import FAKE_VLLM, free_port

MODEL = "fake/chat"
CHAT = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "A long prompt about the sea " * 20}],
    "max_tokens": 4,
    "stream": True,
}


@dataclass
class Engine:
    proc: subprocess.Popen[bytes]
    port: int
    side_port: int | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


Start = Callable[..., Engine]


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "requests.jsonl"


@pytest.fixture
def start(tmp_path: Path, record: Path) -> Iterator[Start]:
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []

    def launch(
        role: str | None,
        side_port: int | None = None,
        argv: list[str] | None = None,
        wait: bool = True,
    ) -> Engine:
        port = free_port()
        env = {**os.environ, "FAKE_VLLM_REQUEST_RECORD": str(record)}
        extra: list[str] = list(argv or [])
        if role is not None:
            side_port = side_port or free_port()
            kv = kv_transfer_launch("nixl", role, side_port, engine_id="lab.chat", http_port=port)
            extra += kv.argv
            env.update(kv.env_defaults)
            env.update(kv.env)
        command = [sys.executable, str(FAKE_VLLM), "--model", MODEL, "--port", str(port)]
        log = (tmp_path / f"engine-{port}.log").open("wb")
        logs.append(log)
        proc = subprocess.Popen(
            command + extra, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        engine = Engine(proc, port, side_port)
        if wait:
            deadline = time.monotonic() + 10
            while not healthy(engine):
                assert proc.poll() is None, (tmp_path / f"engine-{port}.log").read_text()
                assert time.monotonic() < deadline, "the stand-in did not become healthy"
                time.sleep(0.02)
        return engine

    yield launch
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    for log in logs:
        log.close()


def healthy(engine: Engine) -> bool:
    try:
        return httpx.get(f"{engine.url}/health", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def sse_events(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_long_prompt_goes_p_then_d(start: Start, record: Path, path: str):
    prefill, decode = start("prefill"), start("decode")
    assert prefill.side_port != decode.side_port
    body = dict(CHAT)
    if path == "/v1/completions":
        body = {key: value for key, value in CHAT.items() if key != "messages"}
        body["prompt"] = "A long prompt about the sea " * 20
    headers = {"X-Request-Id": "req-1"}

    answer = httpx.post(f"{prefill.url}{path}", json=prefill_body(body), headers=headers)
    assert answer.status_code == 200, answer.text
    params = kv_transfer_params_of(answer.json(), "lab.chat.prefill-0")
    assert params is not None
    assert params["remote_engine_id"] == f"fake-{prefill.port}"
    assert (params["remote_host"], params["remote_port"]) == ("127.0.0.1", prefill.side_port)
    assert answer.json()["choices"][0]["finish_reason"] == "length"

    with httpx.stream(
        "POST", f"{decode.url}{path}", json=decode_body(body, params), headers=headers
    ) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        streamed.read()
    events = sse_events(streamed)
    assert events[-1] == "[DONE]" and len(events) > 2

    lines = records(record)
    assert [(line["port"], line["role"], line["stream"]) for line in lines] == [
        (prefill.port, "prefill", False),
        (decode.port, "decode", True),
    ]
    assert all(line["kv_transfer_params"] and line["path"] == path for line in lines)
    assert lines[0]["prompt_hash"] == lines[1]["prompt_hash"]
    assert {line["x_request_id"] for line in lines} == {"req-1"}


def test_d_refuses_params_made_for_another_prompt(start: Start, record: Path):
    prefill, decode = start("prefill"), start("decode")
    answer = httpx.post(f"{prefill.url}/v1/chat/completions", json=prefill_body(CHAT))
    params = kv_transfer_params_of(answer.json(), "p")
    assert params is not None
    other = {**CHAT, "messages": [{"role": "user", "content": "Another prompt"}]}
    refused = httpx.post(f"{decode.url}/v1/chat/completions", json=decode_body(other, params))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "kv_transfer_params"
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert f"from fake-{prefill.port} hold blocks of another prompt" in error["message"]
    assert records(record)[-1]["refused"] == error["message"]


def test_d_refuses_params_that_name_no_remote_engine(start: Start):
    decode = start("decode")
    params = {"do_remote_prefill": True, "remote_block_ids": [1]}
    refused = httpx.post(f"{decode.url}/v1/chat/completions", json=decode_body(CHAT, params))
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "kv_transfer_params lack remote_engine_id, remote_host, remote_port for a remote prefill"
    )


def test_short_prompt_goes_to_d_alone(start: Start, record: Path):
    prefill, decode = start("prefill"), start("decode")
    answer = httpx.post(f"{decode.url}/v1/chat/completions", json={**CHAT, "stream": False})
    assert answer.status_code == 200
    assert "kv_transfer_params" not in answer.json()
    assert [
        (line["port"], line["role"], line["kv_transfer_params"]) for line in records(record)
    ] == [(decode.port, "local", False)]
    assert prefill.port not in {line["port"] for line in records(record)}


def test_without_the_flag_a_request_with_params_is_served_as_before(start: Start, record: Path):
    plain = start(None)
    answer = httpx.post(f"{plain.url}/v1/chat/completions", json=prefill_body(CHAT))
    assert answer.status_code == 200
    assert "kv_transfer_params" not in answer.json()
    assert records(record)[0]["role"] == "local"


def test_two_instances_on_one_side_port_fail_like_nixl(start: Start):
    first = start("prefill")
    second = start("decode", side_port=first.side_port, wait=False)
    assert second.proc.wait(timeout=10) == 1


def test_a_kv_transfer_config_vllm_would_refuse_exits_2(start: Start):
    bad = start(
        None,
        argv=["--kv-transfer-config", '{"kv_connector":"NixlConnector","kv_role":"producer"}'],
        wait=False,
    )
    assert bad.proc.wait(timeout=10) == 2


@pytest.mark.parametrize("connector", ["p2p-nccl", "lmcache"])
def test_the_other_connectors_argv_starts_and_hands_nothing_over(
    start: Start, record: Path, connector: str
):
    kv = kv_transfer_launch(
        connector, "prefill", free_port(), engine_id="lab.chat", http_port=8100, notify_port=7500
    )
    engine = start(None, argv=list(kv.argv))
    answer = httpx.post(f"{engine.url}/v1/chat/completions", json=prefill_body(CHAT))
    assert answer.status_code == 200
    assert "kv_transfer_params" not in answer.json()
    assert records(record)[0]["role"] == "local"
