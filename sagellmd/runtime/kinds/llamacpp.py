"""The `llama-cpp` kind: one GGUF file served on the CPU by llama-cpp-python's OpenAI server."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sagellmd.errors import SpecError
from sagellmd.models.resolve import (
    EngineModel,
    cache_repo_dir,
    hub_cache_for,
    looks_like_path,
    spec_environ,
)
from sagellmd.runtime.kinds.base import ENGINE_HOST, EngineSettings, GpuAssignment, RuntimeKind
from sagellmd.spec import EngineSpec

GGUF = ".gguf"
_ID_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
REPO_ID = re.compile(rf"^{_ID_PART}(?:/{_ID_PART})?$")
# Split models ship as NAME-00001-of-0000N.gguf; llama.cpp is given the first shard only.
LATER_SHARD = re.compile(r"-(\d{5})-of-\d{5}\.gguf$", re.IGNORECASE)
EXAMPLE = "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
# llama_cpp.server reads HOST and PORT from the environment over its --host/--port flags.
OVERRIDING_ENV = frozenset({"HOST", "PORT"})


@dataclass(frozen=True)
class GgufReference:
    """One GGUF file: a local path, or a hub repo plus a file name or a quantization."""

    path: Path | None = None
    repo: str | None = None
    file: str | None = None
    quant: str | None = None

    def download_hint(self) -> str:
        if self.file is not None:
            patterns = self.file
        else:
            quant = self.quant or ""
            patterns = ",".join(dict.fromkeys([f"*{quant}*{GGUF}", f"*{quant.lower()}*{GGUF}"]))
        return f"sagellm model download {self.repo} --allow-patterns '{patterns}'"


def parse_gguf_reference(model: str) -> GgufReference:
    """`/path/model.gguf`, `REPO:FILE.gguf` or `REPO:QUANT`; SpecError says which it must be."""
    if looks_like_path(model):
        try:
            return GgufReference(path=Path(model).expanduser())
        except RuntimeError:  # ~someone who has no home here: a path that is nowhere
            return GgufReference(path=Path(model))
    repo, colon, rest = model.partition(":")
    if not colon or not rest or not REPO_ID.fullmatch(repo) or ".." in repo:
        raise SpecError(
            [
                f"model: {model!r} does not name one GGUF file; the llama-cpp runtime takes a"
                f" path to a .gguf file, REPO:FILE.gguf or REPO:QUANT (e.g. {EXAMPLE})"
            ]
        )
    if any(part in ("", ".", "..") for part in rest.split("/")) or rest.startswith("/"):
        raise SpecError([f"model: {rest!r} in {model!r} must be a file name inside the repo"])
    if rest.lower().endswith(GGUF):
        return GgufReference(repo=repo, file=rest)
    return GgufReference(repo=repo, quant=rest)


def _snapshots(cache: Path, repo: str) -> list[Path]:
    """The repo's hub-cache snapshots, the one `refs/main` names first, then newest first."""
    root = cache_repo_dir(cache, repo)
    try:
        main = (root / "refs" / "main").read_text().strip()
    except OSError:
        main = ""
    try:
        others = sorted(
            (p for p in (root / "snapshots").iterdir() if p.is_dir() and p.name != main),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    except OSError:
        others = []
    first = [root / "snapshots" / main] if main and (root / "snapshots" / main).is_dir() else []
    return first + others


def _pick(directory: Path, ref: GgufReference) -> Path | None:
    if ref.file is not None:
        candidate = directory / ref.file
        return candidate if candidate.is_file() else None
    quant = (ref.quant or "").lower()
    matches = sorted(
        path
        for path in directory.rglob(f"*{GGUF}")
        if quant in path.name.lower()
        and not ((shard := LATER_SHARD.search(path.name)) is not None and shard.group(1) != "00001")
    )
    if len(matches) > 1:
        names = ", ".join(str(path.relative_to(directory)) for path in matches)
        raise SpecError(
            [f"model: {ref.repo}:{ref.quant} matches {len(matches)} files ({names}); name one"]
        )
    return matches[0] if matches else None


def find_gguf(
    ref: GgufReference, roots: Iterable[Path], env: Mapping[str, str]
) -> tuple[Path | None, list[str]]:
    """The GGUF file on disk and the places looked in: models.paths first, then the hub cache."""
    if ref.path is not None:
        return (ref.path if ref.path.is_file() else None), [str(ref.path)]
    assert ref.repo is not None
    directories = [root / ref.repo for root in roots]
    cache = hub_cache_for(env)
    directories += _snapshots(cache, ref.repo)
    for directory in directories:
        if directory.is_dir():
            found = _pick(directory, ref)
            if found is not None:
                return found, []
    places = [str(root / ref.repo) for root in roots] + [f"the Hugging Face cache {cache}"]
    return None, places


class LlamaCppKind(RuntimeKind):
    name = "llama-cpp"
    default_command = ("python", "-m", "llama_cpp.server")
    # No /health: the server loads the model before it binds, then /v1/models answers 200.
    health_path = "/v1/models"
    health_status = 200
    # uvicorn re-raises SIGTERM after its graceful shutdown: exit "killed by SIGTERM".
    clean_exit_signals = frozenset({int(signal.SIGTERM)})
    # The model is one memory-mapped GGUF file and nothing compiles: a CPU server answers in
    # seconds to a minute. 300 s leaves room for a multi-GiB file read from a slow disk while
    # catching a stuck start 10 minutes sooner than the GPU figure; embedding models are small.
    startup_timeout_s = {"llm": 300.0, "embedding": 180.0}

    def spec_problems(self, spec: EngineSpec) -> list[str]:
        try:
            parse_gguf_reference(spec.model)
        except SpecError as exc:
            return exc.errors
        return []

    def wants_gpu(self, spec: EngineSpec) -> bool:
        # A CPU runtime: it reserves GPUs only when the spec asks for them.
        return spec.use_gpu is True

    def _locate(self, spec: EngineSpec, settings: EngineSettings) -> tuple[Path | None, str | None]:
        try:
            ref = parse_gguf_reference(spec.model)
            found, places = find_gguf(ref, settings.model_paths, spec_environ(spec))
        except SpecError as exc:
            return None, "; ".join(exc.errors)
        if found is not None:
            return found, None
        if ref.path is not None:
            return None, f"model path {spec.model} is not a file (give the .gguf file itself)"
        return None, (
            f"GGUF model {spec.model!r} is not on this machine (looked in {', '.join(places)});"
            f" run `{ref.download_hint()}`, then restart the engine"
        )

    def model(self, spec: EngineSpec, settings: EngineSettings) -> EngineModel:
        found, _ = self._locate(spec, settings)
        return EngineModel(str(found) if found is not None else spec.model)

    def missing_model(self, spec: EngineSpec, settings: EngineSettings) -> str | None:
        return self._locate(spec, settings)[1]

    def model_is_local(self, spec: EngineSpec, settings: EngineSettings) -> bool:
        return self._locate(spec, settings)[0] is not None

    def flags(
        self,
        spec: EngineSpec,
        model: EngineModel,
        port: int,
        assignment: GpuAssignment | None,
        host: str = ENGINE_HOST,
    ) -> list[str]:
        flags = ["--model", model.argument, "--host", host, "--port", str(port)]
        flags += ["--model_alias", self.served_model_names(spec)[0]]
        if assignment is not None:
            # A CUDA build offloads every layer to the reserved GPUs; a CPU build ignores it.
            flags += ["--n_gpu_layers", "-1"]
        return flags

    def env(
        self,
        spec: EngineSpec,
        settings: EngineSettings,
        engine_id: str,
        port: int,
        assignment: GpuAssignment | None = None,
    ) -> dict[str, str]:
        env = super().env(spec, settings, engine_id, port, assignment)
        return {key: value for key, value in env.items() if key.upper() not in OVERRIDING_ENV}
