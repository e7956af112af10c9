"""Owns the tests of sagellmd/gateway/routes.py: the route table as the gateway reads it."""

from __future__ import annotations

from typing import Any

from sagellmd.gateway.routes import DEFAULT_CAP, Route, RouteTable


def _entry(engine_id: str, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": engine_id,
        "state": "ready",
        "ready": True,
        "url": "http://127.0.0.1:20001",
        "served_model": "Org/Model",
        "names": ["Org/Model", engine_id],
        "label": None,
        "aliases": [],
        "kind": "llm",
        "runtime": "vllm",
        "endpoints": ["/v1/chat/completions", "/v1/completions"],
        "max_concurrent_requests": 8,
        "metadata": {},
        "startup_timeout_s": 900,
        "message": "ready",
    }
    entry.update(fields)
    return entry


def test_every_name_of_an_engine_routes_to_it():
    table = RouteTable.from_json(
        {
            "version": 3,
            "engines": [
                _entry(
                    "qwen.chat",
                    names=["Qwen/Q", "qwen.chat", "fast", "qwen"],
                    served_model="Qwen/Q",
                    label="fast",
                    aliases=["qwen"],
                )
            ],
        }
    )
    assert table.version == 3
    assert table.loaded
    assert table.routable_names() == ["Qwen/Q", "fast", "qwen", "qwen.chat"]
    for name in ("Qwen/Q", "qwen.chat", "fast", "qwen"):
        group = table.resolve(name)
        assert group is not None
        assert group.engine_ids == ("qwen.chat",)
    assert table.resolve("nope") is None


def test_an_empty_table_is_not_loaded_until_the_daemon_sent_one():
    assert not RouteTable().loaded
    empty = RouteTable.from_json({"version": 0, "engines": []})
    assert empty.loaded
    assert empty.routable_names() == []
    assert empty.model_list() == []


def test_replicas_share_one_group_and_names_with_the_same_engines_share_its_key():
    table = RouteTable.from_json(
        {
            "version": 1,
            "engines": [
                _entry("b", names=["M", "b", "shared"], served_model="M"),
                _entry("a", names=["M", "a", "shared"], served_model="M"),
            ],
        }
    )
    served = table.resolve("M")
    alias = table.resolve("shared")
    assert served is not None and alias is not None
    assert served.engine_ids == ("a", "b")  # sorted: the key does not depend on entry order
    assert served.key == alias.key == ("a", "b")
    # An engine id routes to that engine alone: its own group, its own queue.
    only_a = table.resolve("a")
    assert only_a is not None and only_a.key == ("a",)
    assert only_a.key != served.key


def test_group_endpoints_are_the_union_of_its_engines():
    table = RouteTable.from_json(
        {
            "version": 1,
            "engines": [
                _entry("a", names=["M"], endpoints=["/v1/chat/completions"]),
                _entry("b", names=["M"], endpoints=["/v1/embeddings"]),
            ],
        }
    )
    group = table.resolve("M")
    assert group is not None
    assert group.endpoints(table) == frozenset({"/v1/chat/completions", "/v1/embeddings"})


def test_model_list_has_one_entry_per_served_name_and_alias():
    table = RouteTable.from_json(
        {
            "version": 5,
            "engines": [
                _entry(
                    "chat-1",
                    names=["Org/Chat", "chat-1", "fast", "chat"],
                    served_model="Org/Chat",
                    label="fast",
                    aliases=["chat"],
                ),
                _entry(
                    "chat-2",
                    state="starting",
                    ready=False,
                    names=["Org/Chat", "chat-2"],
                    served_model="Org/Chat",
                ),
                _entry(
                    "embed",
                    state="backoff",
                    ready=False,
                    names=["Org/Embed", "embed"],
                    served_model="Org/Embed",
                ),
            ],
        }
    )
    listed = {entry["id"]: entry for entry in table.model_list()}
    # Engine ids and labels route but are not listed as models of their own.
    assert list(listed) == ["Org/Chat", "Org/Embed", "chat"]
    chat = listed["Org/Chat"]
    assert chat["object"] == "model"
    assert chat["ready"] is True  # one of its two engines is ready
    assert chat["engines"] == [
        {"id": "chat-1", "state": "ready", "label": "fast"},
        {"id": "chat-2", "state": "starting", "label": None},
    ]
    assert chat["names"] == ["Org/Chat", "chat", "chat-1", "chat-2", "fast"]
    assert listed["chat"]["engines"] == [{"id": "chat-1", "state": "ready", "label": "fast"}]
    assert listed["Org/Embed"]["ready"] is False
    assert listed["Org/Embed"]["engines"] == [{"id": "embed", "state": "backoff", "label": None}]


def test_per_engine_metadata_is_read_and_an_unknown_policy_is_ignored():
    known = Route.from_json(
        _entry("a", metadata={"cost": 2.5, "gateway_policy": "priority", "slo_ttft_ms": 500})
    )
    assert (known.cost, known.policy, known.slo_ttft_ms) == (2.5, "priority", 500.0)
    unknown = Route.from_json(_entry("b", metadata={"gateway_policy": "lifo", "cost": "cheap"}))
    assert unknown.policy is None  # the global policy serves instead of failing every request
    assert unknown.cost == 0.0
    assert unknown.slo_ttft_ms is None


def test_address_and_origin_come_from_the_url():
    route = Route.from_json(_entry("a", url="http://127.0.0.1:20001/"))
    assert route.origin == "http://127.0.0.1:20001"
    assert route.address == ("127.0.0.1", 20001)
    ipv6 = Route.from_json(_entry("b", url="http://[::1]:8081"))
    assert ipv6.address == ("::1", 8081)
    no_port = Route.from_json(_entry("c", url="http://engine.local"))
    assert no_port.address == ("engine.local", 80)


def test_an_engine_without_a_url_is_never_ready_whatever_it_says():
    route = Route.from_json(_entry("a", ready=True, url=None))
    assert route.ready is False
    assert route.origin == ""


def test_missing_fields_take_defaults():
    route = Route.from_json({"id": "bare"})
    assert route.state == "absent"
    assert route.ready is False
    assert route.served_model == "bare"
    assert route.names == ("bare",)
    assert route.cap == DEFAULT_CAP
    assert route.endpoints == frozenset()
    assert route.runtime_reports_kv is False
    assert Route.from_json(_entry("v", runtime="vllm")).runtime_reports_kv is True


def test_a_changed_entry_compares_unequal_so_the_dispatcher_sees_news():
    first = Route.from_json(_entry("a"))
    assert first == Route.from_json(_entry("a"))
    assert first != Route.from_json(_entry("a", message="probe ok", state="ready"))
