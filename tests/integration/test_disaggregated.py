"""A disaggregated preset entry run by a real daemon: prefill and decode instances of the
stand-in engine (tests/fixtures/fake_pd.py speaks NIXL's side of it) on simulated GPUs.

The stand-in's record (FAKE_VLLM_RECORD: argv and env of every start) proves what each
process got; the stand-in binds its VLLM_NIXL_SIDE_CHANNEL_PORT, so two instances given one
port would not both come up.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil

from tests.integration.conftest import Daemon, engine_processes, fake_preset

PREFILL, DECODE = "p.chat.prefill-0", "p.chat.decode-0"


def chat(record: Path | None = None, **block: Any) -> dict[str, Any]:
    engine: dict[str, Any] = {"name": "chat", "gpu_memory_gb": 10, "disaggregated": block}
    if record is not None:
        engine["env"] = {"FAKE_VLLM_RECORD": str(record)}
    return engine


def records(path: Path) -> dict[str, dict[str, Any]]:
    """The last start of each instance, by its engine id."""
    found = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        found[entry["env"]["SAGELLM_ENGINE_ID"]] = entry
    return found


def kv_config(argv: list[str]) -> dict[str, Any]:
    return json.loads(argv[argv.index("--kv-transfer-config") + 1])


def status_entry(daemon: Daemon, engine_id: str) -> dict[str, Any]:
    engines = daemon.get("/v1/status").json()["engines"]
    return next(entry for entry in engines if entry["id"] == engine_id)


def instances_by_id(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {member["id"]: member for member in entry["instances"]}


def test_the_entry_becomes_prefill_and_decode_processes_on_different_gpus(
    daemon: Daemon, tmp_path: Path
):
    record = tmp_path / "record.jsonl"
    response = daemon.put(
        "/v1/presets/p", fake_preset("p", chat(record, threshold_input_tokens=64))
    )
    assert response.status_code == 200, response.text
    assert sorted(a["engine"] for a in response.json()["plan"]) == [DECODE, PREFILL]
    parent = daemon.wait_state("p.chat", "ready")
    assert parent["disaggregated"]["connector"] == "nixl"
    members = instances_by_id(parent)
    assert sorted(members) == [DECODE, PREFILL]
    assert members[PREFILL]["role"] == "prefill" and members[DECODE]["role"] == "decode"
    assert all(member["state"] == "ready" for member in members.values())
    assert set(members[PREFILL]["gpus"]).isdisjoint(members[DECODE]["gpus"])
    # Status lists the instances under the engine only.
    ids = [entry["id"] for entry in daemon.get("/v1/status").json()["engines"]]
    assert ids == ["p.chat"]

    started = records(record)
    prefill, decode = started[PREFILL], started[DECODE]
    assert (
        kv_config(prefill["argv"])
        == kv_config(decode["argv"])
        == {
            "kv_connector": "NixlConnector",
            "kv_role": "kv_both",
        }
    )
    assert prefill["env"]["CUDA_VISIBLE_DEVICES"] != decode["env"]["CUDA_VISIBLE_DEVICES"]
    assert {prefill["env"]["CUDA_VISIBLE_DEVICES"], decode["env"]["CUDA_VISIBLE_DEVICES"]} == {
        "0",
        "1",
    }
    prefill_side = prefill["env"]["VLLM_NIXL_SIDE_CHANNEL_PORT"]
    decode_side = decode["env"]["VLLM_NIXL_SIDE_CHANNEL_PORT"]
    assert prefill_side != decode_side
    http_ports = {str(members[PREFILL]["port"]), str(members[DECODE]["port"])}
    assert not {prefill_side, decode_side} & http_ports

    routes = {
        entry["id"]: entry
        for entry in daemon.get("/v1/routes", headers=daemon.auth()).json()["engines"]
    }
    assert sorted(routes) == [DECODE, PREFILL]
    assert routes[PREFILL]["pd"] == {
        "group": "p.chat",
        "role": "prefill",
        "index": 0,
        "connector": "nixl",
        "threshold_input_tokens": 64,
    }
    assert routes[DECODE]["pd"]["role"] == "decode"
    assert routes[DECODE]["names"] == ["fake/model-1B", "p.chat", DECODE]
    assert all(route["ready"] for route in routes.values())


def test_a_killed_prefill_restarts_alone_and_the_engine_waits_for_it(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", chat()))
    members = instances_by_id(daemon.wait_state("p.chat", "ready"))
    prefill_pid, decode_pid = members[PREFILL]["pid"], members[DECODE]["pid"]
    os.killpg(prefill_pid, signal.SIGKILL)
    # While its prefill is down the engine is not ready (it needs one of each).
    daemon.wait_for(
        lambda: status_entry(daemon, "p.chat")["state"] != "ready", 10, "the engine not ready"
    )

    def restarted() -> dict[str, Any] | None:
        entry = status_entry(daemon, "p.chat")
        prefill = instances_by_id(entry)[PREFILL]
        return entry if entry["state"] == "ready" and prefill["pid"] != prefill_pid else None

    members = instances_by_id(daemon.wait_for(restarted, 20, "the prefill restarted"))
    assert members[PREFILL]["restarts"] == 1
    assert members[DECODE]["pid"] == decode_pid and members[DECODE]["restarts"] == 0
    assert set(members[PREFILL]["gpus"]).isdisjoint(members[DECODE]["gpus"])


def test_the_set_pends_as_one_unit_when_it_cannot_be_placed(daemon: Daemon):
    # One GPU is nearly full: the prefill would fit on the other, the decode nowhere.
    daemon.put("/v1/engines/big", {"model": "fake/big-1B", "gpu_memory_gb": 70})
    daemon.wait_state("big", "ready")
    response = daemon.put("/v1/presets/p", fake_preset("p", chat()))
    assert response.status_code == 200, response.text
    entry = daemon.wait_state("p.chat", "pending")
    messages = {member["message"] for member in entry["instances"]}
    assert len(messages) == 1, messages
    (message,) = messages
    assert message.startswith("p.chat (prefill and decode instances never share a GPU)")
    assert all(member["state"] == "pending" for member in entry["instances"])
    assert all(member["pid"] is None for member in entry["instances"])
    ids = {p.environ().get("SAGELLM_ENGINE_ID") for p in engine_processes(daemon.home)}
    assert ids == {"big"}
    # Room made: the whole set starts.
    daemon.delete("/v1/engines/big")
    daemon.wait_state("p.chat", "ready", timeout=30)


def test_a_role_too_big_for_any_gpu_keeps_the_whole_set_pending(daemon: Daemon):
    block = {"decode": {"gpu_memory_gb": 200}}
    daemon.put("/v1/presets/p", fake_preset("p", chat(**block)))
    entry = daemon.wait_state("p.chat", "pending")
    messages = {member["message"] for member in entry["instances"]}
    assert len(messages) == 1 and DECODE in next(iter(messages)), messages
    assert not engine_processes(daemon.home)


def test_a_change_of_the_block_replaces_the_set_and_its_verdict_covers_it(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", chat()))
    before = instances_by_id(daemon.wait_state("p.chat", "ready"))
    block = {
        "prefill": {"extra_args": ["--max-model-len", "2048"]},
        "decode": {"extra_args": ["--max-model-len", "2048"]},
    }
    response = daemon.put("/v1/presets/p", fake_preset("p", chat(**block)))
    assert response.status_code == 200, response.text
    generation = response.json()["generation"]
    assert sorted(a["engine"] for a in response.json()["plan"]) == [DECODE, PREFILL]

    def settled() -> dict[str, Any] | None:
        rollout = daemon.get(f"/v1/generations/{generation}").json()
        return rollout if rollout["healthy"] is not None else None

    rollout = daemon.wait_for(settled, 30, "the verdict")
    assert rollout["healthy"] is True, rollout
    (change,) = rollout["changes"]
    assert change["engine"] == "p.chat" and change["verdict"] == "healthy"
    assert PREFILL in change["reason"] and DECODE in change["reason"], change
    after = instances_by_id(status_entry(daemon, "p.chat"))
    assert all(after[i]["pid"] != before[i]["pid"] for i in (PREFILL, DECODE))
    assert all(after[i]["running_spec_hash"] == after[i]["spec_hash"] for i in after)


def test_a_change_whose_decode_crash_loops_fails_the_set_and_is_rolled_back(daemon: Daemon):
    first = daemon.put("/v1/presets/p", fake_preset("p", chat())).json()["generation"]
    before = instances_by_id(daemon.wait_state("p.chat", "ready"))
    # The stand-in refuses a flag it does not know, as vLLM's parser does: it exits at once.
    bad = chat(decode={"extra_args": ["--no-such-flag"]})
    generation = daemon.put("/v1/presets/p", fake_preset("p", bad)).json()["generation"]
    assert generation == first + 1

    def failed() -> dict[str, Any] | None:
        rollout = daemon.get(f"/v1/generations/{generation}").json()
        return rollout if rollout["healthy"] is False else None

    rollout = daemon.wait_for(failed, 30, "the change to fail")
    assert DECODE in rollout["verdict"], rollout
    # Rolled back: the set runs the first spec again, the prefill never left it.
    daemon.wait_for(
        lambda: (
            (e := status_entry(daemon, "p.chat"))["state"] == "ready"
            and not e["disaggregated"]["decode"]["extra_args"]
        ),
        30,
        "the rollback",
    )
    after = instances_by_id(status_entry(daemon, "p.chat"))
    assert after[PREFILL]["pid"] == before[PREFILL]["pid"]


def test_removing_the_preset_stops_every_instance(daemon: Daemon):
    daemon.put("/v1/presets/p", fake_preset("p", chat(decode={"replicas": 1})))
    daemon.wait_state("p.chat", "ready")
    assert len(engine_processes(daemon.home)) == 2
    response = daemon.delete("/v1/presets/p")
    assert response.status_code == 200, response.text
    assert sorted(a["engine"] for a in response.json()["plan"]) == [DECODE, PREFILL]
    daemon.wait_for(lambda: not engine_processes(daemon.home), 10, "no instance left")
    daemon.wait_for(
        lambda: daemon.get("/v1/status").json()["engines"] == [], 10, "no engine in status"
    )


def test_a_daemon_restart_adopts_the_instances(daemon: Daemon, tmp_path: Path):
    record = tmp_path / "record.jsonl"
    daemon.put("/v1/presets/p", fake_preset("p", chat(record)))
    before = instances_by_id(daemon.wait_state("p.chat", "ready"))
    assert daemon.stop() == 0
    assert all(psutil.pid_exists(member["pid"]) for member in before.values())
    daemon.start()
    after = instances_by_id(daemon.wait_state("p.chat", "ready"))
    assert {i: m["pid"] for i, m in after.items()} == {i: m["pid"] for i, m in before.items()}
    assert all(member["restarts"] == 0 for member in after.values())
    assert any(event["type"] == "adopted" for event in daemon.events(PREFILL))
    # Each instance started once: adoption started nothing.
    assert len(record.read_text().splitlines()) == 2
