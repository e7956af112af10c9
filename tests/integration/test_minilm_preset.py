"""The built-in `minilm-cpu` preset through a real daemon and the real embedding engine."""

from __future__ import annotations

import os
import signal

import httpx
import numpy as np
import pytest

from tests.integration.conftest import Daemon, engine_processes

pytestmark = pytest.mark.slow


def test_minilm_cpu_serves_real_embeddings_and_comes_back_after_a_crash(daemon: Daemon):
    from sentence_transformers import SentenceTransformer

    from sagellmd.engines.embedding import resolve_model_path

    result = daemon.cli("preset", "set", "minilm-cpu")
    assert result.returncode == 0, result.stderr
    entry = daemon.wait_state("minilm-cpu.embed", "ready", timeout=180)
    assert entry["kind"] == "embedding" and entry["runtime"] == "embedding"
    texts = ["sagellm keeps engines running", "a second, different sentence"]
    url = f"http://127.0.0.1:{entry['port']}/v1/embeddings"
    served = httpx.post(url, json={"input": texts}, timeout=60).json()["data"]
    model = SentenceTransformer(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"),
                                device="cpu")
    expected = model.encode(texts)
    for item, reference in zip(served, expected, strict=True):
        vector = np.array(item["embedding"])
        cosine = vector @ reference / (np.linalg.norm(vector) * np.linalg.norm(reference))
        assert cosine > 0.9999
    environ = dict(item.split("=", 1) for item in _environ(entry["pid"]))
    assert environ["HF_HUB_OFFLINE"] == "1"

    os.kill(entry["pid"], signal.SIGKILL)
    again = daemon.wait_for(
        lambda: (e := daemon.engine("minilm-cpu.embed"))["state"] == "ready"
        and e["pid"] != entry["pid"] and e, 180, "the engine back after SIGKILL")
    assert again["restarts"] == 1 and again["port"] == entry["port"]

    result = daemon.cli("preset", "unset", "minilm-cpu")
    assert result.returncode == 0, result.stderr
    daemon.wait_for(lambda: not engine_processes(daemon.home), 30, "no engine process left")


def _environ(pid: int) -> list[str]:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return [item.decode() for item in handle.read().split(b"\0") if b"=" in item]
