"""Per-GPU memory estimates of an engine, from weights on disk, config.json or the name."""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagellmd.spec import EngineSpec

GIB = 1024**3

DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "fp32": 4,
    "float16": 2,
    "fp16": 2,
    "half": 2,
    "bfloat16": 2,
    "bf16": 2,
    "float8_e4m3fn": 1,
    "fp8": 1,
    "int8": 1,
}


@dataclass(frozen=True)
class EstimateSettings:
    """Budgets added on top of the weights (GiB per GPU)."""

    kv_cache_gb: float = 4.0
    overhead_gb: float = 1.0
    model_paths: tuple[Path, ...] = ()  # config's models.paths, searched before the hub cache


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU bytes an engine needs, and where the figure came from."""

    per_gpu_bytes: int
    source: str  # "gpu_memory_gb", "safetensors", "config.json", "name"
    detail: str

    @property
    def per_gpu_gb(self) -> float:
        return self.per_gpu_bytes / GIB


class EstimateError(Exception):
    """No source gave a size; the message says how to give one."""


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def local_model_dir(model: str, cache: Path | None = None) -> Path | None:
    """The directory holding the model's files: a local path or a Hugging Face cache snapshot."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if "/" not in model or model.startswith(("/", ".")):
        return None
    repo = (cache or hub_cache_dir()) / ("models--" + model.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    main = repo / "refs" / "main"
    if main.is_file():
        revision = main.read_text().strip()
        if (snapshots / revision).is_dir():
            return snapshots / revision
    candidates = sorted(p for p in snapshots.iterdir() if p.is_dir())
    return candidates[-1] if candidates else None


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file; the tensor data is never read."""
    with path.open("rb") as handle:
        raw_length = handle.read(8)
        if len(raw_length) != 8:
            raise ValueError(f"{path}: too short to be safetensors")
        (length,) = struct.unpack("<Q", raw_length)
        if length > 100 * 1024 * 1024:
            raise ValueError(f"{path}: header of {length} bytes is not plausible")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise ValueError(f"{path}: safetensors header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header is not a JSON object")
    return header


def weight_bytes_from_safetensors(directory: Path) -> int | None:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if isinstance(total, int) and total > 0:
            return total
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        for name, tensor in safetensors_header(path).items():
            if name != "__metadata__":
                begin, end = tensor["data_offsets"]
                total += end - begin
    return total or None


def parameters_from_config(config: dict[str, Any]) -> int | None:
    """Parameter count of a decoder-only transformer from its architecture fields."""
    text = config.get("text_config", config)
    hidden = text.get("hidden_size") or text.get("n_embd") or text.get("d_model")
    layers = text.get("num_hidden_layers") or text.get("n_layer") or text.get("num_layers")
    vocab = text.get("vocab_size")
    if not (hidden and layers and vocab):
        return None
    heads = text.get("num_attention_heads") or text.get("n_head") or 1
    kv_heads = text.get("num_key_value_heads") or heads
    head_dim = text.get("head_dim") or hidden // heads
    intermediate = text.get("intermediate_size") or text.get("n_inner") or 4 * hidden
    experts = text.get("num_local_experts") or text.get("num_experts") or 1
    moe_intermediate = text.get("moe_intermediate_size") or intermediate
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    if experts > 1:
        mlp = experts * 3 * hidden * moe_intermediate + hidden * experts
    else:
        mlp = 3 * hidden * intermediate
    embeddings = vocab * hidden * (1 if text.get("tie_word_embeddings", False) else 2)
    return embeddings + layers * (attention + mlp + 2 * hidden)


def _bytes_per_parameter(config: dict[str, Any]) -> int:
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").lower()
    return DTYPE_BYTES.get(dtype.replace("torch.", ""), 2)


# `A2.7B` in `Qwen1.5-MoE-A2.7B` or `Qwen3-30B-A3B`: the active parameters of a mixture of
# experts, while the memory holds all of them.
_ACTIVE = re.compile(r"(?<![A-Za-z\d.])A\d+(?:\.\d+)?[bB](?![a-zA-Z])")
_MOE_NAME = re.compile(r"(?<![\d.])(\d+)x(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")
_BILLIONS = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[bB](?![a-zA-Z])")
_MILLIONS = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)[mM](?![a-zA-Z])")


def parameters_from_name(model: str) -> int | None:
    """'7B' -> 7e9, '1.5B' -> 1.5e9, '8x7B' -> 56e9, '360M' -> 3.6e8; None if no count.

    An active count (`A3B`) is no total: `30B-A3B` is 30e9, `MoE-A2.7B` alone is None.
    """
    name = _ACTIVE.sub("-", model.rsplit("/", 1)[-1])
    if match := _MOE_NAME.search(name):
        return int(int(match.group(1)) * float(match.group(2)) * 1e9)
    if match := _BILLIONS.search(name):
        return int(float(match.group(1)) * 1e9)
    if match := _MILLIONS.search(name):
        return int(float(match.group(1)) * 1e6)
    return None


def models_paths_dir(model: str, roots: tuple[Path, ...]) -> Path | None:
    """`<root>/<org>/<name>` under the first models.paths root that holds weights or a config.

    The engine resolves its model in the same order (models/resolve.py: find_local), which
    cannot be imported here: models/ builds on these estimates.
    """
    parts = Path(model).parts
    if model.startswith(("/", ".", "~")) or not parts or ".." in parts:
        return None
    for root in roots:
        candidate = root / model
        if (candidate / "config.json").is_file() or any(candidate.glob("*.safetensors")):
            return candidate
    return None


def _model_dir(spec: EngineSpec, settings: EstimateSettings, cache: Path | None) -> Path | None:
    return models_paths_dir(spec.model, settings.model_paths) or local_model_dir(spec.model, cache)


def _weights(
    spec: EngineSpec, settings: EstimateSettings, cache: Path | None
) -> tuple[int, str, str]:
    directory = _model_dir(spec, settings, cache)
    if directory is not None:
        from_headers = weight_bytes_from_safetensors(directory)
        if from_headers:
            return from_headers, "safetensors", f"weights {from_headers / GIB:.2f} GiB"
        config_path = directory / "config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text())
            parameters = parameters_from_config(config)
            if parameters:
                size = parameters * _bytes_per_parameter(config)
                return size, "config.json", f"{parameters / 1e9:.2f}B parameters"
    parameters = parameters_from_name(spec.model)
    if parameters:
        return parameters * 2, "name", f"{parameters / 1e9:g}B parameters from the name, fp16"
    if _ACTIVE.search(spec.model.rsplit("/", 1)[-1]):
        raise EstimateError(
            f"cannot estimate the GPU memory of {spec.model!r}: its name gives only the active"
            " parameters of a mixture of experts, not all it holds; download it (`sagellm"
            " model download`) or set gpu_memory_gb in the spec"
        )
    raise EstimateError(
        f"cannot estimate the GPU memory of {spec.model!r}: no local weights or config.json"
        " and no parameter count in its name; set gpu_memory_gb in the spec"
    )


def estimate_memory(
    spec: EngineSpec, settings: EstimateSettings = EstimateSettings(), cache: Path | None = None
) -> MemoryEstimate:
    """Per-GPU memory: weights / (tp x pp) + KV-cache budget + runtime overhead."""
    if spec.gpu_memory_gb is not None:
        return MemoryEstimate(int(spec.gpu_memory_gb * GIB), "gpu_memory_gb", "set in the spec")
    weights, source, detail = _weights(spec, settings, cache)
    shards = spec.tensor_parallel * spec.pipeline_parallel
    kv_cache = settings.kv_cache_gb if spec.kind == "llm" else 0.0
    per_gpu = weights / shards + (kv_cache + settings.overhead_gb) * GIB
    detail += f" / {shards} GPU(s) + {kv_cache:g} GiB KV cache + {settings.overhead_gb:g} GiB"
    return MemoryEstimate(int(per_gpu), source, detail)
