"""Where an engine's model is on disk, and why an engine cannot start when it is nowhere."""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sagellmd.models.describe import has_weights, looks_like_model
from sagellmd.models.packages import package_for
from sagellmd.spec import EngineSpec

# Hub ids are "name" or "org/name"; anything starting like this can only be meant as a path.
PATH_PREFIXES = ("/", "./", "../", "~")
TRUTHY = frozenset({"1", "on", "yes", "true"})


class ModelRoots(Protocol):
    """What model lookup reads of the settings (config.Settings is one): `models.paths`."""

    @property
    def model_paths(self) -> tuple[Path, ...]: ...


def looks_like_path(model: str) -> bool:
    return model.startswith(PATH_PREFIXES) or model in (".", "..")


def is_offline(env: Mapping[str, str]) -> bool:
    """huggingface_hub's own reading of HF_HUB_OFFLINE (and transformers' older variable)."""
    value = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in TRUTHY


def hub_cache_for(env: Mapping[str, str]) -> Path:
    """The hub cache a process with this environment uses (HF_HUB_CACHE, HF_HOME/hub, default)."""
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def spec_environ(spec: EngineSpec) -> Mapping[str, str]:
    """The environment the engine will see: its spec's env over the daemon's."""
    return ChainMap(dict(spec.env), dict(os.environ))


def cache_repo_dir(cache: Path, model_id: str) -> Path:
    return cache / ("models--" + model_id.replace("/", "--"))


def _safe_relative(model_id: str) -> bool:
    parts = model_id.split("/")
    return 1 <= len(parts) <= 2 and all(part not in ("", ".", "..") for part in parts)


def _usable(snapshot: Path) -> bool:
    return looks_like_model(snapshot) and has_weights(snapshot)


def hub_snapshot(model_id: str, cache: Path) -> Path | None:
    """The snapshot `refs/main` points at, else the newest one; only complete ones count."""
    if not _safe_relative(model_id):
        return None
    repo = cache_repo_dir(cache, model_id)
    snapshots = repo / "snapshots"
    try:
        main = (repo / "refs" / "main").read_text().strip()
    except OSError:
        main = ""
    if main and _usable(snapshots / main):
        return snapshots / main
    try:
        candidates = [path for path in snapshots.iterdir() if _usable(path)]
    except OSError:
        return None
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)


def models_path_dir(model_id: str, roots: Iterable[Path]) -> Path | None:
    """`<root>/<org>/<name>` (or `<root>/<name>`) under the first `models.paths` root holding it."""
    if not _safe_relative(model_id):
        return None
    for root in roots:
        candidate = root / model_id
        if looks_like_model(candidate):
            return candidate
    return None


@dataclass(frozen=True)
class LocalCopy:
    """A model's files on disk and where they were found."""

    path: Path
    source: str  # "path", "models.paths", "hub-cache" or "package"


def find_local(
    model: str, settings: ModelRoots, env: Mapping[str, str] | None = None
) -> LocalCopy | None:
    """The copy an engine of `model` should use: models.paths, then the hub cache, then a package.

    models.paths comes first because the operator put those directories there on purpose.
    """
    env = os.environ if env is None else env
    if looks_like_path(model):
        path = Path(model).expanduser()
        return LocalCopy(path, "path") if path.exists() else None
    found = models_path_dir(model, settings.model_paths)
    if found is not None:
        return LocalCopy(found, "models.paths")
    package = package_for(model)
    # An alias (all-MiniLM-L6-v2) is cached under its package's full hub id.
    for name in dict.fromkeys([model, package.model_id] if package else [model]):
        found = hub_snapshot(name, hub_cache_for(env))
        if found is not None:
            return LocalCopy(found, "hub-cache")
    found = package.model_dir() if package is not None else None
    return LocalCopy(found, "package") if found is not None else None


def has_flag(args: Iterable[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in args)


@dataclass(frozen=True)
class EngineModel:
    """What the engine's `{model}` / `--model` get, and flags that keep the served name the id."""

    argument: str
    extra_flags: tuple[str, ...] = ()


def local_copy_for(spec: EngineSpec, settings: ModelRoots) -> LocalCopy | None:
    """The copy on disk an engine may be given instead of its hub id, or None.

    A path is the engine's own to open, and a pinned revision is the engine's to resolve
    (the main snapshot could be another revision).
    """
    if looks_like_path(spec.model) or has_flag(spec.extra_args, "--revision"):
        return None
    return find_local(spec.model, settings, spec_environ(spec))


def model_is_local(spec: EngineSpec, settings: ModelRoots) -> bool:
    """The engine can run from disk alone (a pinned --revision is left to the engine)."""
    if has_flag(spec.extra_args, "--revision"):
        return False
    if looks_like_path(spec.model):
        return Path(spec.model).expanduser().exists()
    return find_local(spec.model, settings, spec_environ(spec)) is not None


def needs_hub(spec: EngineSpec, settings: ModelRoots, runtimes: Iterable[str]) -> bool:
    """The engine (of one of `runtimes`) must download its model: not on disk, not offline."""
    env = spec_environ(spec)
    if spec.runtime not in runtimes or looks_like_path(spec.model) or is_offline(env):
        return False
    return not model_is_local(spec, settings)


def missing_model_reason(spec: EngineSpec, settings: ModelRoots) -> str | None:
    """Why the engine cannot get its model (not on disk and downloads forbidden), or None."""
    env = spec_environ(spec)
    if looks_like_path(spec.model):
        if Path(spec.model).expanduser().exists():
            return None
        return f"model path {spec.model} does not exist"
    if find_local(spec.model, settings, env) is not None or not is_offline(env):
        return None
    places = [f"the Hugging Face cache {hub_cache_for(env)}"]
    places += [f"{root}/{spec.model}" for root in settings.model_paths]
    return (
        f"model {spec.model!r} is not on this machine (looked in {', '.join(places)}) and"
        f" HF_HUB_OFFLINE=1 forbids downloading it; run `sagellm model download {spec.model}`"
        " where the hub is reachable, then restart the engine"
    )
