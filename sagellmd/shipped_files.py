"""Where the files shipped with sagellm (migrations, built-in presets) live."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped(packaged: str, in_checkout: str) -> Path:
    # A wheel carries them inside the package; a source checkout or an editable
    # install has them at the top level beside the package.
    inside = _PACKAGE / packaged
    return inside if inside.is_dir() else _PACKAGE.parent / in_checkout


def migrations_dir() -> Path:
    return _shipped("_migrations", "migrations")


def builtin_presets_dir() -> Path:
    return _shipped("_presets", "presets")


def ui_dir() -> Path:
    """The dashboard's static files (sagellmd/ui/, inside the package in both cases)."""
    return _PACKAGE / "ui"
