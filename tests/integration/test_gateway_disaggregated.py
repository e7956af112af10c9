"""Requests for a disaggregated engine through the real gateway, a real daemon behind it.

The daemon expands the preset's `disaggregated:` engine into prefill and decode stand-ins on
simulated GPUs; their request records (FAKE_VLLM_REQUEST_RECORD, tests/fixtures/fake_pd.py)
prove each request's route: P saw it with do_remote_decode, D with the params P made for
that prompt, both with the request's X-Request-Id.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import psutil
import pytest

from tests.integration.conftest import Daemon, engine_processes, free_port
from tests.integration.test_gateway_requests import Load

MODEL = "fake/model-1B"
PREFILLS = ("p.chat.prefill-0", "p.chat.prefill-1")
DECODE = "p.chat.decode-0"
LONG = "A long prompt about the sea and the ships on it. " * 12  # ~150 tokens
SHORT = "hi"
THRESHOLD = 64


def pd_preset(record: Path, prefills: int = 2, **env: str) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "p",
        "description": "a disaggregated stand-in",
        "engines": [
            {
                "name": "chat",
                "kind": "llm",
                "runtime": "vllm",
                "model": MODEL,
                "env": {"FAKE_VLLM_REQUEST_RECORD": str(record), **env},
                "disaggregated": {
                    "prefill": {"replicas": prefills},
                    "decode": {"replicas": 1},
                    "connector": "nixl",
                    "threshold_input_tokens": THRESHOLD,
                },
            }
        ],
    }


class PdGateway:
    """The daemon's gateway for the preset, and what its engines recorded."""

    def __init__(self, make_daemon: Any, record: Path, prefills: int = 2, **env: str) -> None:
        port = free_port()
        self.daemon: Daemon = make_daemon(
            gateway={"enabled": True, "port": port}, gpus="simulate:4x80"
        )
        answer = self.daemon.put("/v1/presets/p", pd_preset(record, prefills, **env))
        assert answer.status_code in (200, 201), answer.text
        self.record = record
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)
        self.instances = (*PREFILLS[:prefills], DECODE)
        self.wait_ready()

    def wait_ready(self, timeout: float = 40) -> None:
        def ready() -> bool:
            try:
                (entry,) = [m for m in self.client.get("/v1/models").json()["data"]]
            except (httpx.TransportError, ValueError, KeyError):
                return False
            up = {e["id"] for e in entry["engines"] if e["state"] == "ready"}
            return entry["ready"] and up == set(self.instances)

        self.daemon.wait_for(ready, timeout, f"{MODEL} routable with {self.instances} ready")

    def ports(self) -> dict[int, str]:
        """Instance id by port, from the daemon's route table."""
        routes = self.daemon.get("/v1/routes", headers=self.daemon.auth()).json()["engines"]
        return {
            int(entry["url"].rsplit(":", 1)[1]): entry["id"] for entry in routes if entry["url"]
        }

    def records(self) -> list[dict[str, Any]]:
        ports = self.ports()
        lines = [json.loads(line) for line in self.record.read_text().splitlines()]
        for line in lines:
            line["instance"] = ports.get(line["port"], line["port"])
        return lines

    def chat(self, content: str, request_id: str, **fields: Any) -> httpx.Response:
        body = {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}
        headers = {"X-Request-Id": request_id}
        return self.client.post("/v1/chat/completions", json=body, headers=headers)

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name + "{") and all(
                f'{key}="{value}"' in line for key, value in labels.items()
            ):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def pids(self) -> dict[str, int]:
        found = {}
        for process in engine_processes(self.daemon.home):
            try:
                engine_id = process.environ().get("SAGELLM_ENGINE_ID", "")
                if engine_id in self.instances:
                    found.setdefault(engine_id, process.pid)
            except psutil.Error:
                continue
        return found


def by_request(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    routes: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        routes.setdefault(line["x_request_id"], []).append(line)
    return routes


def test_long_prompts_go_p_then_d_short_ones_skip_p_and_d_streams(make_daemon, tmp_path):
    gateway = PdGateway(make_daemon, tmp_path / "requests.jsonl")
    for i in range(4):
        answer = gateway.chat(LONG, f"long-{i}", max_tokens=4)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-request-id"] == f"long-{i}"
    for i in range(3):
        assert gateway.chat(SHORT, f"short-{i}", max_tokens=4).status_code == 200
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": LONG}],
        stream=True,
        extra_headers={"X-Request-Id": "streamed"},
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 1 and "".join(pieces)

    routes = by_request(gateway.records())
    for request_id in ("long-0", "long-1", "long-2", "long-3", "streamed"):
        prefill, decode = routes[request_id]
        assert prefill["instance"] in PREFILLS and prefill["role"] == "prefill", prefill
        assert prefill["kv_transfer_params"] and prefill["stream"] is False
        assert decode["instance"] == DECODE and decode["role"] == "decode", decode
        assert "refused" not in decode and decode["prompt_hash"] == prefill["prompt_hash"]
        assert decode["t"] >= prefill["t"]
    assert routes["streamed"][1]["stream"] is True
    for request_id in ("short-0", "short-1", "short-2"):
        (alone,) = routes[request_id]
        assert (alone["instance"], alone["role"], alone["kv_transfer_params"]) == (
            DECODE,
            "local",
            False,
        )

    # Per-phase metrics: 5 prefill steps, 8 decode first tokens, 3 that skipped P.
    assert gateway.metric("sagellm_gateway_prefill_seconds_count", model=MODEL) == 5
    assert gateway.metric("sagellm_gateway_decode_first_token_seconds_count", model=MODEL) == 8
    assert gateway.metric("sagellm_gateway_pd_requests_total", route="decode_only") == 3
    assert gateway.metric("sagellm_gateway_pd_requests_total", route="prefill_decode") == 5
    assert gateway.metric("sagellm_gateway_requests_total", engine=DECODE, code="200") == 8


class StreamingLoad(Load):
    """Clients streaming long-prompt chats one after another until the block ends."""

    gateway: PdGateway  # type: ignore[assignment]

    def _run(self, client: int) -> None:
        with httpx.Client(base_url=self.gateway.url, timeout=30) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"{client}-{n} {LONG}"}],
                    "max_tokens": 8,
                    "stream": True,
                }
                with http.stream("POST", "/v1/chat/completions", json=body) as answer:
                    text = answer.read().decode()
                self.done += 1
                if answer.status_code != 200 or not text.rstrip().endswith("data: [DONE]"):
                    self.failures.append(f"{answer.status_code} {text[-300:]}")
                elif '"error"' in text:
                    self.failures.append(text[-300:])


@pytest.mark.parametrize("prefills", [2, 1])
def test_sigkill_of_a_prefill_under_load_fails_no_request_and_it_restarts_alone(
    make_daemon, tmp_path, prefills
):
    """Two P: the other takes over. One P: requests wait for the daemon to restart it."""
    gateway = PdGateway(
        make_daemon,
        tmp_path / "requests.jsonl",
        prefills,
        FAKE_VLLM_LATENCY_MS="15",
        FAKE_VLLM_TOKEN_INTERVAL_MS="5",
    )
    before = gateway.pids()
    assert set(before) == set(gateway.instances)
    victim = PREFILLS[0]
    with StreamingLoad(gateway, clients=8) as load:
        time.sleep(1.0)
        psutil.Process(before[victim]).send_signal(signal.SIGKILL)
        gateway.daemon.wait_for(
            lambda: gateway.pids().get(victim, before[victim]) != before[victim],
            15,
            f"{victim} restarted",
        )
        time.sleep(1.0)
    assert load.failures == [], load.failures[:3]
    assert load.done > 40
    gateway.wait_ready()
    after = gateway.pids()
    assert after[victim] != before[victim]
    assert {i: after[i] for i in gateway.instances if i != victim} == {
        i: before[i] for i in gateway.instances if i != victim
    }
    # Every request still went P then D: to the other P, or to the restarted one.
    routes = by_request(gateway.records())
    for lines in routes.values():
        roles = [line["role"] for line in lines if "refused" not in line]
        assert roles[-1] == "decode" and roles.count("decode") == 1, lines


def test_a_p_whose_answer_is_unusable_gets_the_next_p(make_daemon, tmp_path):
    gateway = PdGateway(
        make_daemon, tmp_path / "requests.jsonl", FAKE_VLLM_PD_NO_PARAMS=PREFILLS[0]
    )
    # Least-outstanding breaks ties at random: ask until the broken P had its turn, then more.
    sent = 0
    while sent < 40 and (
        sent < 6 or not any(line["instance"] == PREFILLS[0] for line in gateway.records())
    ):
        answer = gateway.chat(LONG, f"long-{sent}", max_tokens=4)
        assert answer.status_code == 200, answer.text
        sent += 1
    routes = by_request(gateway.records())
    broken_served = 0
    for i in range(sent):
        lines = routes[f"long-{i}"]
        *_, prefill, decode = lines
        assert prefill["instance"] == PREFILLS[1] and decode["instance"] == DECODE, lines
        assert decode["role"] == "decode" and "refused" not in decode
        broken_served += sum(line["instance"] == PREFILLS[0] for line in lines)
    assert broken_served >= 1  # it was tried, found wanting, then left alone while suspect
    assert gateway.metric("sagellm_gateway_retries_total", engine=PREFILLS[0]) == broken_served


def test_when_every_p_answers_unusably_the_client_gets_a_clear_502(make_daemon, tmp_path):
    gateway = PdGateway(
        make_daemon,
        tmp_path / "requests.jsonl",
        prefills=1,
        FAKE_VLLM_PD_NO_PARAMS=PREFILLS[0],
    )
    answer = gateway.chat(LONG, "doomed", max_tokens=4)
    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["type"]) == ("prefill_failed", "server_error")
    assert error["message"].startswith(
        f"The prefill step for {MODEL!r} failed on every prefill instance tried:"
        f" {PREFILLS[0]}: The prefill instance {PREFILLS[0]} answered without what the decode"
        " instance needs: its answer has no kv_transfer_params"
    )
    # D never saw it; P was asked once per attempt (gateway.retries 2: three attempts).
    lines = by_request(gateway.records())["doomed"]
    assert [line["instance"] for line in lines] == [PREFILLS[0]] * 3
    # A short prompt needs no P and is served.
    assert gateway.chat(SHORT, "short", max_tokens=4).status_code == 200


def test_a_decode_that_dies_mid_stream_ends_the_stream_with_an_error_event(make_daemon, tmp_path):
    gateway = PdGateway(
        make_daemon,
        tmp_path / "requests.jsonl",
        prefills=1,
        FAKE_VLLM_STREAM_TOKENS="400",
        FAKE_VLLM_TOKEN_INTERVAL_MS="20",
    )
    decode_pid = gateway.pids()[DECODE]
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": LONG}],
        "max_tokens": 400,
        "stream": True,
    }
    events: list[str] = []
    with gateway.client.stream("POST", "/v1/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 3:
                    psutil.Process(decode_pid).send_signal(signal.SIGKILL)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert (error["code"], error["type"]) == ("engine_failed_mid_stream", "server_error")
    assert 3 <= len(events) < 400
    # It went P then D all the same.
    (only,) = [lines for lines in by_request(gateway.records()).values()]
    assert [line["role"] for line in only] == ["prefill", "decode"]
