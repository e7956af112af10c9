"""Owns the tests of sagellmd/runtime/kinds/: the registry and what each kind says."""

from __future__ import annotations

import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from sagellmd.config import DEFAULT_RUNTIMES, Settings
from sagellmd.errors import SpecError
from sagellmd.instance import InstanceState, became_ready, begin_start, exited, spawned
from sagellmd.presets import catalogue
from sagellmd.runtime.argv import build_argv, build_env
from sagellmd.runtime.kinds import (
    COMMAND,
    KINDS,
    check_spec,
    kind_for,
    startup_timeout_for,
    wants_gpu,
)
from sagellmd.runtime.kinds.base import CHAT_ENDPOINTS, EMBEDDING_ENDPOINTS, GpuAssignment
from sagellmd.runtime.kinds.llamacpp import LlamaCppKind, parse_gguf_reference
from sagellmd.schemas.engine import KINDS as SPEC_KINDS
from sagellmd.spec import DEFAULT_STARTUP_TIMEOUT_S, EngineSpec, parse_engine, parse_preset

REPO = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
REV = "0123456789abcdef0123456789abcdef01234567"


def settings_for(tmp_path: Path, *model_paths: Path, **runtimes: tuple[str, ...]) -> Settings:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    merged = {name: tuple(command) for name, command in DEFAULT_RUNTIMES.items()}
    merged.update({name.replace("_", "-"): command for name, command in runtimes.items()})
    return Settings(home=home, runtimes=merged, model_paths=model_paths)


def gguf_cache(root: Path, *files: str) -> Path:
    """A hub cache holding REPO's snapshot REV with empty stand-ins of `files`."""
    cache = root / "hub"
    repo = cache / ("models--" + REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REV)
    for name in files:
        path = repo / "snapshots" / REV / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"GGUF")
    return cache


def llama_spec(model: str, cache: Path | None = None, **fields) -> EngineSpec:
    env = {"HF_HUB_CACHE": str(cache)} if cache is not None else {}
    env.update(fields.pop("env", {}))
    return parse_engine(
        {
            "name": "chat",
            "kind": "llm",
            "runtime": "llama-cpp",
            "model": model,
            "env": env,
            **fields,
        }
    )


# -- registry --------------------------------------------------------------------


def test_the_registry_names_each_built_in_kind_and_its_default_command():
    assert sorted(KINDS) == ["embedding", "gateway", "llama-cpp", "vllm"]
    for name, kind in KINDS.items():
        assert kind.name == name
        assert DEFAULT_RUNTIMES[name] == list(kind.default_command)
    assert DEFAULT_RUNTIMES["llama-cpp"] == ["python", "-m", "llama_cpp.server"]


def test_a_runtime_not_built_in_is_a_command():
    assert kind_for("my-server") is COMMAND
    assert kind_for("vllm") is KINDS["vllm"]


def test_each_kind_says_its_default_startup_timeout_for_every_spec_kind():
    for kind in [*KINDS.values(), COMMAND]:
        assert set(kind.startup_timeout_s) == set(SPEC_KINDS), kind.name
    # What every spec got before the kinds said it: vllm, embedding and commands keep it.
    for name in ("vllm", "embedding", "my-server"):
        assert dict(kind_for(name).startup_timeout_s) == DEFAULT_STARTUP_TIMEOUT_S
    assert startup_timeout_for("llama-cpp", "llm") == 300.0
    assert startup_timeout_for("llama-cpp", "embedding") == 180.0


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"kind": "embedding"},
        {"kind": "embedding", "runtime": "vllm"},
        {"kind": "llm", "runtime": "embedding"},
        {"runtime": "my-server"},
        {"runtime": "llama-cpp", "model": "/m.gguf", "startup_timeout_s": 900},
    ],
)
def test_parsing_with_the_kinds_changes_no_spec_that_parsed_before(fields):
    data = {"name": "e", "model": "org/m", **fields}
    with_kinds = parse_engine(data, startup_timeouts=startup_timeout_for)
    assert with_kinds == parse_engine(data)
    assert with_kinds.spec_hash == parse_engine(data).spec_hash


def test_a_llama_cpp_spec_without_a_timeout_gets_the_kinds(tmp_path):
    data = {"name": "e", "model": "/m.gguf", "runtime": "llama-cpp"}
    assert parse_engine(data, startup_timeouts=startup_timeout_for).startup_timeout_s == 300.0
    preset = {"version": 1, "name": "p", "engines": [data]}
    (engine,) = parse_preset(preset, startup_timeout_for).engines
    assert engine.startup_timeout_s == 300.0
    # The timeout is applied to the running process: the hash is the by-kind spec's.
    assert engine.spec_hash == parse_engine(data).spec_hash
    presets = tmp_path / "home" / "presets"
    presets.mkdir(parents=True)
    (presets / "p.yaml").write_text(yaml.safe_dump(preset))
    entry = catalogue(tmp_path / "home", startup_timeout_for)["p"]
    assert entry.preset.engines[0].startup_timeout_s == 300.0


def test_health_probes_per_kind():
    assert (KINDS["vllm"].health_path, KINDS["embedding"].health_path) == ("/health", "/health")
    assert COMMAND.health_path == "/health"
    assert COMMAND.probe_accepts(200) and COMMAND.probe_accepts(204)
    llama = KINDS["llama-cpp"]
    assert llama.health_path == "/v1/models"
    assert llama.probe_accepts(200) and not llama.probe_accepts(204)


def test_addressing_per_kind(tmp_path):
    chat = EngineSpec(name="chat", model="org/m")
    embed = EngineSpec(name="embed", model="org/e", kind="embedding", runtime="embedding")
    assert KINDS["vllm"].base_url(20001) == "http://127.0.0.1:20001/v1"
    assert KINDS["vllm"].served_model_names(chat) == ("org/m",)
    assert KINDS["vllm"].endpoints(chat) == CHAT_ENDPOINTS
    assert KINDS["embedding"].endpoints(embed) == EMBEDDING_ENDPOINTS
    gguf = tmp_path / "tiny.gguf"
    assert KINDS["llama-cpp"].served_model_names(llama_spec(str(gguf))) == ("chat",)
    assert KINDS["llama-cpp"].served_model_names(llama_spec(f"{REPO}:Q4_K_M")) == (
        f"{REPO}:Q4_K_M",
    )


def test_llama_cpp_reserves_no_gpu_unless_asked():
    assert not wants_gpu(llama_spec("/m.gguf"))
    assert wants_gpu(llama_spec("/m.gguf", use_gpu=True))
    assert not wants_gpu(llama_spec("/m.gguf", use_gpu=False))
    # The other kinds keep the spec's rule: an llm on a GPU, an embedding on the CPU.
    assert wants_gpu(EngineSpec(name="c", model="m"))
    assert not wants_gpu(EngineSpec(name="e", model="m", kind="embedding", runtime="embedding"))


# -- llama-cpp argv and environment ---------------------------------------------------


def test_llama_cpp_argv_from_a_local_file(tmp_path):
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    argv = build_argv(llama_spec(str(model)), settings_for(tmp_path), "p.chat", 20001)
    assert argv == [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        "20001",
        "--model_alias",
        "chat",
    ]


def test_llama_cpp_runs_the_configured_interpreter_and_extra_args(tmp_path):
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    settings = settings_for(tmp_path, llama_cpp=("/opt/llama/bin/python", "-m", "llama_cpp.server"))
    spec = llama_spec(str(model), extra_args=["--n_ctx", "512"])
    argv = build_argv(spec, settings, "chat", 20002)
    assert argv[:3] == ["/opt/llama/bin/python", "-m", "llama_cpp.server"]
    assert argv[-2:] == ["--n_ctx", "512"]


def test_llama_cpp_offloads_to_reserved_gpus_only(tmp_path):
    spec = llama_spec("/m.gguf", use_gpu=True)
    settings = settings_for(tmp_path)
    assert "--n_gpu_layers" not in build_argv(spec, settings, "c", 20001)
    argv = build_argv(spec, settings, "c", 20001, GpuAssignment((0,), 0.5))
    assert argv[argv.index("--n_gpu_layers") + 1] == "-1"


def test_llama_cpp_env_drops_host_and_port(tmp_path, monkeypatch):
    # llama_cpp.server's uvicorn.run reads HOST and PORT over its own --host/--port flags.
    monkeypatch.setenv("PORT", "18940")
    monkeypatch.setenv("HOST", "0.0.0.0")
    spec = llama_spec("/m.gguf", env={"port": "1", "N_CTX": "512"})
    env = build_env(spec, settings_for(tmp_path), "chat", 20001)
    assert not {"HOST", "PORT", "port"} & set(env)
    assert env["N_CTX"] == "512"
    assert env["SAGELLM_ENGINE_PORT"] == "20001" and env["CUDA_VISIBLE_DEVICES"] == ""
    # Other kinds pass the daemon's environment through unchanged.
    other = build_env(EngineSpec(name="c", model="m"), settings_for(tmp_path), "c", 20001)
    assert other["PORT"] == "18940"


def test_llama_cpp_treats_its_sigterm_death_as_clean():
    running = spawned(begin_start(None, "c", "h", 1, 20001, 0.0, False).instance, 42, 0.1).instance
    ready = became_ready(running, 1.0).instance
    clean = LlamaCppKind.clean_exit_signals
    sigterm = int(signal.SIGTERM)
    # restart: on-failure leaves a clean exit stopped, and restarts a crash.
    assert exited(ready, None, sigterm, 5, "on-failure", 600, 1, 60, clean).instance.state is (
        InstanceState.STOPPED
    )
    assert exited(ready, None, sigterm, 5, "on-failure", 600, 1, 60).instance.state is (
        InstanceState.BACKOFF
    )
    killed = exited(ready, None, int(signal.SIGKILL), 5, "on-failure", 600, 1, 60, clean)
    assert killed.instance.state is InstanceState.BACKOFF


# -- llama-cpp model references -----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        ("/models/tiny.gguf", {"path": Path("/models/tiny.gguf")}),
        (f"{REPO}:Q4_K_M", {"repo": REPO, "quant": "Q4_K_M"}),
        (
            f"{REPO}:qwen2.5-0.5b-instruct-q4_k_m.gguf",
            {"file": "qwen2.5-0.5b-instruct-q4_k_m.gguf"},
        ),
        (f"{REPO}:q8/model-00001-of-00002.gguf", {"file": "q8/model-00001-of-00002.gguf"}),
    ],
)
def test_model_references_that_parse(model, fields):
    ref = parse_gguf_reference(model)
    for name, value in fields.items():
        assert getattr(ref, name) == value


@pytest.mark.parametrize(
    ("model", "says"),
    [
        (REPO, "REPO:FILE.gguf or REPO:QUANT"),
        (f"{REPO}:", "REPO:FILE.gguf or REPO:QUANT"),
        (f"a/b/c:{'Q4'}", "REPO:FILE.gguf or REPO:QUANT"),
        (f"{REPO}:../x.gguf", "must be a file name inside the repo"),
    ],
)
def test_model_references_that_do_not(model, says):
    with pytest.raises(SpecError, match="model: ") as caught:
        parse_gguf_reference(model)
    assert says in str(caught.value)


def test_a_quant_resolves_to_its_one_file_in_the_hub_cache(tmp_path):
    cache = gguf_cache(
        tmp_path, "qwen2.5-0.5b-instruct-q4_k_m.gguf", "qwen2.5-0.5b-instruct-q8_0.gguf"
    )
    snapshot = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / REV
    settings = settings_for(tmp_path)
    for model, name in [
        (f"{REPO}:Q4_K_M", "qwen2.5-0.5b-instruct-q4_k_m.gguf"),
        (f"{REPO}:qwen2.5-0.5b-instruct-q8_0.gguf", "qwen2.5-0.5b-instruct-q8_0.gguf"),
    ]:
        spec = llama_spec(model, cache)
        argv = build_argv(spec, settings, "chat", 20001)
        assert argv[argv.index("--model") + 1] == str(snapshot / name)
        assert argv[argv.index("--model_alias") + 1] == model
        assert KINDS["llama-cpp"].missing_model(spec, settings) is None


def test_a_split_model_resolves_to_its_first_shard(tmp_path):
    cache = gguf_cache(tmp_path, "m-q4_k_m-00001-of-00002.gguf", "m-q4_k_m-00002-of-00002.gguf")
    spec = llama_spec(f"{REPO}:Q4_K_M", cache)
    model = KINDS["llama-cpp"].model(spec, settings_for(tmp_path)).argument
    assert model.endswith("m-q4_k_m-00001-of-00002.gguf")


def test_models_paths_come_before_the_hub_cache(tmp_path):
    cache = gguf_cache(tmp_path, "m-q4_k_m.gguf")
    root = tmp_path / "models"
    (root / REPO).mkdir(parents=True)
    (root / REPO / "m-q4_k_m.gguf").write_bytes(b"GGUF")
    spec = llama_spec(f"{REPO}:Q4_K_M", cache)
    model = KINDS["llama-cpp"].model(spec, settings_for(tmp_path, root)).argument
    assert model == str(root / REPO / "m-q4_k_m.gguf")


def test_an_ambiguous_quant_names_the_files(tmp_path):
    cache = gguf_cache(tmp_path, "a-q4_k_m.gguf", "b-q4_k_m.gguf")
    reason = KINDS["llama-cpp"].missing_model(
        llama_spec(f"{REPO}:Q4_K_M", cache), settings_for(tmp_path)
    )
    assert reason is not None and "matches 2 files" in reason and "a-q4_k_m.gguf" in reason


def test_a_missing_file_says_how_to_download_it(tmp_path):
    cache = gguf_cache(tmp_path, "m-q8_0.gguf")
    settings = settings_for(tmp_path)
    reason = KINDS["llama-cpp"].missing_model(llama_spec(f"{REPO}:Q4_K_M", cache), settings)
    assert reason is not None
    assert f"sagellm model download {REPO} --allow-patterns '*Q4_K_M*.gguf,*q4_k_m*.gguf'" in reason
    assert str(cache) in reason
    reason = KINDS["llama-cpp"].missing_model(llama_spec(f"{REPO}:x.gguf", cache), settings)
    assert reason is not None and "--allow-patterns 'x.gguf'" in reason
    reason = KINDS["llama-cpp"].missing_model(llama_spec(str(tmp_path / "no.gguf")), settings)
    assert reason is not None and "is not a file" in reason
    reason = KINDS["llama-cpp"].missing_model(llama_spec(REPO), settings)
    assert reason is not None and "REPO:QUANT" in reason


def test_the_cpu_preset_names_one_gguf_file_and_reserves_no_gpu():
    (chat,) = catalogue(None)["qwen-cpu"].preset.engines
    ref = parse_gguf_reference(chat.model)
    assert (ref.repo, ref.quant) == (REPO, "Q4_K_M")
    assert not wants_gpu(chat)


def test_check_spec_rejects_what_the_kind_cannot_run():
    with pytest.raises(SpecError) as caught:
        check_spec(llama_spec(REPO), "engines[0]")
    assert caught.value.errors[0].startswith("engines[0].model: ")
    check_spec(llama_spec(f"{REPO}:Q4_K_M"), "engines[0]")
    # Other kinds take any model id.
    check_spec(EngineSpec(name="c", model=REPO), "c")


def test_only_vllm_can_sleep_and_sleep_mode_adds_its_flag_and_env(tmp_path):
    settings = settings_for(tmp_path)
    sleeper = EngineSpec(name="c", model="m/x", idle_s=5.0, idle_action="sleep")
    check_spec(sleeper, "c")
    argv = kind_for("vllm").argv(sleeper, settings, "c", 20001)
    env = kind_for("vllm").env(sleeper, settings, "c", 20001)
    assert "--enable-sleep-mode" in argv and env["VLLM_SERVER_DEV_MODE"] == "1"
    stopper = replace(sleeper, idle_action="stop")
    assert "--enable-sleep-mode" not in kind_for("vllm").argv(stopper, settings, "c", 20001)
    assert "VLLM_SERVER_DEV_MODE" not in kind_for("vllm").env(stopper, settings, "c", 20001)
    with pytest.raises(SpecError) as caught:
        check_spec(replace(sleeper, kind="embedding", runtime="embedding"), "engines[0]")
    assert caught.value.errors == [
        "engines[0].idle_action: 'sleep' needs a runtime with sleep mode (vllm); runtime"
        " 'embedding' has none, use idle_action: stop"
    ]


def test_vllm_serves_the_names_its_extra_args_give():
    vllm = KINDS["vllm"]
    assert vllm.served_model_names(EngineSpec(name="c", model="org/m")) == ("org/m",)
    named = EngineSpec(name="c", model="org/m", extra_args=("--served-model-name", "a", "b", "--x"))
    assert vllm.served_model_names(named) == ("a", "b")
    equals = EngineSpec(name="c", model="org/m", extra_args=("--served-model-name=a",))
    assert vllm.served_model_names(equals) == ("a",)


def test_a_path_under_an_unknown_users_home_is_just_missing(tmp_path):
    spec = llama_spec("~no-such-user-here/m.gguf")
    assert KINDS["llama-cpp"].spec_problems(spec) == []
    reason = KINDS["llama-cpp"].missing_model(spec, settings_for(tmp_path))
    assert reason is not None and "is not a file" in reason
