"""Deleting a model's revisions from the hub cache, refused while a desired engine uses it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sagellmd.errors import ConflictError, NotFoundError
from sagellmd.gpu.estimate import GIB
from sagellmd.models.catalog import MODELS_PATHS, PACKAGE, Catalog, LocalModel
from sagellmd.models.packages import package_for
from sagellmd.models.usage import engines_using

# How many leading characters of a commit hash identify a revision (as git's short hashes).
MIN_REVISION_PREFIX = 7


def _why_not_ours(model: LocalModel) -> str:
    if model.source == MODELS_PATHS:
        return (
            f"{model.path} is in a directory listed under models.paths in config.yaml, which you"
            " manage yourself: remove it by hand if you mean it"
        )
    if model.source == PACKAGE:
        package = package_for(model.id)
        name = package.distribution if package else "its package"
        return f"{model.path} ships in the pip package {name}: `pip uninstall {name}` removes it"
    return f"{model.path} ({model.source}) is not sagellm's to delete"


@dataclass(frozen=True)
class DeletePlan:
    """The cache revisions to delete and huggingface_hub's strategy for deleting them."""

    model_id: str
    cache: Path
    revisions: tuple[LocalModel, ...]
    kept: tuple[LocalModel, ...]
    freed_bytes: int
    strategy: Any  # huggingface_hub DeleteCacheStrategy

    def execute(self) -> None:
        self.strategy.execute()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.model_id,
            "cache": str(self.cache),
            "deleted": [
                {"revision": m.revision, "refs": list(m.refs), "path": str(m.path)}
                for m in self.revisions
            ],
            "freed_bytes": self.freed_bytes,
            "freed_gb": round(self.freed_bytes / GIB, 3),
            "kept": [{"source": m.source, "path": str(m.path)} for m in self.kept],
        }


def _matches(model: LocalModel, revision: str) -> bool:
    if revision in model.refs:
        return True
    return (
        model.revision is not None
        and len(revision) >= MIN_REVISION_PREFIX
        and model.revision.startswith(revision)
    )


def plan_delete(
    catalog: Catalog,
    model_id: str,
    revision: str | None,
    engines: Iterable[tuple[str, str]] | None,
) -> DeletePlan:
    """What deleting `model_id` (one revision, or all) removes; refuses with the reason.

    `engines` are the desired (id, model) pairs; None means nobody could tell (daemon
    unreachable) and the caller has taken responsibility for that (--force).
    """
    from huggingface_hub import scan_cache_dir

    found = catalog.find(model_id)
    if not found:
        raise NotFoundError(
            f"no local model {model_id!r}; `sagellm model list` shows what is on disk"
        )
    cached = [m for m in found if m.deletable]
    kept = [m for m in found if not m.deletable]
    if not cached:
        reasons = "; ".join(_why_not_ours(m) for m in kept)
        raise ConflictError(
            f"{model_id} is not in the Hugging Face cache, and sagellm deletes only from there:"
            f" {reasons}",
            {"sources": [m.source for m in kept]},
        )
    if revision is not None:
        chosen = [m for m in cached if _matches(m, revision)]
        if not chosen:
            have = ", ".join(f"{m.revision} ({', '.join(m.refs) or 'no ref'})" for m in cached)
            raise NotFoundError(f"{model_id} has no cached revision {revision!r}; it has {have}")
        kept += [m for m in cached if m not in chosen]
        cached = chosen
    users = sorted({user for m in cached for user in engines_using(m.names, m.path, engines or [])})
    if users:
        raise ConflictError(
            f"{model_id} is used by desired engine(s) {', '.join(users)}; remove them first"
            " (`sagellm engine stop ID` for ad-hoc engines, `sagellm preset unset NAME` for a"
            " preset's), then delete the model",
            {"used_by": users},
        )
    info = scan_cache_dir(catalog.cache)
    # delete_revisions matches hashes across the whole cache, and a duplicated repo keeps its
    # commit hashes: scoped to this repo, it cannot take another model's files along.
    scoped = replace(
        info,
        repos=frozenset(r for r in info.repos if r.repo_id == model_id and r.repo_type == "model"),
    )
    strategy = scoped.delete_revisions(*(m.revision for m in cached if m.revision))
    return DeletePlan(
        model_id,
        catalog.cache,
        tuple(cached),
        tuple(kept),
        int(strategy.expected_freed_size),
        strategy,
    )
