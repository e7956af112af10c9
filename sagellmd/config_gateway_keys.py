"""The gateway's keys in config.yaml: `gateway.api_keys`, `gateway.api_keys_file`, loopback."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sagellmd.errors import ConfigError


def is_loopback_host(host: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1: only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key_problem(key: Any) -> str | None:
    if not isinstance(key, str) or not key:
        return f"must be a non-empty string, got {key!r}"
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in key):
        return "must not contain whitespace or control characters"
    return None


def gateway_keys(
    section: Mapping[str, Any], where: str
) -> tuple[tuple[str, ...] | None, Path | None]:
    """`gateway.api_keys` (a list) and `gateway.api_keys_file` (one key a line, # comments)."""
    keys: tuple[str, ...] | None = None
    file: Path | None = None
    if section.get("api_keys") is not None:
        listed = section["api_keys"]
        if not isinstance(listed, list):
            raise ConfigError(
                f"{where}: gateway.api_keys: must be a list of strings, got {listed!r:.80}"
            )
        for index, key in enumerate(listed):
            problem = api_key_problem(key)
            if problem:
                raise ConfigError(f"{where}: gateway.api_keys[{index}]: {problem}")
        keys = tuple(listed)
    if section.get("api_keys_file") is not None:
        raw = section["api_keys_file"]
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError(f"{where}: gateway.api_keys_file: must be a file path, got {raw!r}")
        file = Path(raw).expanduser()
        if not file.is_absolute():
            raise ConfigError(
                f"{where}: gateway.api_keys_file: must be an absolute path (or start with ~),"
                f" got {raw!r}"
            )
    return keys, file


def read_keys_file(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"gateway.api_keys_file: cannot read {path} ({exc.strerror});"
            " write one key a line there or remove the setting"
        ) from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        problem = api_key_problem(key)
        if problem:
            raise ConfigError(f"gateway.api_keys_file: {path} line {number}: key {problem}")
        keys.append(key)
    return tuple(keys)
