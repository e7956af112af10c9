"""The seeds' management API, Prometheus metrics, auth off loopback, and the OpenAPI document."""

from __future__ import annotations

import re

import httpx
import jsonschema_rs
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Daemon


def test_seed_management_api_with_its_field_names(daemon: Daemon):
    request = {
        "model_id": "Qwen/Qwen2.5-1.5B-Instruct",
        "engine_kind": "llm",
        "port": None,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "use_gpu": True,
        "label": "chat-qwen15b",
        "max_concurrent_requests": 64,
        "metadata": {"traffic_class": "production"},
    }
    answer = daemon.client.post("/v1/management/engines", json=request, headers=daemon.auth())
    assert answer.status_code == 201, answer.text
    engine_id = answer.json()["engine_id"]
    assert engine_id == "qwen2-5-1-5b-instruct"
    second = daemon.client.post("/v1/management/engines", json=request, headers=daemon.auth())
    assert second.json()["engine_id"] == "qwen2-5-1-5b-instruct-2"
    entry = daemon.wait_state(engine_id, "ready")
    assert entry["label"] == "chat-qwen15b" and entry["metadata"] == {"traffic_class": "production"}
    assert entry["spec"]["max_concurrent_requests"] == 64
    status = daemon.get("/v1/management/status").json()
    assert {"gpus", "engines", "instances"} <= set(status)
    assert engine_id in [i["engine_id"] for i in status["instances"]]
    bad = daemon.client.post(
        "/v1/management/engines",
        headers=daemon.auth(),
        json={"model_id": "m", "tensor_parallel_size": 0},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["message"].startswith("tensor_parallel_size: must be an integer")
    unknown = daemon.client.post(
        "/v1/management/engines", headers=daemon.auth(), json={"model_id": "m", "gpu_ids": [0]}
    )
    assert unknown.status_code == 400 and "'gpu_ids'" in unknown.json()["error"]["message"]
    gone = daemon.client.delete(f"/v1/management/engines/{engine_id}", headers=daemon.auth())
    assert gone.status_code == 200 and gone.json()["stopped"] is True
    daemon.wait_for(
        lambda: engine_id not in [e["id"] for e in daemon.get("/v1/engines").json()["engines"]],
        15,
        "the engine removed",
    )


def test_metrics_parse_and_count(daemon: Daemon):
    daemon.put("/v1/engines/solo", {"model": "fake/solo-1B", "gpu_memory_gb": 10})
    daemon.wait_state("solo", "ready")
    daemon.client.put("/v1/engines/x", json={"model": "m"})  # 401, counted too
    text = daemon.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    engines = {s.labels["state"]: s.value for s in families["sagellm_engines"].samples}
    assert engines["ready"] == 1 and engines["failed"] == 0
    restarts = [
        s
        for s in families["sagellm_engine_restarts"].samples
        if s.name == "sagellm_engine_restarts_total"
    ]
    assert restarts[0].labels == {"engine": "solo"} and restarts[0].value == 0
    ready_count = [
        s
        for s in families["sagellm_engine_time_to_ready_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert ready_count[0].value == 1
    passes = [
        s for s in families["sagellm_reconcile_pass_seconds"].samples if s.name.endswith("_count")
    ]
    assert passes[0].value >= 1
    memory = {
        (s.labels["gpu"], s.labels["kind"]): s.value
        for s in families["sagellm_gpu_memory_bytes"].samples
    }
    assert memory[("0", "total")] == 80 * 1024**3
    assert memory[("0", "reserved")] + memory[("1", "reserved")] == 10 * 1024**3
    requests = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["sagellm_api_requests"].samples
        if s.name == "sagellm_api_requests_total"
    }
    assert requests[("/v1/engines/{engine_id}", "PUT", "401")] == 1
    assert requests[("/v1/engines/{engine_id}", "PUT", "201")] == 1


def test_a_non_loopback_bind_needs_the_token_for_reads_too(make_daemon):
    daemon: Daemon = make_daemon(start=False)
    daemon.config["api"] = {"host": "0.0.0.0"}
    (daemon.home / "config.yaml").write_text(__import__("yaml").safe_dump(daemon.config))
    daemon.start()
    assert daemon.get("/healthz").status_code == 200  # liveness stays open
    assert daemon.get("/v1/status").status_code == 401
    assert daemon.get("/v1/status", headers=daemon.auth()).status_code == 200


def test_openapi_describes_every_route(module_daemon: Daemon):
    daemon = module_daemon
    from sagellmd.api.app import ROUTES

    document = daemon.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    for route in ROUTES:
        path = re.sub(r":\w+}", "}", route.path)  # {model_id:path} is {model_id} in OpenAPI
        assert path in document["paths"], path
        for method in route.methods or ():
            if method != "HEAD":
                assert method.lower() in document["paths"][path], (path, method)
    put = document["paths"]["/v1/engines/{engine_id}"]["put"]
    assert put["security"] == [{"bearer": []}]
    assert "401" in put["responses"] and "400" in put["responses"]
    # The served schemas are as strict as the validators where JSON Schema can say it.
    engine_spec = jsonschema_rs.validator_for(document["components"]["schemas"]["EngineSpec"])
    for fields in ({"restart_schedule": "0 0 0 0 0"}, {"model": ""}, {"label": "a\x00"}):
        body = {"name": "x", "model": "m", **fields}
        assert not engine_spec.is_valid(body), fields
        assert daemon.put("/v1/engines/x", body).status_code == 400, fields
    assert engine_spec.is_valid({"name": "x", "model": "m", "restart_schedule": "0 4 * * *"})


def test_405_says_which_methods_are_allowed(module_daemon: Daemon):
    daemon = module_daemon
    response = httpx.request("PATCH", f"{daemon.url}/v1/status", headers=daemon.auth())
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    assert response.json()["error"]["code"] == "method_not_allowed"
