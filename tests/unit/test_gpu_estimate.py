"""Owns the tests of sagellmd/gpu/estimate.py: per-GPU memory from headers, config.json or name.

Every model on disk is written by the test: safetensors files with a real header and a
sparse (or missing) data region, config.json files, and a fake Hugging Face cache.
"""

from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path

import pytest

from sagellmd.desired import DesiredEngine
from sagellmd.gpu.accounting import EstimateCache
from sagellmd.gpu.estimate import (
    GIB,
    EstimateError,
    EstimateSettings,
    estimate_memory,
    local_model_dir,
    parameters_from_config,
    parameters_from_name,
    safetensors_header,
    weight_bytes_from_safetensors,
)
from sagellmd.spec import EngineSpec, parse_engine

MIB = 1024**2
# Weights only: no KV-cache budget, no runtime overhead.
BARE = EstimateSettings(kv_cache_gb=0.0, overhead_gb=0.0)
DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1}

QWEN2_5_1_5B = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 1536,
    "num_hidden_layers": 28,
    "vocab_size": 151936,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "intermediate_size": 8960,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}
LLAMA_3_8B = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "vocab_size": 128256,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}
MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"],
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "vocab_size": 32000,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "intermediate_size": 14336,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def write_safetensors(
    path: Path,
    tensors: dict[str, tuple[str, list[int]]],
    data: str = "sparse",
    metadata: dict[str, str] | None = None,
) -> int:
    """Write a safetensors file; return the size of its data region (the sum of spans).

    data="sparse": the data region has its full length but no blocks on disk;
    data="missing": the file ends right after the header.
    """
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape) in tensors.items():
        size = DTYPE_SIZES[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8-byte alignment
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        if data == "sparse":
            handle.truncate(8 + len(raw) + offset)
    return offset


def small_tensors(prefix: str = "model") -> dict[str, tuple[str, list[int]]]:
    # 2 MiB + 1 MiB + 64 KiB + 4 KiB: a few MiB in all.
    return {
        f"{prefix}.embed_tokens.weight": ("BF16", [1024, 1024]),
        f"{prefix}.layers.0.mlp.weight": ("F32", [512, 512]),
        f"{prefix}.layers.0.norm.weight": ("F16", [32768]),
        f"{prefix}.lm_head.bias": ("I8", [4096]),
    }


def llm(model: str, **fields) -> EngineSpec:
    return parse_engine({"name": "chat", "model": model, **fields})


def model_dir(tmp_path: Path, name: str = "model") -> Path:
    directory = tmp_path / name
    directory.mkdir()
    return directory


def write_config(directory: Path, config: dict) -> Path:
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def true_parameter_count(config: dict) -> int:
    """Count a llama-style decoder matrix by matrix, independently of the code under test."""
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads", heads)
    head_dim = hidden // heads
    intermediate = config["intermediate_size"]
    experts = config.get("num_local_experts", 1)
    q_proj = hidden * heads * head_dim
    k_proj = v_proj = hidden * kv_heads * head_dim
    o_proj = heads * head_dim * hidden
    gate = up = hidden * intermediate
    down = intermediate * hidden
    router = hidden * experts if experts > 1 else 0
    mlp = experts * (gate + up + down) + router
    norms = 2 * hidden
    layer = q_proj + k_proj + v_proj + o_proj + mlp + norms
    embed = config["vocab_size"] * hidden
    lm_head = 0 if config.get("tie_word_embeddings") else embed
    final_norm = hidden
    return embed + config["num_hidden_layers"] * layer + final_norm + lm_head


# -- safetensors headers -------------------------------------------------------------


def test_estimate_from_safetensors_is_the_sum_of_data_offsets_spans(tmp_path):
    directory = model_dir(tmp_path)
    expected = write_safetensors(
        directory / "model.safetensors", small_tensors(), metadata={"format": "pt"}
    )
    assert expected == 2 * MIB + MIB + 64 * 1024 + 4096

    estimate = estimate_memory(llm(str(directory)), BARE)

    assert estimate.source == "safetensors"
    assert estimate.per_gpu_bytes == expected
    assert "GiB" in estimate.detail


def test_the_test_files_are_real_safetensors(tmp_path):
    safetensors = pytest.importorskip("safetensors")
    pytest.importorskip("numpy")
    path = tmp_path / "model.safetensors"
    write_safetensors(path, small_tensors(), metadata={"format": "pt"})

    with safetensors.safe_open(str(path), framework="numpy") as opened:
        assert sorted(opened.keys()) == sorted(small_tensors())
        assert opened.metadata() == {"format": "pt"}


def test_only_headers_are_read_large_sparse_data_region(tmp_path):
    directory = model_dir(tmp_path)
    tensors = {
        "embed.weight": ("BF16", [128 * 1024, 4096]),  # 1 GiB
        "layers.0.weight": ("F32", [32768, 16384]),  # 2 GiB
    }
    expected = write_safetensors(directory / "model.safetensors", tensors, data="sparse")
    path = directory / "model.safetensors"
    assert path.stat().st_size > 3 * GIB
    # Sparse: the 3 GiB were never written, so reading them would be all the test costs.
    assert path.stat().st_blocks * 512 < 16 * MIB

    assert weight_bytes_from_safetensors(directory) == expected == 3 * GIB


def test_only_headers_are_read_data_region_absent(tmp_path):
    """A file cut right after its header still gives the full size: the data is never touched."""
    directory = model_dir(tmp_path)
    expected = write_safetensors(directory / "model.safetensors", small_tensors(), data="missing")
    header_length = struct.unpack("<Q", (directory / "model.safetensors").read_bytes()[:8])[0]
    assert (directory / "model.safetensors").stat().st_size == 8 + header_length

    assert estimate_memory(llm(str(directory)), BARE).per_gpu_bytes == expected


def test_unsharded_files_are_summed_without_an_index(tmp_path):
    directory = model_dir(tmp_path)
    first = write_safetensors(directory / "model-00001-of-00002.safetensors", small_tensors("a"))
    second = write_safetensors(directory / "model-00002-of-00002.safetensors", small_tensors("b"))

    assert weight_bytes_from_safetensors(directory) == first + second


def test_sharded_model_uses_index_total_size(tmp_path):
    directory = model_dir(tmp_path)
    # The shards' headers say a few MiB; the index speaks for the whole model.
    write_safetensors(directory / "model-00001-of-00002.safetensors", small_tensors("a"))
    write_safetensors(directory / "model-00002-of-00002.safetensors", small_tensors("b"))
    total = 15_231_233_024
    index = {
        "metadata": {"total_size": total},
        "weight_map": {
            "a.embed_tokens.weight": "model-00001-of-00002.safetensors",
            "b.embed_tokens.weight": "model-00002-of-00002.safetensors",
        },
    }
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))

    estimate = estimate_memory(llm(str(directory)), BARE)

    assert estimate.source == "safetensors"
    assert estimate.per_gpu_bytes == total


def test_index_alone_is_enough(tmp_path):
    directory = model_dir(tmp_path)
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": 3 * GIB}, "weight_map": {}})
    )

    assert weight_bytes_from_safetensors(directory) == 3 * GIB


def test_safetensors_win_over_config_json(tmp_path):
    directory = model_dir(tmp_path)
    expected = write_safetensors(directory / "model.safetensors", small_tensors())
    write_config(directory, QWEN2_5_1_5B)

    estimate = estimate_memory(llm(str(directory)), BARE)

    assert (estimate.source, estimate.per_gpu_bytes) == ("safetensors", expected)


# -- config.json ---------------------------------------------------------------------


def test_parameters_of_a_small_config_match_a_matrix_by_matrix_count():
    config = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "vocab_size": 1000,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "tie_word_embeddings": False,
    }
    expected = true_parameter_count(config)
    assert expected == 202_048  # worked by hand: 2 x 36_992 + 2 x 64_000 + 64

    counted = parameters_from_config(config)

    # The code leaves out the final norm (`hidden` parameters): a rounding error.
    assert counted is not None
    assert abs(counted - expected) <= config["hidden_size"]


@pytest.mark.parametrize(
    ("config", "published"),
    [
        pytest.param(QWEN2_5_1_5B, 1.54e9, id="Qwen2.5-1.5B"),
        pytest.param(LLAMA_3_8B, 8.03e9, id="Llama-3-8B"),
        pytest.param(MIXTRAL_8X7B, 46.7e9, id="Mixtral-8x7B"),
    ],
)
def test_parameters_of_real_configs_are_close_to_the_published_count(config, published):
    counted = parameters_from_config(config)

    assert counted is not None
    assert abs(counted - published) / published < 0.05
    assert abs(counted - true_parameter_count(config)) / true_parameter_count(config) < 1e-3


def test_moe_config_counts_every_expert():
    dense = {key: value for key, value in MIXTRAL_8X7B.items() if key != "num_local_experts"}

    moe = parameters_from_config(MIXTRAL_8X7B)
    single = parameters_from_config(dense)

    assert moe is not None and single is not None
    mlp_per_layer = 3 * 4096 * 14336
    # Seven more copies of the MLP in each of 32 layers, plus the routers.
    assert moe - single == 32 * (7 * mlp_per_layer + 4096 * 8)


def test_estimate_from_config_json_only(tmp_path):
    directory = model_dir(tmp_path)
    write_config(directory, QWEN2_5_1_5B)

    estimate = estimate_memory(llm(str(directory)), BARE)

    assert estimate.source == "config.json"
    assert estimate.per_gpu_bytes == parameters_from_config(QWEN2_5_1_5B) * 2  # bfloat16
    assert "1.54B parameters" in estimate.detail


def test_config_dtype_sets_bytes_per_parameter(tmp_path):
    half = model_dir(tmp_path, "half")
    full = model_dir(tmp_path, "full")
    write_config(half, QWEN2_5_1_5B)
    write_config(full, {**QWEN2_5_1_5B, "torch_dtype": "float32"})

    half_bytes = estimate_memory(llm(str(half)), BARE).per_gpu_bytes
    full_bytes = estimate_memory(llm(str(full)), BARE).per_gpu_bytes

    assert full_bytes == 2 * half_bytes


def test_config_json_without_architecture_fields_falls_back_to_the_name(tmp_path):
    directory = model_dir(tmp_path, "tiny-0.5B")
    write_config(directory, {"model_type": "unknown"})

    estimate = estimate_memory(llm(str(directory)), BARE)

    assert (estimate.source, estimate.per_gpu_bytes) == ("name", 1_000_000_000)


# -- the Hugging Face cache ----------------------------------------------------------


def fake_hub(root: Path, repo: str, config: dict, revision: str = "0123abcd") -> Path:
    """A cache laid out like huggingface_hub's: blobs, symlinked snapshots, refs/main."""
    base = root / ("models--" + repo.replace("/", "--"))
    (base / "blobs").mkdir(parents=True)
    (base / "refs").mkdir()
    blob = base / "blobs" / "c0ffee"
    blob.write_text(json.dumps(config))
    snapshot = base / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").symlink_to(Path("..", "..", "blobs", "c0ffee"))
    (base / "refs" / "main").write_text(revision + "\n")
    return snapshot


def test_model_in_the_hub_cache_passed_as_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hub = tmp_path / "hub"
    snapshot = fake_hub(hub, "Qwen/Qwen2.5-1.5B-Instruct", QWEN2_5_1_5B)

    assert local_model_dir("Qwen/Qwen2.5-1.5B-Instruct", hub) == snapshot
    estimate = estimate_memory(llm("Qwen/Qwen2.5-1.5B-Instruct"), BARE, cache=hub)

    # Not 3.0e9 from the "1.5B" in the name: the cache's config.json is used.
    assert estimate.source == "config.json"
    assert estimate.per_gpu_bytes == parameters_from_config(QWEN2_5_1_5B) * 2


def test_refs_main_picks_the_snapshot(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hub = tmp_path / "hub"
    fake_hub(hub, "org/model", QWEN2_5_1_5B, revision="bbbb")
    # An older snapshot that sorts last must not be taken over the one refs/main names.
    stale = hub / "models--org--model" / "snapshots" / "zzzz"
    stale.mkdir()
    write_config(stale, LLAMA_3_8B)

    estimate = estimate_memory(llm("org/model"), BARE, cache=hub)

    assert estimate.per_gpu_bytes == parameters_from_config(QWEN2_5_1_5B) * 2


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_hub_cache_from_the_environment(tmp_path, monkeypatch, variable):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    hub = tmp_path / "hf" / ("hub" if variable == "HF_HOME" else "cache")
    fake_hub(hub, "mistralai/Mixtral-8x7B-v0.1", MIXTRAL_8X7B)
    monkeypatch.setenv(variable, str(hub.parent if variable == "HF_HOME" else hub))

    estimate = estimate_memory(llm("mistralai/Mixtral-8x7B-v0.1"), BARE)

    assert estimate.source == "config.json"
    assert estimate.per_gpu_bytes == parameters_from_config(MIXTRAL_8X7B) * 2


def test_model_missing_from_the_cache_uses_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    estimate = estimate_memory(llm("Qwen/Qwen2.5-7B-Instruct"), BARE, cache=tmp_path / "empty")

    assert (estimate.source, estimate.per_gpu_bytes) == ("name", 14_000_000_000)


# -- the name, as a last resort ------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "parameters"),
    [
        ("Qwen/Qwen2.5-7B-Instruct", 7_000_000_000),
        ("Qwen/Qwen2.5-1.5B-Instruct", 1_500_000_000),
        ("Qwen/Qwen2.5-0.5B", 500_000_000),
        ("1.5B", 1_500_000_000),
        ("0.5B", 500_000_000),
        ("mistralai/Mixtral-8x7B", 56_000_000_000),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 56_000_000_000),
        ("meta-llama/Llama-2-7b-hf", 7_000_000_000),
        ("meta-llama/Meta-Llama-3.1-70B-Instruct", 70_000_000_000),
        ("HuggingFaceTB/SmolLM-360M", 360_000_000),
        ("facebook/opt-125m", 125_000_000),
        ("org/no-size-here", None),
        ("sentence-transformers/all-MiniLM-L6-v2", None),
        # Mixtures of experts: the active count (A3B) is not what the memory holds.
        ("Qwen/Qwen3-30B-A3B", 30_000_000_000),
        ("Qwen/Qwen3-235B-A22B-Instruct-2507", 235_000_000_000),
        ("Qwen/Qwen1.5-MoE-A2.7B", None),
        ("Qwen/Qwen1.5-MoE-A2.7B-Chat", None),
    ],
)
def test_parameters_from_name(model, parameters):
    assert parameters_from_name(model) == parameters


def test_estimate_from_name_assumes_fp16(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    estimate = estimate_memory(llm("HuggingFaceTB/SmolLM-360M"), BARE, cache=tmp_path)

    assert estimate.source == "name"
    assert estimate.per_gpu_bytes == 720_000_000
    assert "from the name" in estimate.detail


def test_no_source_at_all_says_to_set_gpu_memory_gb(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(EstimateError) as raised:
        estimate_memory(llm("org/no-size-here"), cache=tmp_path)

    assert "gpu_memory_gb" in str(raised.value)
    assert "org/no-size-here" in str(raised.value)


# -- budgets, overrides and sharding -------------------------------------------------


def test_gpu_memory_gb_overrides_every_other_source(tmp_path):
    directory = model_dir(tmp_path, "model-7B")
    write_safetensors(directory / "model.safetensors", small_tensors())
    write_config(directory, QWEN2_5_1_5B)

    estimate = estimate_memory(llm(str(directory), gpu_memory_gb=12.5, tensor_parallel=4))

    # Per GPU, as given: neither divided over tp nor topped up with budgets.
    assert estimate.source == "gpu_memory_gb"
    assert estimate.per_gpu_bytes == int(12.5 * GIB)
    assert estimate.per_gpu_gb == 12.5


def test_gpu_memory_gb_needs_no_files_and_no_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    estimate = estimate_memory(llm("org/no-size-here", gpu_memory_gb=3), cache=tmp_path)

    assert (estimate.source, estimate.per_gpu_bytes) == ("gpu_memory_gb", 3 * GIB)


@pytest.mark.parametrize(("tp", "pp"), [(1, 1), (2, 1), (1, 2), (2, 2), (4, 2)])
def test_weights_are_divided_over_tp_times_pp(tmp_path, monkeypatch, tp, pp):
    monkeypatch.chdir(tmp_path)
    settings = EstimateSettings(kv_cache_gb=4.0, overhead_gb=1.0)
    spec = llm("Qwen/Qwen2.5-7B-Instruct", tensor_parallel=tp, pipeline_parallel=pp)

    estimate = estimate_memory(spec, settings, cache=tmp_path)

    assert estimate.per_gpu_bytes == int(14e9 / (tp * pp) + 5 * GIB)
    assert f"/ {tp * pp} GPU(s)" in estimate.detail


def test_kv_cache_budget_only_for_llm(tmp_path):
    directory = model_dir(tmp_path)
    weights = write_safetensors(directory / "model.safetensors", small_tensors())
    settings = EstimateSettings(kv_cache_gb=6.0, overhead_gb=0.5)
    chat = parse_engine({"name": "chat", "model": str(directory)})
    embed = parse_engine(
        {"name": "embed", "kind": "embedding", "model": str(directory), "use_gpu": True}
    )

    assert estimate_memory(chat, settings).per_gpu_bytes == int(weights + 6.5 * GIB)
    assert estimate_memory(embed, settings).per_gpu_bytes == int(weights + 0.5 * GIB)
    assert "0 GiB KV cache" in estimate_memory(embed, settings).detail


def test_default_settings_add_kv_cache_and_overhead(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    estimate = estimate_memory(llm("org/model-1B"), cache=tmp_path)

    assert estimate.per_gpu_bytes == int(2e9 + 5 * GIB)
    assert "4 GiB KV cache + 1 GiB" in estimate.detail


def test_every_estimate_names_its_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = model_dir(tmp_path, "weights")
    write_safetensors(weights / "model.safetensors", small_tensors())
    config = model_dir(tmp_path, "config")
    write_config(config, QWEN2_5_1_5B)
    hub = tmp_path / "hub"
    fake_hub(hub, "org/cached", QWEN2_5_1_5B)

    sources = {
        "gpu_memory_gb": estimate_memory(llm(str(weights), gpu_memory_gb=1), cache=hub),
        "safetensors": estimate_memory(llm(str(weights)), cache=hub),
        "config.json": estimate_memory(llm(str(config)), cache=hub),
        "config.json (cache)": estimate_memory(llm("org/cached"), cache=hub),
        "name": estimate_memory(llm("org/model-3B"), cache=hub),
    }

    assert {name: estimate.source for name, estimate in sources.items()} == {
        "gpu_memory_gb": "gpu_memory_gb",
        "safetensors": "safetensors",
        "config.json": "config.json",
        "config.json (cache)": "config.json",
        "name": "name",
    }
    assert all(estimate.detail for estimate in sources.values())


# -- broken files: an error message for the engine, never a crash --------------------


def desired(model: str, **fields) -> DesiredEngine:
    spec = llm(model, **fields)
    return DesiredEngine("chat", None, spec)


def test_garbage_safetensors_header_raises_value_error_naming_the_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(random.Random(3).randbytes(256))

    with pytest.raises(ValueError, match="model.safetensors"):
        safetensors_header(path)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(random.Random(3).randbytes(256), id="random-bytes"),
        pytest.param(b"\x01\x02", id="too-short"),
        pytest.param(struct.pack("<Q", 32) + b"\xff\xfe not json at all !!!!!!!!", id="not-json"),
        pytest.param(struct.pack("<Q", 4096) + b'{"w": {"dtype": ', id="header-cut-short"),
    ],
)
def test_corrupt_safetensors_gives_the_engine_a_message(tmp_path, content):
    directory = model_dir(tmp_path)
    (directory / "model.safetensors").write_bytes(content)
    estimates = EstimateCache(BARE)

    outcome = estimates.get(desired(str(directory)))

    assert isinstance(outcome, str) and outcome


def test_corrupt_safetensors_message_names_the_file(tmp_path):
    directory = model_dir(tmp_path)
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", 8) + b"garbage!")

    outcome = EstimateCache(BARE).get(desired(str(directory)))

    assert isinstance(outcome, str)
    assert "model.safetensors" in outcome


@pytest.mark.parametrize(
    ("name", "content"),
    [
        pytest.param("model.safetensors", {"w": {"dtype": "F16", "shape": [2]}}, id="no-offsets"),
        pytest.param("model.safetensors", [1, 2, 3], id="header-is-a-list"),
        pytest.param("model.safetensors", {"w": 5}, id="tensor-is-a-number"),
        pytest.param("config.json", [1, 2, 3], id="config-is-a-list"),
        pytest.param(
            "config.json",
            {"hidden_size": "1536", "num_hidden_layers": 2, "vocab_size": 10},
            id="config-field-is-a-string",
        ),
        pytest.param("model.safetensors.index.json", {"metadata": None}, id="index-null"),
    ],
)
def test_json_of_the_wrong_shape_gives_the_engine_a_message(tmp_path, name, content):
    directory = model_dir(tmp_path)
    if name.endswith(".safetensors"):
        raw = json.dumps(content).encode()
        (directory / name).write_bytes(struct.pack("<Q", len(raw)) + raw)
    else:
        (directory / name).write_text(json.dumps(content))

    outcome = EstimateCache(BARE).get(desired(str(directory)))

    assert isinstance(outcome, str) and outcome


def test_estimate_cache_reads_files_once_per_spec(tmp_path):
    directory = model_dir(tmp_path)
    weights = write_safetensors(directory / "model.safetensors", small_tensors())
    estimates = EstimateCache(BARE)
    engine = desired(str(directory))

    first = estimates.get(engine)
    (directory / "model.safetensors").unlink()
    second = estimates.get(engine)

    assert not isinstance(first, str)
    assert first == second
    assert first.per_gpu_bytes == weights


def test_estimate_cache_keeps_the_no_source_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))

    outcome = EstimateCache(BARE).get(desired("org/no-size-here"))

    assert isinstance(outcome, str)
    assert "gpu_memory_gb" in outcome


def test_a_moe_name_with_only_its_active_count_asks_for_the_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))

    with pytest.raises(EstimateError) as raised:
        estimate_memory(llm("Qwen/Qwen1.5-MoE-A2.7B"), BARE)

    assert "active" in str(raised.value) and "gpu_memory_gb" in str(raised.value)


def test_models_paths_are_searched_like_the_engine_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    root = tmp_path / "models"
    directory = root / "org" / "chat-7B"
    directory.mkdir(parents=True)
    weights = write_safetensors(directory / "model.safetensors", small_tensors())
    settings = EstimateSettings(kv_cache_gb=0, overhead_gb=0, model_paths=(root,))

    estimate = estimate_memory(llm("org/chat-7B"), settings)

    # Not 14 GB from the "7B" in the name: the weights under models.paths.
    assert estimate.source == "safetensors"
    assert estimate.per_gpu_bytes == weights
    assert estimate_memory(llm("org/chat-7B"), BARE).source == "name"
    assert estimate_memory(llm("../chat-7B"), settings).source == "name"


def test_a_model_downloaded_after_a_name_estimate_is_measured_by_its_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    estimates = EstimateCache(BARE)
    engine = desired("Qwen/Qwen2.5-1.5B-Instruct")

    before = estimates.get(engine)
    fake_hub(hub, "Qwen/Qwen2.5-1.5B-Instruct", QWEN2_5_1_5B)  # `sagellm model download`
    after = estimates.get(engine)

    assert not isinstance(before, str) and before.source == "name"
    assert not isinstance(after, str) and after.source == "config.json"
