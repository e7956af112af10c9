"""Engine specs and preset documents: validation, defaults and the spec hash."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import jsonschema

from sagellmd.cron import CronError, parse_cron
from sagellmd.disaggregated_block import (
    Disaggregation,
    parse_served_block,
    reserved_name_problem,
)
from sagellmd.errors import SpecError
from sagellmd.json_values import json_value_problems
from sagellmd.schemas.engine import (
    ENGINE_SCHEMA,
    NAME_PATTERN,
    PRESET_SCHEMA,
)
from sagellmd.schemas.validator import Validator, ecma_match
from sagellmd.spec_rules import CONTROL_RULES, FIELD_RULES
from sagellmd.spec_rules import CRON_RULE as CRON_RULE  # re-exported: older imports
from sagellmd.spec_rules import NAME_RULE as NAME_RULE

# The daemon's own gateway process runs as engine `gateway` with runtime kind `gateway`.
GATEWAY_ENGINE_ID = "gateway"
GATEWAY_RUNTIME = "gateway"

DEFAULT_RUNTIME = {"llm": "vllm", "embedding": "embedding"}
DEFAULT_STARTUP_TIMEOUT_S = {"llm": 900.0, "embedding": 180.0}
DEFAULT_MAX_CONCURRENT_REQUESTS = 256
# An on-demand engine that sets no idle_s goes idle after ten minutes without a request.
DEFAULT_ON_DEMAND_IDLE_S = 600.0
# (runtime, kind) -> the startup_timeout_s of a spec that sets none. Each runtime kind says its
# own (runtime/kinds/, which imports this module); the daemon passes `startup_timeout_for`.
StartupTimeouts = Callable[[str, str], float]

# The fields whose change means a new process; label, metadata, restart policy and
# timeouts are applied to the running one.
PROCESS_FIELDS = (
    "kind",
    "model",
    "runtime",
    "tensor_parallel",
    "pipeline_parallel",
    "port",
    "use_gpu",
    "gpu_memory_gb",
    "max_concurrent_requests",
    "extra_args",
    "env",
)


@dataclass(frozen=True)
class EngineSpec:
    """One declared engine, with every default filled in."""

    name: str
    model: str
    kind: str = "llm"
    runtime: str = "vllm"
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    # Cluster nodes it spans through vLLM's Ray executor (None: one node when it fits).
    nodes: int | None = None
    port: int | None = None
    label: str | None = None
    # Further names the gateway routes to this engine; not a process field.
    aliases: tuple[str, ...] = ()
    max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS
    use_gpu: bool | None = None
    gpu_memory_gb: float | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    restart: str = "always"
    startup_timeout_s: float = 900.0
    restart_schedule: str | None = None
    # When the engine runs: `always`, or `on-demand` (from the first request the gateway
    # holds for it); after idle_s seconds without a request it stops or sleeps (idle_action).
    start: str = "always"
    idle_s: float | None = None
    idle_action: str = "stop"
    # Prefill and decode instances instead of one process (disaggregation.py).
    disaggregated: Disaggregation | None = None
    # Set only on the spec of one such instance (pd_expand.py), never stored: its role and
    # connector give it its kv-transfer flags and make its hash differ from its sibling's.
    pd_role: str | None = None
    pd_connector: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["pd_role"], data["pd_connector"]
        # Left out when unset, so specs and hashes from before the block stay what they were.
        if self.disaggregated is None:
            del data["disaggregated"]
        else:
            data["disaggregated"] = self.disaggregated.to_dict()
        if self.nodes is None:
            del data["nodes"]
        data["extra_args"] = list(self.extra_args)
        data["aliases"] = list(self.aliases)
        data["env"] = dict(self.env)
        data["metadata"] = dict(self.metadata)
        return data

    @cached_property
    def spec_hash(self) -> str:
        """Hash of the fields that shape the process; equal hashes need no restart."""
        data = self.to_dict()
        relevant = {key: data[key] for key in PROCESS_FIELDS}
        # Sleep mode is a vLLM flag; start, idle_s and idle_action: stop shape no process,
        # so hashes from before these fields stay what they were.
        if self.idle_action == "sleep":
            relevant["idle_action"] = "sleep"
        if self.disaggregated is not None:
            relevant["disaggregated"] = data["disaggregated"]
        if self.nodes is not None:
            relevant["nodes"] = self.nodes
        if self.pd_role is not None:
            relevant["pd"] = [self.pd_role, self.pd_connector]
        encoded = json.dumps(relevant, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()[:16]

    @property
    def wants_gpu(self) -> bool:
        if self.use_gpu is not None:
            return self.use_gpu
        return self.kind == "llm"

    @property
    def idle_able(self) -> bool:
        """Whether the daemon may stop or sleep the engine when nobody uses it."""
        return self.start == "on-demand" or self.idle_s is not None


@dataclass(frozen=True)
class Preset:
    """A named bundle of engines: `{version: 1, name, description, engines}`."""

    name: str
    engines: tuple[EngineSpec, ...]
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "name": self.name,
            "description": self.description,
            "engines": [engine.to_dict() for engine in self.engines],
        }


def timeout_by_kind(runtime: str, kind: str) -> float:
    """The default without the runtime kinds: by the spec's kind alone."""
    return DEFAULT_STARTUP_TIMEOUT_S[kind]


def engine_id(preset: str | None, name: str) -> str:
    return f"{preset}.{name}" if preset else name


def _format_path(path: list[Any], prefix: str) -> str:
    text = prefix
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(document)"


def _describe(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _error_message(error: jsonschema.ValidationError, prefix: str) -> str:
    path = list(error.absolute_path)
    where = _format_path(path, prefix)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = (
            sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        )
        unknown = ", ".join(repr(name) for name in extra)
        return f"{where}: unknown field {unknown}; allowed fields: {', '.join(allowed)}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        field_where = _format_path([*path, missing], prefix)
        rule = FIELD_RULES.get(missing, "is required")
        return f"{field_where}: required field is missing; it {rule}"
    if "propertyNames" in error.schema_path:
        got = _describe(error.instance)
        return f"{where}: keys must be environment variable names (A-Z, 0-9, _), got {got}"
    # The field is the first key below the engine (env.model is about env, not model).
    relative = path[2:] if path[:1] == ["engines"] and len(path) >= 2 else path
    if path[:1] == ["engines"] and len(path) == 2 and error.validator == "type":
        return f"{where}: must be an engine spec (a mapping), got {_describe(error.instance)}"
    field_name = relative[0] if relative and isinstance(relative[0], str) else ""
    if error.validator in ("maxItems", "minItems") and field_name == "engines":
        return f"{where}: must list between 1 and 64 engines, got {len(error.instance)}"
    if (
        error.validator == "pattern"
        and field_name == "restart_schedule"
        and isinstance(error.instance, str)
    ):
        # The parser says what exactly is wrong; the pattern only that something is.
        try:
            parse_cron(error.instance)
        except CronError as exc:
            return (
                f"{where}: not a cron expression ({exc}); e.g. '0 4 * * *' for 04:00 every"
                f" day, got {_describe(error.instance)}"
            )
    if error.validator == "pattern" and error.validator_value in CONTROL_RULES:
        return f"{where}: {CONTROL_RULES[error.validator_value]}, got {_describe(error.instance)}"
    if error.validator == "maxLength":
        limit = error.validator_value
        return f"{where}: must be at most {limit} characters, got {len(error.instance)}"
    if error.validator == "maximum":
        rule = FIELD_RULES.get(field_name, "is too large")
        if str(error.validator_value) not in rule:
            rule += f" and at most {error.validator_value}"
        return f"{where}: {rule}, got {_describe(error.instance)}"
    rule = FIELD_RULES.get(field_name, error.message)
    return f"{where}: {rule}, got {_describe(error.instance)}"


def _validate(data: Any, schema: dict[str, Any], prefix: str) -> None:
    # Only what a JSON answer can carry back: YAML has dates and NaN, JSON lone surrogates.
    problems = json_value_problems(data, prefix)
    validator = Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    problems += [_error_message(error, prefix) for error in errors]
    if problems:
        raise SpecError(problems)


def _build_engine(
    data: Mapping[str, Any], startup_timeouts: StartupTimeouts, prefix: str = ""
) -> EngineSpec:
    kind = data.get("kind", "llm")
    values = dict(data)
    values["kind"] = kind
    values.setdefault("runtime", DEFAULT_RUNTIME[kind])
    values.setdefault("startup_timeout_s", startup_timeouts(values["runtime"], kind))
    values["startup_timeout_s"] = float(values["startup_timeout_s"])
    # JSON Schema counts 2.0 as an integer; the process wants 2.
    for key in ("tensor_parallel", "pipeline_parallel", "max_concurrent_requests"):
        if key in values:
            values[key] = int(values[key])
    if values.get("nodes") is not None:
        values["nodes"] = int(values["nodes"])
    if values.get("port") is not None:
        values["port"] = int(values["port"])
    if values.get("gpu_memory_gb") is not None:
        values["gpu_memory_gb"] = float(values["gpu_memory_gb"])
    if values.get("start") == "on-demand":
        values.setdefault("idle_s", DEFAULT_ON_DEMAND_IDLE_S)
    if values.get("idle_s") is not None:
        values["idle_s"] = float(values["idle_s"])
    values["extra_args"] = tuple(values.get("extra_args", ()))
    values["aliases"] = tuple(values.get("aliases", ()))
    values["env"] = dict(values.get("env", {}))
    values["metadata"] = dict(values.get("metadata", {}))
    if values.get("disaggregated") is not None:
        where = _field(prefix, "disaggregated")
        values["disaggregated"] = parse_served_block(values["disaggregated"], where)
    return EngineSpec(**values)


def _field(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _check_values(spec: EngineSpec, prefix: str) -> list[str]:
    """What JSON Schema cannot say: no NaN or infinite numbers, a cron expression that parses."""
    problems = []
    if spec.runtime == GATEWAY_RUNTIME:
        problems.append(
            f"{_field(prefix, 'runtime')}: {GATEWAY_RUNTIME!r} is reserved for sagellm's own"
            " gateway process (gateway: in config.yaml); choose vllm, embedding, llama-cpp or"
            " a runtime of config runtimes"
        )
    if spec.nodes is not None and (spec.runtime != "vllm" or spec.kind != "llm"):
        problems.append(
            f"{_field(prefix, 'nodes')}: an engine spans nodes through vLLM's Ray executor:"
            f" only llm engines of runtime vllm take it, got kind {spec.kind!r} runtime"
            f" {spec.runtime!r}; remove nodes"
        )
    if spec.nodes is not None and spec.disaggregated is not None:
        problems.append(
            f"{_field(prefix, 'nodes')}: a disaggregated engine's instances run on one node"
            " each; remove nodes"
        )
    for name in ("startup_timeout_s", "gpu_memory_gb", "idle_s"):
        value = getattr(spec, name)
        if value is not None and not math.isfinite(value):
            problems.append(f"{_field(prefix, name)}: {FIELD_RULES[name]}, got {value}")
    if spec.restart_schedule is not None:
        try:
            parse_cron(spec.restart_schedule)
        except CronError as exc:
            problems.append(
                f"{_field(prefix, 'restart_schedule')}: not a cron expression ({exc});"
                f" e.g. '0 4 * * *' for 04:00 every day, got {_describe(spec.restart_schedule)}"
            )
    return problems


def parse_engine(
    data: Any, prefix: str = "", startup_timeouts: StartupTimeouts = timeout_by_kind
) -> EngineSpec:
    """Validate one engine spec (a dict from JSON or YAML) and fill in its defaults."""
    _validate(data, ENGINE_SCHEMA, prefix)
    spec = _build_engine(data, startup_timeouts, prefix)
    problems = _check_values(spec, prefix)
    if problems:
        raise SpecError(problems)
    return spec


def parse_preset(data: Any, startup_timeouts: StartupTimeouts = timeout_by_kind) -> Preset:
    """Validate a preset document and return it with every engine's defaults filled in."""
    _validate(data, PRESET_SCHEMA, "")
    engines = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    ports: dict[int, int] = {}
    for index, raw in enumerate(data["engines"]):
        prefix = f"engines[{index}]"
        spec = parse_engine(raw, prefix, startup_timeouts)
        if spec.name in seen:
            problems.append(
                f"{prefix}.name: {spec.name!r} is already used by engines[{seen[spec.name]}];"
                " engine names must be unique in a preset"
            )
        seen.setdefault(spec.name, index)
        reserved = reserved_name_problem(spec.name, f"{prefix}.name")
        problems += [reserved] if reserved else []
        if spec.port is not None:
            if spec.port in ports:
                problems.append(
                    f"{prefix}.port: {spec.port} is already used by engines[{ports[spec.port]}]"
                )
            ports.setdefault(spec.port, index)
        engines.append(spec)
    if problems:
        raise SpecError(problems)
    return Preset(
        name=data["name"], description=data.get("description", ""), engines=tuple(engines)
    )


def check_runtime_known(spec: EngineSpec, runtimes: Mapping[str, Any], where: str) -> None:
    """Reject a spec whose runtime is not configured, naming the ones that are."""
    if spec.runtime not in runtimes:
        known = ", ".join(sorted(name for name in runtimes if name != GATEWAY_RUNTIME))
        raise SpecError([f"{where}.runtime: unknown runtime {spec.runtime!r}; configured: {known}"])


def reserved_engine_id_problem(engine_id: str) -> str | None:
    """Why a user engine may not have this id (the gateway's own), or None."""
    if engine_id != GATEWAY_ENGINE_ID:
        return None
    return (
        f"engine id {engine_id!r} is reserved for sagellm's own gateway process"
        " (configure it with gateway: in config.yaml); choose another name"
    )


def is_valid_name(name: str) -> bool:
    return len(name) <= 63 and ecma_match(NAME_PATTERN, name)


def name_from_model(model: str) -> str:
    """An engine name from a model id: its last path part, lowercased, other runs -> '-'."""
    last = model.rstrip("/").split("/")[-1]
    return re.sub(r"[^a-z0-9]+", "-", last.lower()).strip("-")[:63].strip("-") or "engine"
