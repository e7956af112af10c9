"""What a model directory says about itself: kind, parameter count and size on disk."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from sagellmd.gpu.estimate import parameters_from_config, safetensors_header

# Files sentence-transformers writes next to the weights; their presence settles the kind.
SENTENCE_TRANSFORMERS_FILES = (
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
)
# Encoder-only families: without a generation head they are used for embeddings here.
ENCODER_MODEL_TYPES = frozenset(
    {
        "bert",
        "roberta",
        "xlm-roberta",
        "distilbert",
        "mpnet",
        "electra",
        "deberta",
        "deberta-v2",
        "camembert",
        "nomic_bert",
        "modernbert",
        "new",  # Alibaba-NLP/gte-*: a BERT variant registered as "new"
    }
)
GENERATIVE_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# Files whose presence makes a directory a model directory (GGUF for llama.cpp-like runtimes).
MODEL_MARKERS = ("config.json", "modules.json")
WEIGHT_SUFFIXES = (".safetensors", ".gguf")


def looks_like_model(directory: Path) -> bool:
    """A directory with a config.json/modules.json or weights directly inside it."""
    if not directory.is_dir():
        return False
    if any((directory / name).is_file() for name in MODEL_MARKERS):
        return True
    try:
        return any(entry.name.endswith(WEIGHT_SUFFIXES) for entry in directory.iterdir())
    except OSError:
        return False


WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def has_weights(directory: Path) -> bool:
    """Every shard its index names, or else any weights file, is present (not a partial copy).

    A download with --allow-patterns '*.json' leaves a snapshot without weights; handing that
    to an engine would fail where passing the id lets the engine fetch the rest.
    """
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        return all((directory / shard).is_file() for shard in shards)
    return any(
        path.suffix in WEIGHT_FILE_SUFFIXES and path.is_file() for path in directory.rglob("*")
    )


def read_config(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def guess_kind(directory: Path, config: dict[str, Any] | None = None) -> str | None:
    """'embedding', 'llm' or None: from sentence-transformers files, then config.json."""
    if any((directory / name).is_file() for name in SENTENCE_TRANSFORMERS_FILES):
        return "embedding"
    config = read_config(directory) if config is None else config
    if not config:
        return None
    architectures = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith(GENERATIVE_SUFFIXES) for a in architectures):
        return "llm"
    model_type = str(config.get("model_type") or "").lower()
    if model_type in ENCODER_MODEL_TYPES:
        return "embedding"
    if any(a.endswith("Model") and not a.endswith("PreTrainedModel") for a in architectures):
        # A bare backbone (BertModel, XLMRobertaModel): hidden states out, i.e. embeddings.
        return "embedding"
    return None


def parameters_from_safetensors(directory: Path) -> int | None:
    """Sum of tensor element counts over the safetensors headers (the data is never read)."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    try:
        for path in files:
            for name, tensor in safetensors_header(path).items():
                if name != "__metadata__":
                    total += math.prod(tensor.get("shape") or [])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return total or None


def parameter_count(directory: Path, kind: str | None, config: dict[str, Any] | None) -> int | None:
    """From the weights' headers, else (decoder-only models) from config.json's shape fields."""
    counted = parameters_from_safetensors(directory)
    if counted:
        return counted
    # The config formula assumes a decoder stack; for encoders it would be a wrong number.
    if kind == "llm" and config:
        return parameters_from_config(config)
    return None


def directory_size(directory: Path) -> int:
    """Bytes of the files under `directory`, symlinked files counted by their target."""
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                continue  # a dangling link or a file removed while walking
    return total
