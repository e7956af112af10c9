"""Owns the tests of sagellmd/api/route_entries.py: the route table the gateway reads, built
from desired engines and instances, and its version."""

from __future__ import annotations

import dataclasses

from sagellmd.api.route_entries import RouteVersions, route_entries, route_entry
from sagellmd.desired import DesiredEngine
from sagellmd.instance import Instance, InstanceState, Retiring
from sagellmd.spec import parse_engine


def desired(engine_id: str, **fields) -> DesiredEngine:
    spec = parse_engine({"name": engine_id.rsplit(".", 1)[-1], "model": "org/model-1B", **fields})
    return DesiredEngine(engine_id, engine_id.split(".")[0] if "." in engine_id else None, spec)


def instance(engine_id: str, state: InstanceState, port: int | None = 20001, **fields) -> Instance:
    return Instance(engine_id, 1, "hash", state, message=state.value, port=port, **fields)


def test_a_ready_engine_is_routable_by_every_name():
    engine = desired(
        "p.chat",
        label="fast",
        aliases=["qwen", "fast"],
        max_concurrent_requests=4,
        metadata={"cost": 1.5, "gateway_policy": "priority"},
        startup_timeout_s=60,
    )
    entry = route_entry(engine, instance("p.chat", InstanceState.READY))
    assert entry == {
        "id": "p.chat",
        "state": "ready",
        "ready": True,
        "url": "http://127.0.0.1:20001",
        "served_model": "org/model-1B",
        "names": ["org/model-1B", "p.chat", "fast", "qwen"],
        "label": "fast",
        "aliases": ["qwen", "fast"],
        "kind": "llm",
        "runtime": "vllm",
        "endpoints": ["/v1/chat/completions", "/v1/completions"],
        "max_concurrent_requests": 4,
        "metadata": {"cost": 1.5, "gateway_policy": "priority"},
        "startup_timeout_s": 60.0,
        "start": "always",
        "idle_s": None,
        "idle_action": "stop",
        "message": "ready",
        "pd": None,
    }


def test_an_idle_engine_is_listed_not_ready_with_its_on_demand_fields():
    engine = desired("coder", start="on-demand", idle_s=30, idle_action="sleep")
    idle = dataclasses.replace(
        instance("coder", InstanceState.IDLE), message="on demand: starts on ..."
    )
    entry = route_entry(engine, idle)
    assert (entry["state"], entry["ready"], entry["message"]) == (
        "idle",
        False,
        "on demand: starts on ...",
    )
    assert (entry["start"], entry["idle_s"], entry["idle_action"]) == ("on-demand", 30.0, "sleep")


def test_the_served_name_follows_served_model_name():
    engine = desired("chat", extra_args=["--served-model-name", "a", "b", "--seed", "1"])
    entry = route_entry(engine, instance("chat", InstanceState.READY))
    assert entry["served_model"] == "a"
    assert entry["names"] == ["a", "b", "chat"]


def test_an_embedding_engine_serves_embeddings():
    engine = desired("emb", kind="embedding")
    entry = route_entry(engine, instance("emb", InstanceState.READY))
    assert (entry["endpoints"], entry["runtime"]) == (["/v1/embeddings"], "embedding")


def test_engines_not_ready_are_listed_but_not_routable():
    engine = desired("chat")
    absent = route_entry(engine, None)
    assert (absent["state"], absent["ready"], absent["url"]) == ("absent", False, None)
    for state in (InstanceState.STARTING, InstanceState.BACKOFF, InstanceState.UNHEALTHY):
        entry = route_entry(engine, instance("chat", state))
        assert (entry["state"], entry["ready"]) == (state.value, False)
    no_port = route_entry(engine, instance("chat", InstanceState.READY, port=None))
    assert no_port["ready"] is False


def test_during_a_replacement_the_previous_process_serves():
    old = Retiring(pid=41, create_time=1.0, port=20005, spec_hash="old")
    starting = instance("chat", InstanceState.STARTING, port=20006, retiring=old)
    entry = route_entry(desired("chat"), starting)
    assert (entry["ready"], entry["url"]) == (True, "http://127.0.0.1:20005")
    assert "previous pid 41" in entry["message"]


def test_the_table_is_sorted_and_never_lists_the_gateway():
    engines = [desired("zeta"), desired("gateway"), desired("alpha")]
    assert [entry["id"] for entry in route_entries(engines, {})] == ["alpha", "zeta"]


def test_the_version_changes_exactly_when_the_content_does():
    versions = RouteVersions(clock=lambda: 1000.0)
    engine = desired("chat")
    first = versions.table(route_entries([engine], {}))
    assert first["version"] == 1_000_000
    assert versions.table(route_entries([engine], {}))["version"] == first["version"]
    ready = {"chat": instance("chat", InstanceState.READY)}
    second = versions.table(route_entries([engine], ready))
    assert second["version"] == first["version"] + 1
    relabelled = dataclasses.replace(engine, spec=dataclasses.replace(engine.spec, label="x"))
    third = versions.table(route_entries([relabelled], ready))
    assert third["version"] == second["version"] + 1
    assert versions.table(route_entries([relabelled], ready))["version"] == third["version"]


def test_a_later_daemon_never_reuses_an_earlier_version():
    earlier = RouteVersions(clock=lambda: 1000.0)
    for label in "abcdef":
        earlier.table(route_entries([desired("chat", label=label)], {}))
    later = RouteVersions(clock=lambda: 1001.0)
    assert later.table([])["version"] > earlier.table([])["version"]


def test_a_disaggregated_engine_is_one_entry_per_instance_with_its_group_names_and_pd():
    engine = desired(
        "p.chat",
        label="fast",
        aliases=["qwen"],
        disaggregated={"decode": {"replicas": 2}, "threshold_input_tokens": 512},
    )
    entries = route_entries(
        [engine, desired("solo")],
        {"p.chat.prefill-0": instance("p.chat.prefill-0", InstanceState.READY)},
    )
    by_id = {entry["id"]: entry for entry in entries}
    assert list(by_id) == ["p.chat.decode-0", "p.chat.decode-1", "p.chat.prefill-0", "solo"]
    prefill = by_id["p.chat.prefill-0"]
    assert prefill["names"] == ["org/model-1B", "p.chat", "fast", "qwen", "p.chat.prefill-0"]
    assert prefill["ready"] is True
    assert prefill["pd"] == {
        "group": "p.chat",
        "role": "prefill",
        "index": 0,
        "connector": "nixl",
        "threshold_input_tokens": 512,
    }
    assert by_id["p.chat.decode-1"]["pd"]["role"] == "decode"
    assert by_id["p.chat.decode-1"]["pd"]["index"] == 1
    assert by_id["p.chat.decode-1"]["state"] == "absent"
    assert by_id["solo"]["pd"] is None
