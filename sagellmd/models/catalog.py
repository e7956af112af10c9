"""The list of models on this machine: hub cache revisions, models.paths directories, packages."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sagellmd.gpu.estimate import (
    GIB,
    EstimateError,
    EstimateSettings,
    MemoryEstimate,
    estimate_memory,
    parameters_from_name,
)
from sagellmd.models.describe import (
    directory_size,
    guess_kind,
    looks_like_model,
    parameter_count,
    read_config,
)
from sagellmd.models.last_used import read_last_used
from sagellmd.models.packages import KNOWN_PACKAGES, package_for
from sagellmd.models.usage import engines_using, refers_to
from sagellmd.spec import EngineSpec

log = logging.getLogger(__name__)

HUB_CACHE = "hub-cache"
MODELS_PATHS = "models.paths"
PACKAGE = "package"


@dataclass(frozen=True)
class LocalModel:
    """One model (one revision, for the hub cache) whose files are on disk."""

    id: str
    source: str  # HUB_CACHE, MODELS_PATHS or PACKAGE
    path: Path
    size_bytes: int
    revision: str | None = None
    refs: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    kind: str | None = None
    parameters: int | None = None
    memory: MemoryEstimate | None = None
    memory_error: str | None = None
    modified: float | None = None
    last_used: float | None = None
    note: str = ""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.id, *self.aliases)

    @property
    def deletable(self) -> bool:
        """Only the hub cache is sagellm's to delete from; the rest belongs to the operator/pip."""
        return self.source == HUB_CACHE

    def to_dict(self, used_by: list[str] | None) -> dict[str, Any]:
        memory = None
        if self.memory is not None:
            memory = {
                "gb": round(self.memory.per_gpu_gb, 2),
                "source": self.memory.source,
                "detail": self.memory.detail,
            }
        return {
            "id": self.id,
            "revision": self.revision,
            "refs": list(self.refs),
            "aliases": list(self.aliases),
            "source": self.source,
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "size_gb": round(self.size_bytes / GIB, 3),
            "kind": self.kind,
            "parameters": self.parameters,
            "memory_estimate": memory,
            "memory_estimate_error": self.memory_error,
            "modified": _iso(self.modified),
            "last_used": _iso(self.last_used),
            "used_by": used_by,
            "deletable": self.deletable,
            "note": self.note,
        }


@dataclass(frozen=True)
class Catalog:
    """Every local model, where the scan looked, and what it could not read."""

    cache: Path
    model_paths: tuple[Path, ...]
    models: tuple[LocalModel, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def find(self, model_id: str) -> list[LocalModel]:
        return [model for model in self.models if model_id in model.names]

    def to_dict(self, engines: Iterable[tuple[str, str]] | None) -> dict[str, Any]:
        """The API document; with `engines` as (id, model) pairs each entry gets `used_by`."""
        pairs = list(engines) if engines is not None else None
        return {
            "cache": str(self.cache),
            "model_paths": [str(path) for path in self.model_paths],
            "models": [
                model.to_dict(
                    engines_using(model.names, model.path, pairs) if pairs is not None else None
                )
                for model in self.models
            ],
            "warnings": list(self.warnings),
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _describe(
    model_id: str,
    source: str,
    path: Path,
    size: int,
    estimates: EstimateSettings,
    **extra: Any,
) -> LocalModel:
    """Kind, parameters and per-GPU estimate (tp=pp=1) of the model in `path`."""
    config = read_config(path)
    kind = guess_kind(path, config)
    parameters = parameter_count(path, kind, config) or parameters_from_name(model_id)
    memory, memory_error = None, None
    spec = EngineSpec(name="estimate", model=str(path), kind=kind or "llm")
    try:
        memory = estimate_memory(spec, estimates)
    except EstimateError:
        # No weights or config here (e.g. a GGUF file): the id may still carry "7B". The
        # model's own directory as the cache keeps the estimator from reading another revision.
        try:
            by_name = EngineSpec(name="estimate", model=model_id, kind=kind or "llm")
            memory = estimate_memory(by_name, estimates, cache=path)
        except EstimateError as exc:
            memory_error = str(exc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        memory_error = f"cannot read the weights in {path}: {exc}"
    return LocalModel(
        id=model_id,
        source=source,
        path=path,
        size_bytes=size,
        kind=kind,
        parameters=parameters,
        memory=memory,
        memory_error=memory_error,
        **extra,
    )


def scan_hub_cache(cache: Path, estimates: EstimateSettings) -> tuple[list[LocalModel], list[str]]:
    """One entry per cached model revision, through huggingface_hub's own scanner."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.utils import CacheNotFound

    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        return [], []  # nothing downloaded yet: not worth a warning
    except (OSError, ValueError) as exc:
        return [], [f"hub cache {cache}: cannot be scanned: {exc}"]
    warnings = [f"hub cache: {warning}" for warning in info.warnings]
    models = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        package = package_for(repo.repo_id)
        for revision in sorted(repo.revisions, key=lambda r: -r.last_modified):
            models.append(
                _describe(
                    repo.repo_id,
                    HUB_CACHE,
                    revision.snapshot_path,
                    revision.size_on_disk,
                    estimates,
                    revision=revision.commit_hash,
                    refs=tuple(sorted(revision.refs)),
                    aliases=package.aliases if package else (),
                    modified=revision.last_modified,
                )
            )
    partial: dict[str, int] = {}
    for incomplete in getattr(info, "incomplete_files", ()):
        repo_dir = incomplete.file_path.parent.parent.name
        if repo_dir.startswith("models--"):
            repo_id = repo_dir.removeprefix("models--").replace("--", "/")
            partial[repo_id] = partial.get(repo_id, 0) + incomplete.size_on_disk
    for repo_id, size in sorted(partial.items()):
        warnings.append(
            f"{repo_id}: a partial download ({size / GIB:.2f} GiB) is in the cache;"
            f" `sagellm model download {repo_id}` resumes it"
        )
    return models, warnings


def _local_dir_revision(directory: Path) -> str | None:
    """The commit `hf download --local-dir` recorded next to the files, if any."""
    metadata = directory / ".cache" / "huggingface" / "download"
    for path in [metadata / "config.json.metadata", *sorted(metadata.glob("*.metadata"))]:
        try:
            first = path.read_text().split("\n", 1)[0].strip()
        except OSError:
            continue
        if first:
            return first
    return None


def _model_dirs(root: Path) -> list[tuple[str, Path]]:
    """(id, directory) for `<root>/<name>` and `<root>/<org>/<name>` model directories."""
    found = []
    for child in sorted(root.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        if looks_like_model(child):
            found.append((child.name, child))
            continue
        for grandchild in sorted(child.iterdir()):
            if not grandchild.name.startswith(".") and looks_like_model(grandchild):
                found.append((f"{child.name}/{grandchild.name}", grandchild))
    return found


def scan_model_paths(
    roots: Iterable[Path], estimates: EstimateSettings
) -> tuple[list[LocalModel], list[str]]:
    models, warnings = [], []
    for root in roots:
        try:
            entries = _model_dirs(root)
        except FileNotFoundError:
            warnings.append(f"models.paths: {root} does not exist")
            continue
        except OSError as exc:
            warnings.append(f"models.paths: {root} cannot be read: {exc.strerror or exc}")
            continue
        for model_id, directory in entries:
            models.append(
                _describe(
                    model_id,
                    MODELS_PATHS,
                    directory,
                    directory_size(directory),
                    estimates,
                    revision=_local_dir_revision(directory),
                    modified=directory.stat().st_mtime,
                    note=f"in {root}",
                )
            )
    return models, warnings


def scan_packages(estimates: EstimateSettings) -> list[LocalModel]:
    models = []
    for package in KNOWN_PACKAGES:
        directory = package.model_dir()
        if directory is None:
            continue
        models.append(
            _describe(
                package.model_id,
                PACKAGE,
                directory,
                directory_size(directory),
                estimates,
                aliases=package.aliases,
                note=f"pip package {package.distribution} {package.version() or ''}".strip(),
            )
        )
    return models


def _with_last_used(model: LocalModel, used: Mapping[str, float]) -> LocalModel:
    times = [ts for name, ts in used.items() if refers_to(model.names, model.path, name)]
    if not times:
        return model

    return replace(model, last_used=max(times))


def scan_catalog(
    model_paths: Iterable[Path],
    cache: Path,
    home: Path | None = None,
    estimates: EstimateSettings = EstimateSettings(),
) -> Catalog:
    """Everything local; `home` (the daemon's) supplies when each model was last used."""
    roots = tuple(model_paths)
    hub_models, warnings = scan_hub_cache(cache, estimates)
    path_models, path_warnings = scan_model_paths(roots, estimates)
    models = [*path_models, *hub_models, *scan_packages(estimates)]
    if home is not None:
        used = read_last_used(home)
        models = [_with_last_used(model, used) for model in models]
    return Catalog(cache, roots, tuple(models), tuple(warnings + path_warnings))
