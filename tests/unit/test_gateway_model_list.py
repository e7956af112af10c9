"""The gateway's /v1/models entries say each model's kind, so clients can pick one per call."""

from __future__ import annotations

from sagellmd.gateway.routes import RouteTable


def route(engine_id: str, model: str, kind: str, aliases: tuple[str, ...] = ()) -> dict:
    return {
        "id": engine_id,
        "state": "ready",
        "ready": True,
        "url": "http://127.0.0.1:20001",
        "served_model": model,
        "names": [model, engine_id, *aliases],
        "aliases": list(aliases),
        "kind": kind,
    }


def test_each_entry_carries_the_kind_of_its_engines():
    table = RouteTable.from_json(
        {
            "version": 3,
            "engines": [
                route("p.chat", "m/chat", "llm", ("local",)),
                route("p.embed", "m/embed", "embedding"),
                # Two kinds behind one name: the entry cannot say one.
                route("q.a", "shared", "llm"),
                route("q.b", "shared", "embedding"),
            ],
        }
    )
    kinds = {entry["id"]: entry["kind"] for entry in table.model_list()}
    assert kinds == {"local": "llm", "m/chat": "llm", "m/embed": "embedding", "shared": None}
