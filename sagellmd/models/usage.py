"""Which desired engines use a local model: by its id, an alias, or a path inside it."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sagellmd.models.resolve import looks_like_path


def _resolved(path: Path) -> Path:
    try:
        return path.expanduser().resolve()
    except OSError:
        return path


def refers_to(names: Iterable[str], path: Path, model: str) -> bool:
    """True if an engine's `model` field means the model known as `names`, stored at `path`."""
    if model in names:
        return True
    if not looks_like_path(model):
        return False
    target, given = _resolved(path), _resolved(Path(model))
    return given == target or target in given.parents


def engines_using(
    names: Iterable[str], path: Path, engines: Iterable[tuple[str, str]]
) -> list[str]:
    """Ids of the engines (id, model) whose model is this one, sorted."""
    names = tuple(names)
    return sorted(engine_id for engine_id, model in engines if refers_to(names, path, model))
