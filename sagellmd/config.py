"""Settings: defaults < config.yaml < SAGELLM_* environment < command-line flags."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from sagellmd.cluster_config import ClusterSettings, parse_cluster
from sagellmd.config_gateway_keys import gateway_keys, is_loopback_host, read_keys_file
from sagellmd.errors import ConfigError
from sagellmd.gpu.inventory import parse_gpu_setting
from sagellmd.runtime.kinds import KINDS
from sagellmd.schemas.config import CONFIG_SCHEMA

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8765

# Each built-in runtime kind brings its command; config.yaml's runtimes override or add.
DEFAULT_RUNTIMES: dict[str, list[str]] = {
    name: list(kind.default_command) for name, kind in KINDS.items()
}


def default_home() -> Path:
    """SAGELLM_HOME, else systemd's STATE_DIRECTORY, else ~/.local/share/sagellm."""
    if os.environ.get("SAGELLM_HOME"):
        return Path(os.environ["SAGELLM_HOME"]).expanduser()
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    return Path.home() / ".local" / "share" / "sagellm"


@dataclass(frozen=True)
class Settings:
    """Everything the daemon reads from its configuration, with defaults filled in."""

    home: Path
    api_host: str = DEFAULT_API_HOST
    api_port: int = DEFAULT_API_PORT
    # A connection must send a whole request head within this; an idle keep-alive one is
    # closed after keep_alive_s. Idle sockets would otherwise hold descriptors for good.
    api_header_timeout_s: float = 10.0
    api_keep_alive_s: float = 5.0
    gpus: str = "auto"
    port_start: int = 20000
    port_end: int = 20999
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    reset_after_s: float = 600.0
    # A changed engine must stay ready this long before its change is judged healthy.
    min_healthy_s: float = 5.0
    stop_grace_s: float = 10.0
    startup_probe_interval_s: float = 0.25
    liveness_interval_s: float = 5.0
    liveness_failures: int = 3
    probe_timeout_s: float = 2.0
    tick_s: float = 30.0
    stop_engines_on_exit: bool = False
    headroom: float = 0.95
    kv_cache_gb: float = 4.0
    overhead_gb: float = 1.0
    runtimes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    model_paths: tuple[Path, ...] = ()
    # Before starting a vllm/embedding engine whose model is not on disk, check that the
    # hub answers (off the loop, 5 s at most) and fail at once with a hint if it does not.
    hub_check: bool = True
    # The OpenAI-compatible gateway process the daemon supervises (docs/gateway.md).
    gateway_enabled: bool = True
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8000
    gateway_policy: str = "adaptive"
    gateway_balance: str = "least-outstanding"
    gateway_retries: int = 2
    gateway_max_waiting: int = 1024
    gateway_queue_timeout_s: float = 60.0
    # The TTFT deadline of requests that name none (slo policy); None: no deadline.
    gateway_slo_ttft_ms: float | None = None
    # Waiting this long raises a request one priority class (priority, adaptive).
    gateway_priority_aging_s: float = 10.0
    # Keys of gateway.api_keys and of gateway.api_keys_file, read once at load.
    gateway_api_keys: tuple[str, ...] = ()
    gateway_api_keys_file: Path | None = None
    # `cluster:` (docs/multi-node.md): engines on the nodes of a Ray cluster; None: this box.
    cluster: ClusterSettings | None = None

    @property
    def db_path(self) -> Path:
        return self.home / "sagellm.db"

    @property
    def token_path(self) -> Path:
        return self.home / "token"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def lock_path(self) -> Path:
        return self.home / "sagellmd.lock"

    @property
    def api_url(self) -> str:
        host = f"[{self.api_host}]" if ":" in self.api_host else self.api_host
        return f"http://{host}:{self.api_port}"

    @property
    def gateway_url(self) -> str:
        host = f"[{self.gateway_host}]" if ":" in self.gateway_host else self.gateway_host
        return f"http://{host}:{self.gateway_port}"

    def runtime_command(self, runtime: str) -> list[str]:
        """The argv template of a runtime; a bare `python` means this daemon's interpreter."""
        command = list(self.runtimes[runtime])
        if command and command[0] in ("python", "python3"):
            command[0] = sys.executable
        return command


def _number(
    value: Any, where: str, kind: type, minimum: float | None = None, maximum: float | None = None
) -> Any:
    what = "an integer" if kind is int else "a number"
    if isinstance(value, bool):
        raise ConfigError(f"{where}: must be {what}, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: must be {what}, got {value!r}") from None
    if not math.isfinite(number) or (kind is int and not number.is_integer()):
        raise ConfigError(f"{where}: must be {what}, got {value!r}")
    if minimum is not None and number < minimum:
        raise ConfigError(f"{where}: must be >= {minimum:g}, got {value!r}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{where}: must be <= {maximum:g}, got {value!r}")
    return int(number) if kind is int else number


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where}: must be true or false, got {value!r}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {value!r}")
    return value


KNOWN_KEYS = set(CONFIG_SCHEMA["properties"])


def _refuse_unknown(section: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> None:
    """A section the schema closes takes only its own keys; the message lists them."""
    if schema.get("additionalProperties") is not False:
        return
    known = sorted(schema["properties"])
    unknown = sorted((str(key) for key in set(section) - set(known)), key=str)
    if unknown:
        raise ConfigError(f"{where}unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")


def _value(value: Any, where: str, schema: Mapping[str, Any]) -> Any:
    """One scalar setting, coerced as environment strings need, checked as its schema says."""
    type_ = schema["type"]
    if isinstance(type_, list):  # [kind, "null"]: null switches the setting off
        if value is None:
            return None
        type_ = type_[0]
    if type_ == "boolean":
        return _bool(value, where)
    if type_ == "string":
        if "enum" in schema and str(value) not in schema["enum"]:
            raise ConfigError(f"{where}: must be one of {', '.join(schema['enum'])}, got {value!r}")
        return str(value)
    kind = int if type_ == "integer" else float
    return _number(value, where, kind, schema.get("minimum"), schema.get("maximum"))


def _scalars(
    data: Mapping[str, Any], where: str, schema: Mapping[str, Any] = CONFIG_SCHEMA, path: str = ""
) -> dict[str, Any]:
    """Every `x-setting` of the schema the document gives, by Settings field (sections nest:
    gateway.queue.max_waiting)."""
    changes: dict[str, Any] = {}
    for key, leaf in schema["properties"].items():
        name = f"{path}{key}"
        if "x-setting" in leaf:
            if key in data:
                changes[leaf["x-setting"]] = _value(data[key], f"{where}: {name}", leaf)
            continue
        if "properties" not in leaf:
            continue
        section = _mapping(data.get(key), f"{where}: {name}")
        _refuse_unknown(section, leaf, f"{where}: {name}: ")
        changes.update(_scalars(section, where, leaf, f"{name}."))
    return changes


def _check_gateway(settings: Settings) -> Settings:
    """Read the keys file, and refuse a gateway that would serve the network unauthenticated."""
    keys = settings.gateway_api_keys
    if settings.gateway_api_keys_file is not None:
        keys = tuple(dict.fromkeys(keys + read_keys_file(settings.gateway_api_keys_file)))
    settings = replace(settings, gateway_api_keys=keys)
    if not settings.gateway_enabled:
        return settings
    if not keys and not is_loopback_host(settings.gateway_host):
        raise ConfigError(
            f"gateway.host is {settings.gateway_host!r}, not a loopback address, and"
            " gateway.api_keys is empty: anyone on the network could use the engines."
            " Set gateway.api_keys (or gateway.api_keys_file) in config.yaml, or bind"
            " gateway.host to 127.0.0.1"
        )
    if settings.gateway_port == settings.api_port:
        raise ConfigError(
            f"gateway.port {settings.gateway_port} is the daemon's own API port (api.port);"
            " choose another gateway.port"
        )
    return settings


def _model_paths(value: Any, where: str) -> tuple[Path, ...]:
    """`models: {paths: [...]}`: absolute directories holding model directories."""
    paths = _mapping(value, f"{where}: models").get("paths")
    paths = [] if paths is None else paths
    if not isinstance(paths, list):
        raise ConfigError(f"{where}: models.paths: must be a list of directories, got {paths!r}")
    result = []
    for index, raw in enumerate(paths):
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigError(
                f"{where}: models.paths[{index}]: must be a directory path, got {raw!r}"
            )
        path = Path(raw).expanduser()
        # Relative to what? The daemon's cwd is not something a user controls under systemd.
        if not path.is_absolute():
            raise ConfigError(
                f"{where}: models.paths[{index}]: must be an absolute path (or start with ~),"
                f" got {raw!r}"
            )
        result.append(path)
    return tuple(result)


def _from_document(settings: Settings, data: Mapping[str, Any], where: str) -> Settings:
    _refuse_unknown(data, CONFIG_SCHEMA, f"{where}: ")
    changes = _scalars(data, where)
    if "gpus" in changes:
        try:
            parse_gpu_setting(changes["gpus"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}") from None
    if "cluster" in data:
        changes["cluster"] = parse_cluster(data["cluster"], where)
    if "models" in data:
        changes["model_paths"] = _model_paths(data["models"], where)
    keys, keys_file = gateway_keys(_mapping(data.get("gateway"), f"{where}: gateway"), where)
    if keys is not None:
        changes["gateway_api_keys"] = keys
    if keys_file is not None:
        changes["gateway_api_keys_file"] = keys_file
    runtimes = _mapping(data.get("runtimes"), f"{where}: runtimes")
    if runtimes:
        merged = dict(settings.runtimes)
        for name, body in runtimes.items():
            command = _mapping(body, f"{where}: runtimes.{name}").get("command")
            if (
                not isinstance(command, list)
                or not command
                or not all(isinstance(part, str) for part in command)
            ):
                raise ConfigError(
                    f"{where}: runtimes.{name}.command: must be a non-empty list of strings"
                    " (an argv template, never a shell line)"
                )
            merged[str(name)] = tuple(command)
        changes["runtimes"] = merged
    return replace(settings, **changes)


# SAGELLM_GATEWAY_* -> gateway.<key>
GATEWAY_ENVIRONMENT = {
    "SAGELLM_GATEWAY_ENABLED": "enabled",
    "SAGELLM_GATEWAY_HOST": "host",
    "SAGELLM_GATEWAY_PORT": "port",
    "SAGELLM_GATEWAY_POLICY": "policy",
    "SAGELLM_GATEWAY_BALANCE": "balance",
}


def _from_environment(settings: Settings, environ: Mapping[str, str]) -> Settings:
    document: dict[str, Any] = {}
    if "SAGELLM_API_HOST" in environ:
        document.setdefault("api", {})["host"] = environ["SAGELLM_API_HOST"]
    if "SAGELLM_API_PORT" in environ:
        document.setdefault("api", {})["port"] = environ["SAGELLM_API_PORT"]
    if "SAGELLM_GPUS" in environ:
        document["gpus"] = environ["SAGELLM_GPUS"]
    if "SAGELLM_PORTS" in environ:
        start, _, end = environ["SAGELLM_PORTS"].partition("-")
        document["ports"] = {"start": start, "end": end or start}
    if "SAGELLM_STOP_ENGINES_ON_EXIT" in environ:
        document["stop_engines_on_exit"] = environ["SAGELLM_STOP_ENGINES_ON_EXIT"]
    for variable, key in GATEWAY_ENVIRONMENT.items():
        if variable in environ:
            document.setdefault("gateway", {})[key] = environ[variable]
    return _from_document(settings, document, "environment")


def load_settings(
    home: Path | None = None,
    config_file: Path | None = None,
    host: str | None = None,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings from every layer; a bad value raises ConfigError naming it."""
    environ = os.environ if environ is None else environ
    home = (home or default_home()).expanduser().resolve()
    settings = Settings(home=home, runtimes={k: tuple(v) for k, v in DEFAULT_RUNTIMES.items()})
    path = config_file or (
        Path(environ["SAGELLM_CONFIG"]) if environ.get("SAGELLM_CONFIG") else None
    )
    path = path or home / "config.yaml"
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        settings = _from_document(settings, _mapping(data, str(path)), str(path))
    elif config_file is not None:
        raise ConfigError(f"--config {config_file}: no such file")
    settings = _from_environment(settings, environ)
    if host is not None:
        settings = replace(settings, api_host=host)
    if port is not None:
        settings = replace(settings, api_port=_number(port, "--port", int, 1, 65535))
    if settings.port_end < settings.port_start:
        raise ConfigError(
            f"ports: end ({settings.port_end}) must be >= start ({settings.port_start})"
        )
    return _check_gateway(settings)
