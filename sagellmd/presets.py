"""The preset catalogue: built-in presets, preset files in the home, and files by path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sagellmd.errors import BadInputError, NotFoundError, SpecError
from sagellmd.shipped_files import builtin_presets_dir
from sagellmd.spec import Preset, StartupTimeouts, parse_preset, timeout_by_kind


@dataclass(frozen=True)
class CatalogueEntry:
    preset: Preset
    source: str  # "builtin" or "file"
    path: Path


def read_document(path: Path) -> Any:
    """Read a YAML or JSON preset file into plain data, with a clear error if it is not."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise BadInputError(f"{path}: cannot read preset file: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: not valid YAML: {exc}"]) from exc


def load_preset_file(path: Path, startup_timeouts: StartupTimeouts = timeout_by_kind) -> Preset:
    """Parse and validate a preset file; errors name the file and the field."""
    data = read_document(path)
    try:
        return parse_preset(data, startup_timeouts)
    except SpecError as exc:
        raise SpecError([f"{path}: {error}" for error in exc.errors]) from exc


def _entries_in(
    directory: Path, source: str, startup_timeouts: StartupTimeouts
) -> list[CatalogueEntry]:
    if not directory.is_dir():
        return []
    entries = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        entries.append(CatalogueEntry(load_preset_file(path, startup_timeouts), source, path))
    return entries


def catalogue(
    home: Path | None, startup_timeouts: StartupTimeouts = timeout_by_kind
) -> dict[str, CatalogueEntry]:
    """Built-in presets, overridden by same-named files in `<home>/presets/`.

    The daemon passes its runtime kinds' `startup_timeouts`; the CLI shows the files offline.
    """
    builtin = _entries_in(builtin_presets_dir(), "builtin", startup_timeouts)
    entries = {entry.preset.name: entry for entry in builtin}
    if home is not None:
        for entry in _entries_in(home / "presets", "file", startup_timeouts):
            entries[entry.preset.name] = entry
    return entries


def find_preset(
    name: str, home: Path | None, startup_timeouts: StartupTimeouts = timeout_by_kind
) -> CatalogueEntry:
    entries = catalogue(home, startup_timeouts)
    if name not in entries:
        known = ", ".join(sorted(entries)) or "none"
        raise NotFoundError(
            f"no preset named {name!r}; known presets: {known}."
            " Give a file with --file, or put NAME.yaml in the home's presets/ folder"
        )
    return entries[name]
