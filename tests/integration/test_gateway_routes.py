"""The daemon's side of the gateway seam over a real daemon: the route table long-poll
(token-guarded, woken by state and desired-state changes) and the activity reports."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.integration.conftest import Daemon, fake_preset


def routes(daemon: Daemon, **params: Any) -> httpx.Response:
    return daemon.get("/v1/routes", params=params, headers=daemon.auth())


def entry_of(table: dict[str, Any], engine_id: str) -> dict[str, Any]:
    return next(entry for entry in table["engines"] if entry["id"] == engine_id)


def wait_route(daemon: Daemon, engine_id: str, **expected: Any) -> dict[str, Any]:
    def matches() -> dict[str, Any] | None:
        table = routes(daemon).json()
        found = [entry for entry in table["engines"] if entry["id"] == engine_id]
        if found and all(found[0][key] == value for key, value in expected.items()):
            return table
        return None

    return daemon.wait_for(matches, 20, f"route {engine_id} {expected}")


def test_routes_need_the_token_even_on_loopback(module_daemon: Daemon):
    daemon = module_daemon
    refused = daemon.get("/v1/routes")
    assert refused.status_code == 401
    assert "token" in refused.json()["error"]["message"]
    wrong = daemon.get("/v1/routes", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert routes(daemon).status_code == 200


def test_the_table_lists_the_ready_engine_with_its_names_and_cap(daemon: Daemon):
    preset = fake_preset(
        "p",
        {
            "name": "chat",
            "label": "fast",
            "aliases": ["qwen"],
            "max_concurrent_requests": 7,
            "metadata": {"cost": 2},
            "extra_args": ["--served-model-name", "served-one"],
        },
    )
    assert daemon.put("/v1/presets/p", preset).status_code == 200
    table = wait_route(daemon, "p.chat", ready=True)
    entry = entry_of(table, "p.chat")
    port = daemon.engine("p.chat")["port"]
    assert entry["url"] == f"http://127.0.0.1:{port}"
    assert entry["state"] == "ready"
    assert entry["served_model"] == "served-one"
    assert entry["names"] == ["served-one", "p.chat", "fast", "qwen"]
    assert entry["endpoints"] == ["/v1/chat/completions", "/v1/completions"]
    assert (entry["max_concurrent_requests"], entry["metadata"]) == (7, {"cost": 2})
    assert (entry["kind"], entry["runtime"]) == ("llm", "vllm")
    # The same content is the same version, answered at once when `after` differs.
    again = routes(daemon, after=table["version"] - 1).json()
    assert again == table


def test_the_long_poll_answers_at_once_when_the_engine_dies(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", {"name": "chat"}))
    table = wait_route(daemon, "p.chat", ready=True)
    pid = daemon.engine("p.chat")["pid"]
    answer: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        response = routes(daemon, after=table["version"], wait=30)
        answer["elapsed_at"] = time.monotonic()
        answer["waited"] = answer["elapsed_at"] - started
        answer["table"] = response.json()

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.3)  # the poll is waiting
    assert "table" not in answer
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    poller.join(10)
    assert answer, "the long-poll did not answer"
    assert answer["elapsed_at"] - killed_at < 0.5
    assert answer["table"]["version"] != table["version"]
    assert entry_of(answer["table"], "p.chat")["ready"] is False


def test_a_poll_with_nothing_changed_waits_then_answers_the_same_table(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", {"name": "chat"}))
    table = wait_route(daemon, "p.chat", ready=True)
    started = time.monotonic()
    same = routes(daemon, after=table["version"], wait=0.6).json()
    assert time.monotonic() - started >= 0.55
    assert same == table


def test_label_and_alias_changes_update_the_routes_without_a_restart(daemon: Daemon):
    daemon.put("/v1/engines/solo", {"model": "fake/model-1B", "label": "a"})
    table = wait_route(daemon, "solo", ready=True)
    pid = daemon.engine("solo")["pid"]
    answer: dict[str, Any] = {}
    poller = threading.Thread(
        target=lambda: answer.update(routes(daemon, after=table["version"], wait=30).json())
    )
    poller.start()
    time.sleep(0.2)
    changed = daemon.put(
        "/v1/engines/solo", {"model": "fake/model-1B", "label": "b", "aliases": ["x"]}
    )
    assert changed.status_code == 200, changed.text
    poller.join(10)
    entry = entry_of(answer, "solo")
    assert (entry["label"], entry["aliases"]) == ("b", ["x"])
    assert entry["names"] == ["fake/model-1B", "solo", "b", "x"]
    assert entry["ready"] is True
    assert daemon.engine("solo")["pid"] == pid  # nothing restarted


def test_a_new_and_a_removed_engine_wake_the_poll(daemon: Daemon):
    table = routes(daemon).json()
    assert table["engines"] == []
    answer: dict[str, Any] = {}
    poller = threading.Thread(
        target=lambda: answer.update(routes(daemon, after=table["version"], wait=30).json())
    )
    poller.start()
    time.sleep(0.2)
    daemon.put("/v1/engines/solo", {"model": "fake/model-1B"})
    poller.join(10)
    assert [entry["id"] for entry in answer["engines"]] == ["solo"]
    wait_route(daemon, "solo", ready=True)
    before = routes(daemon).json()
    answer.clear()
    poller = threading.Thread(
        target=lambda: answer.update(routes(daemon, after=before["version"], wait=30).json())
    )
    poller.start()
    time.sleep(0.2)
    daemon.delete("/v1/engines/solo")
    poller.join(10)
    assert answer["engines"] == []


def test_bad_route_parameters_are_400(module_daemon: Daemon):
    daemon = module_daemon
    for params in ({"wait": "61"}, {"wait": "soon"}, {"after": "-1"}):
        response = routes(daemon, **params)
        assert response.status_code == 400, (params, response.text)


def test_an_activity_report_shows_in_status_and_the_gateway_section(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", {"name": "chat"}, {"name": "other"}))
    daemon.wait_state("p.chat", "ready")
    status = daemon.get("/v1/status").json()
    assert {(e["inflight"], e["queued"]) for e in status["engines"]} == {(None, None)}
    report = {
        "pid": 4242,
        "started_at": 1700000000.0,
        "route_version": 17,
        "engines": {"p.chat": {"inflight": 3, "queued": 1, "requests": 120}},
        "models": {"fake/model-1B": {"queued": 1}},
        "totals": {"requests": 120, "rejected": 2, "retries": 1, "errors": 0},
    }
    posted = daemon.client.post("/v1/gateway/activity", json=report, headers=daemon.auth())
    assert posted.status_code == 204 and posted.content == b""
    status = daemon.get("/v1/status").json()
    load = {e["id"]: (e["inflight"], e["queued"]) for e in status["engines"]}
    assert load == {"p.chat": (3, 1), "p.other": (0, 0)}
    assert status["gateway"]["totals"] == report["totals"]
    assert status["gateway"]["reported_at"] is not None
    assert daemon.get("/v1/gateway").json()["totals"] == report["totals"]
    cli = daemon.cli("status")
    assert cli.returncode == 0 and "3/1" in cli.stdout, cli.stdout
    assert "INFLIGHT/QUEUED" in cli.stdout and "gateway: disabled" in cli.stdout
    gateway = daemon.cli("gateway", "--json")
    assert gateway.returncode == 0, gateway.stderr
    assert '"requests": 120' in gateway.stdout


def test_activity_reports_need_the_token_and_a_report_shape(module_daemon: Daemon):
    daemon = module_daemon
    unauthenticated = daemon.client.post("/v1/gateway/activity", json={})
    assert unauthenticated.status_code == 401
    bad = daemon.client.post(
        "/v1/gateway/activity",
        json={"engines": {"x": {"inflight": -1}}},
        headers=daemon.auth(),
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith("engines.x.inflight:")
    not_object = daemon.client.post("/v1/gateway/activity", json=[1], headers=daemon.auth())
    assert not_object.status_code == 400


def _report(inflight: int, requests: int) -> dict:
    return {
        "pid": 1,
        "started_at": 1700000000.0,
        "route_version": 1,
        "engines": {"p.chat": {"inflight": inflight, "queued": 0, "requests": requests}},
        "models": {},
        "totals": {"requests": requests, "rejected": 0, "retries": 0, "errors": 0},
    }


def test_an_events_long_poll_with_load_answers_when_the_load_changes(daemon: Daemon):
    """The dashboard's feed: a change of in-flight counts ends `?load=true` long-polls (and
    only those); a report that changes no count wakes nobody."""
    assert daemon.put("/v1/presets/p", fake_preset("p", {"name": "chat"})).status_code == 200
    daemon.wait_state("p.chat", "ready")
    daemon.wait_for(
        lambda: daemon.get("/v1/generations").json()["generations"][0]["state"] == "healthy",
        10,
        "the rollout's verdict (its event must come before the long-polls start)",
    )
    last_id = daemon.get("/v1/events").json()["last_id"]
    post = lambda report: daemon.client.post(  # noqa: E731
        "/v1/gateway/activity", json=report, headers=daemon.auth()
    )
    assert post(_report(1, 1)).status_code == 204
    with ThreadPoolExecutor(3) as pool:
        following = pool.submit(daemon.get, f"/v1/events?after={last_id}&wait=20&load=true")
        plain = pool.submit(daemon.get, f"/v1/events?after={last_id}&wait=3")
        time.sleep(0.5)
        assert post(_report(1, 2)).status_code == 204  # counts unchanged: nobody wakes
        time.sleep(0.5)
        assert not following.done()
        started = time.monotonic()
        assert post(_report(4, 3)).status_code == 204
        answer = following.result(10).json()
        woke_after = time.monotonic() - started
        assert answer == {"events": [], "last_id": last_id, "load_changed": True}
        assert woke_after < 5, woke_after
        assert plain.result(10).json() == {"events": [], "last_id": last_id}
    status = daemon.get("/v1/status").json()
    assert [e["inflight"] for e in status["engines"] if e["id"] == "p.chat"] == [4]
