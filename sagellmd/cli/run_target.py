"""What `sagellm run MODEL` declares when no engine serves MODEL: its name, kind and runtime,
guessed from the model's name alone (pure: no daemon, no disk), each overridable."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sagellmd.errors import BadInputError
from sagellmd.spec import NAME_RULE, is_valid_name, name_from_model, reserved_engine_id_problem

# The start policy of the engines `sagellm run` declares: they run only while used.
AD_HOC_START: dict[str, Any] = {"start": "on-demand"}

# Sentence-transformers models and the common embedding families, by their names.
EMBEDDING_NAMES = re.compile(
    r"(^|/)sentence-transformers/|embed|minilm|(^|/)bge-|(^|/)e5-|(^|/)gte-", re.IGNORECASE
)
GGUF = ".gguf"
KINDS = ("llm", "embedding")


@dataclass(frozen=True)
class RunTarget:
    """The ad-hoc engine to declare: its id and spec (the body of PUT /v1/engines/{id})."""

    name: str
    kind: str
    runtime: str | None  # None: the daemon's default for the kind
    spec: dict[str, Any]

    def describe(self) -> str:
        runtime = self.runtime or ("vllm" if self.kind == "llm" else "embedding")
        start = self.spec.get("start", "always")
        return f"{self.kind} on {runtime}" + (f", {start}" if start != "always" else "")


def is_gguf(model: str) -> bool:
    """A .gguf file, `REPO:FILE.gguf`, or `REPO:QUANT` of a GGUF repo (llama.cpp's forms)."""
    repo, sep, rest = model.partition(":")
    if model.lower().endswith(GGUF):
        return True
    return bool(sep) and "gguf" in repo.lower() and bool(rest) and "/" not in rest


def is_embedding(model: str) -> bool:
    return EMBEDDING_NAMES.search(model) is not None


def engine_name(model: str) -> str:
    """`Qwen/Qwen2.5-0.5B-Instruct` -> `qwen2-5-0-5b-instruct`; for GGUF the file's stem
    (`REPO:qwen2.5-0.5b-instruct-q4_k_m.gguf` -> `qwen2-5-0-5b-instruct-q4-k-m`)."""
    repo, sep, rest = model.partition(":")
    if sep and rest.lower().endswith(GGUF):
        return name_from_model(rest[: -len(GGUF)])
    if sep and is_gguf(model):
        return name_from_model(f"{repo}-{rest}")
    if model.lower().endswith(GGUF):
        return name_from_model(model[: -len(GGUF)])
    return name_from_model(model)


def run_target(
    model: str, kind: str | None = None, runtime: str | None = None, name: str | None = None
) -> RunTarget:
    """The engine for MODEL; BadInputError naming the option to fix."""
    model = model.strip()
    if not model:
        raise BadInputError("MODEL is empty: give a Hugging Face id, a local path or a .gguf")
    if kind is not None and kind not in KINDS:
        raise BadInputError(f"--kind {kind!r}: must be one of {', '.join(KINDS)}")
    chosen_name = name if name is not None else engine_name(model)
    if not is_valid_name(chosen_name):
        option = "--name" if name is not None else f"the name derived from {model!r}"
        raise BadInputError(f"{option} {chosen_name!r} {NAME_RULE}; give --name NAME")
    reserved = reserved_engine_id_problem(chosen_name)
    if reserved:
        raise BadInputError(f"{reserved} (--name)")
    if runtime is None and is_gguf(model):
        runtime = "llama-cpp"
    if kind is None:
        kind = "embedding" if is_embedding(model) else "llm"
    spec: dict[str, Any] = {"model": model, "kind": kind, **AD_HOC_START}
    if runtime is not None:
        spec["runtime"] = runtime
    return RunTarget(chosen_name, kind, runtime, spec)
