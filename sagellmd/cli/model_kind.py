"""The kind of engine a model on disk is for, so `engine start` without --kind picks it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagellmd.cli.client import ApiClient
from sagellmd.errors import SagellmError
from sagellmd.models.describe import guess_kind
from sagellmd.models.resolve import looks_like_path


@dataclass(frozen=True)
class KindOnDisk:
    kind: str
    path: str

    def note(self) -> str:
        other = "llm" if self.kind == "embedding" else "embedding"
        return (
            f"kind {self.kind}, from the model on disk ({self.path});"
            f" give --kind {other} to start it as an {other}"
        )


def _daemon_copy(client: ApiClient, model: str) -> KindOnDisk | None:
    try:
        answer: Any = client.get("/v1/models/local") or {}
    except SagellmError:
        # An unreachable daemon fails the change itself a moment later, with its own message.
        return None
    # The daemon lists models.paths, then the hub cache, then packages: the order in which
    # an engine's model is looked up, so the first match is the copy the engine would use.
    for entry in answer.get("models") or []:
        names = [entry.get("id"), *(entry.get("aliases") or [])]
        if model in names and entry.get("kind") in ("llm", "embedding"):
            return KindOnDisk(str(entry["kind"]), str(entry.get("path") or entry.get("id")))
    return None


def kind_on_disk(client: ApiClient, model: str) -> KindOnDisk | None:
    """The kind the model's files say (a local path, or the daemon's copy of a hub id)."""
    if looks_like_path(model):
        path = Path(model).expanduser()
        kind = guess_kind(path) if path.is_dir() else None
        return KindOnDisk(kind, str(path)) if kind else None
    return _daemon_copy(client, model)
