"""What the dashboard needs from the API beyond sign-in, over a real daemon: `sagellm ui`,
the logs follow, and YAML preset bodies."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import yaml

from tests.integration.conftest import Daemon, fake_preset


def test_sagellm_ui_prints_a_working_one_time_url(module_daemon: Daemon):
    daemon = module_daemon
    result = daemon.cli("ui", "--no-open", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["opened"] is False
    assert answer["url"].startswith(f"{daemon.url}/ui/?code=")
    client = httpx.Client(timeout=30)
    exchanged = client.get(answer["url"])
    assert exchanged.status_code == 303
    assert client.get(f"{daemon.url}/ui/session").status_code == 200
    plain = daemon.cli("ui", "--no-open")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip().startswith(f"{daemon.url}/ui/?code=")
    assert "single use" in plain.stderr and f"ssh -L {daemon.port}:127.0.0.1:{daemon.port}" in (
        plain.stderr
    )


def test_sagellm_ui_without_the_token_fails_with_exit_2(module_daemon: Daemon, monkeypatch):
    daemon = module_daemon
    # Only for this test: the module's other tests share the daemon and its handle.
    monkeypatch.setitem(daemon.extra_env, "SAGELLM_TOKEN", "wrong")
    result = daemon.cli("ui", "--no-open")
    assert result.returncode == 2
    assert "wrong token" in result.stderr


def logs(daemon: Daemon, engine: str, **params: object) -> dict:
    answer = daemon.get(f"/v1/engines/{engine}/logs", params=params, timeout=90)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_logs_follow_answers_a_new_line_promptly_and_times_out_empty(daemon: Daemon):
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B"})
    daemon.wait_state("solo", "ready")
    log = daemon.home / "logs" / "solo.log"
    tail = logs(daemon, "solo", tail=5)
    assert tail["offset"] == log.stat().st_size
    started = time.monotonic()
    quiet = logs(daemon, "solo", after=tail["offset"], wait=0.5)
    assert time.monotonic() - started >= 0.45
    assert (quiet["lines"], quiet["offset"], quiet["reset"]) == ([], tail["offset"], False)

    def write_later() -> None:
        time.sleep(0.5)
        with log.open("ab") as handle:
            handle.write(b"a line written while followed\n")

    writer = threading.Thread(target=write_later)
    writer.start()
    started = time.monotonic()
    news = logs(daemon, "solo", after=tail["offset"], wait=20)
    waited = time.monotonic() - started
    writer.join()
    assert news["lines"] == ["a line written while followed"]
    assert news["offset"] == log.stat().st_size
    assert 0.4 <= waited < 2.0, waited
    # A log that shrank is read from its start.
    log.write_bytes(b"fresh\n")
    again = logs(daemon, "solo", after=news["offset"], wait=5)
    assert (again["lines"], again["offset"], again["reset"]) == (["fresh"], 6, True)


def test_a_logs_follow_ends_when_the_daemon_stops(daemon: Daemon):
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B"})
    daemon.wait_state("solo", "ready")
    offset = logs(daemon, "solo")["offset"]
    answers: list[httpx.Response] = []

    def follow() -> None:
        with httpx.Client(base_url=daemon.url, timeout=90) as client:
            answers.append(
                client.get("/v1/engines/solo/logs", params={"after": offset, "wait": 60})
            )

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.5)
    started = time.monotonic()
    daemon.stop()
    follower.join(30)
    assert not follower.is_alive()
    assert time.monotonic() - started < 10
    assert answers and answers[0].status_code == 200
    assert answers[0].json()["lines"] == []


def answered_follows(daemon: Daemon) -> float:
    """How many logs reads the daemon has answered (its request counter, by route)."""
    total = 0.0
    for line in daemon.get("/metrics").text.splitlines():
        if line.startswith("sagellm_api_requests_total{") and "/logs" in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_logs_follow_ends_when_its_client_goes_away(daemon: Daemon):
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B"})
    daemon.wait_state("solo", "ready")
    offset = logs(daemon, "solo")["offset"]
    before = answered_follows(daemon)
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
        sock.sendall(
            f"GET /v1/engines/solo/logs?after={offset}&wait=60 HTTP/1.1\r\nhost: x\r\n\r\n".encode()
        )
        time.sleep(0.5)
    closed_at = time.monotonic()
    daemon.wait_for(lambda: answered_follows(daemon) > before, 5, "the follow to end")
    assert time.monotonic() - closed_at < 2


def test_logs_follow_parameters_are_checked(module_daemon: Daemon):
    daemon = module_daemon
    daemon.put("/v1/engines/params", {"model": "fake/params-1B"})
    for params, name in (({"after": -1}, "after"), ({"after": 0, "wait": 61}, "wait")):
        answer = daemon.get("/v1/engines/params/logs", params=params)
        assert answer.status_code == 400
        assert f"query parameter {name}" in answer.json()["error"]["message"]


def engine_ids(daemon: Daemon) -> list[str]:
    return [engine["id"] for engine in daemon.get("/v1/engines").json()["engines"]]


def put_yaml(daemon: Daemon, name: str, text: str, **params: object) -> httpx.Response:
    headers = {**daemon.auth(), "Content-Type": "application/yaml"}
    return daemon.client.put(f"/v1/presets/{name}", content=text, headers=headers, params=params)


def test_a_yaml_preset_body_applies(daemon: Daemon):
    text = yaml.safe_dump(fake_preset("p", {"name": "chat"}), sort_keys=False)
    dry = put_yaml(daemon, "p", text, dry_run="true")
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["plan"]
    assert daemon.get("/v1/status").json()["generation"] == 0
    applied = put_yaml(daemon, "p", text)
    assert applied.status_code == 200, applied.text
    assert applied.json()["generation"] == 1
    document = daemon.get("/v1/presets/p").json()
    assert document["active"] is True and document["source"] == "api"
    daemon.wait_state("p.chat", "ready")


def test_yaml_syntax_and_field_errors_are_400_and_change_nothing(module_daemon: Daemon):
    daemon = module_daemon
    generation = daemon.get("/v1/status").json()["generation"]
    engines = engine_ids(daemon)
    syntax = put_yaml(daemon, "p", "version: 1\nname: p\nengines:\n  - model: [fake\n")
    assert syntax.status_code == 400
    error = syntax.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("body: not valid YAML at line 5, column 1")
    assert (error["details"]["line"], error["details"]["column"]) == (5, 1)
    document = fake_preset("p", {"name": "chat", "port": "not-a-port"})
    as_yaml = put_yaml(daemon, "p", yaml.safe_dump(document))
    as_json = daemon.put("/v1/presets/p", document)
    assert as_yaml.status_code == as_json.status_code == 400
    assert as_yaml.json()["error"] == as_json.json()["error"]
    assert "port" in as_yaml.json()["error"]["message"]
    assert daemon.get("/v1/status").json()["generation"] == generation
    assert engine_ids(daemon) == engines
    assert daemon.get("/v1/presets/p").status_code == 404
