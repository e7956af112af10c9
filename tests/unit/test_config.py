"""Owns the tests of sagellmd/config.py: defaults < config.yaml < environment < flags."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from sagellmd.config import DEFAULT_RUNTIMES, Settings, load_settings
from sagellmd.errors import ConfigError
from sagellmd.schemas.config import CONFIG_SCHEMA

FULL_CONFIG = """\
api:
  host: 0.0.0.0
  port: 9999
gpus: "simulate:80,24"
ports:
  start: 30000
  end: 30100
restart:
  backoff_base_s: 2
  backoff_max_s: 120
  reset_after_s: 60
probes:
  startup_probe_interval_s: 0.5
  liveness_interval_s: 3
  liveness_failures: 5
  probe_timeout_s: 1.5
stop_grace_s: 20
tick_s: 15
stop_engines_on_exit: yes
runtimes:
  mine:
    command: [python, -m, my.server]
  vllm:
    command: [/opt/vllm/bin/python, -m, vllm.entrypoints.openai.api_server]
"""


def load(home: Path, config: str | None = None, environ=None, **flags) -> Settings:
    if config is not None:
        (home / "config.yaml").write_text(config)
    return load_settings(home=home, environ=environ or {}, **flags)


def test_defaults(tmp_path):
    settings = load(tmp_path)
    assert settings.home == tmp_path.resolve()
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8765)
    assert settings.api_url == "http://127.0.0.1:8765"
    assert settings.gpus == "auto"
    assert (settings.port_start, settings.port_end) == (20000, 20999)
    assert (settings.backoff_base_s, settings.backoff_max_s, settings.reset_after_s) == (
        1.0,
        300.0,
        600.0,
    )
    assert settings.liveness_failures == 3
    assert settings.stop_engines_on_exit is False
    assert dict(settings.runtimes) == {k: tuple(v) for k, v in DEFAULT_RUNTIMES.items()}
    assert settings.db_path == tmp_path.resolve() / "sagellm.db"
    assert settings.logs_dir == tmp_path.resolve() / "logs"
    assert settings.token_path.name == "token"
    assert settings.lock_path.name == "sagellmd.lock"


def test_empty_config_file_means_defaults(tmp_path):
    assert load(tmp_path, "") == load_settings(home=tmp_path, environ={})
    assert load(tmp_path, "# nothing\n").api_port == 8765


def test_config_file_values(tmp_path):
    settings = load(tmp_path, FULL_CONFIG)
    assert (settings.api_host, settings.api_port) == ("0.0.0.0", 9999)
    assert settings.gpus == "simulate:80,24"
    assert (settings.port_start, settings.port_end) == (30000, 30100)
    assert (settings.backoff_base_s, settings.backoff_max_s, settings.reset_after_s) == (
        2.0,
        120.0,
        60.0,
    )
    assert (
        settings.startup_probe_interval_s,
        settings.liveness_interval_s,
        settings.liveness_failures,
        settings.probe_timeout_s,
    ) == (0.5, 3.0, 5, 1.5)
    assert (settings.stop_grace_s, settings.tick_s) == (20.0, 15.0)
    assert settings.stop_engines_on_exit is True
    assert settings.runtimes["mine"] == ("python", "-m", "my.server")
    assert settings.runtimes["vllm"][0] == "/opt/vllm/bin/python"
    assert settings.runtimes["embedding"] == tuple(DEFAULT_RUNTIMES["embedding"])


def test_config_file_from_flag_and_from_environment(tmp_path):
    other = tmp_path / "elsewhere.yaml"
    other.write_text("api: {port: 7001}\n")
    (tmp_path / "config.yaml").write_text("api: {port: 7000}\n")
    assert load_settings(home=tmp_path, environ={}).api_port == 7000
    assert load_settings(home=tmp_path, config_file=other, environ={}).api_port == 7001
    assert load_settings(home=tmp_path, environ={"SAGELLM_CONFIG": str(other)}).api_port == 7001


def test_missing_config_flag_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="--config .*nope.yaml: no such file"):
        load_settings(home=tmp_path, config_file=tmp_path / "nope.yaml", environ={})


def test_environment_overrides_config(tmp_path):
    environ = {
        "SAGELLM_API_HOST": "::1",
        "SAGELLM_API_PORT": "8001",
        "SAGELLM_GPUS": "none",
        "SAGELLM_PORTS": "40000-40010",
        "SAGELLM_STOP_ENGINES_ON_EXIT": "false",
    }
    settings = load(tmp_path, FULL_CONFIG, environ)
    assert (settings.api_host, settings.api_port, settings.gpus) == ("::1", 8001, "none")
    assert (settings.port_start, settings.port_end) == (40000, 40010)
    assert settings.stop_engines_on_exit is False
    assert settings.api_url == "http://[::1]:8001"
    # What the environment does not name keeps the file's value.
    assert settings.backoff_base_s == 2.0


def test_single_port_in_the_environment(tmp_path):
    settings = load(tmp_path, environ={"SAGELLM_PORTS": "40000"})
    assert (settings.port_start, settings.port_end) == (40000, 40000)


def test_flags_override_environment(tmp_path):
    environ = {"SAGELLM_API_HOST": "0.0.0.0", "SAGELLM_API_PORT": "8001"}
    settings = load(tmp_path, FULL_CONFIG, environ, host="127.0.0.2", port=8002)
    assert (settings.api_host, settings.api_port) == ("127.0.0.2", 8002)


def test_home_is_expanded_and_resolved(tmp_path):
    settings = load_settings(home=tmp_path / "a" / ".." / "b", environ={})
    assert settings.home == (tmp_path / "b").resolve()


# (config.yaml text, environment, expected part of the message)
BAD = [
    ("unknown-key", "colour: red\n", {}, "unknown key(s) colour; known: api,"),
    (
        "cluster-backend",
        "cluster: {backend: k8s, address: auto}\n",
        {},
        "cluster.backend: must be ray (the only backend)",
    ),
    (
        "ports-end-before-start",
        "ports: {start: 200, end: 100}\n",
        {},
        "ports: end (100) must be >= start (200)",
    ),
    (
        "ports-start-after-default-end",
        "ports: {start: 30000}\n",
        {},
        "ports: end (20999) must be >= start (30000)",
    ),
    (
        "runtime-command-string",
        "runtimes: {mine: {command: python -m x}}\n",
        {},
        "runtimes.mine.command: must be a non-empty list of strings",
    ),
    (
        "runtime-command-empty",
        "runtimes: {mine: {command: []}}\n",
        {},
        "runtimes.mine.command: must be a non-empty list of strings",
    ),
    (
        "runtime-command-number",
        "runtimes: {mine: {command: [python, 3]}}\n",
        {},
        "runtimes.mine.command: must be a non-empty list of strings",
    ),
    ("runtime-not-mapping", "runtimes: {mine: [python]}\n", {}, "runtimes.mine: must be a mapping"),
    ("api-port-abc", "api: {port: abc}\n", {}, "api.port: must be an integer, got 'abc'"),
    ("api-port-zero", "api: {port: 0}\n", {}, "api.port: must be >= 1, got 0"),
    ("api-port-bool", "api: {port: true}\n", {}, "api.port: must be an integer, got True"),
    ("api-not-mapping", "api: 8765\n", {}, "api: must be a mapping, got 8765"),
    ("api-unknown-key", "api: {prot: 1}\n", {}, "api: unknown key(s) prot; known:"),
    (
        "api-header-timeout-nan",
        "api: {header_timeout_s: .nan}\n",
        {},
        "api.header_timeout_s: must be a number",
    ),
    ("api-keep-alive-zero", "api: {keep_alive_s: 0}\n", {}, "api.keep_alive_s: must be >= 0.1"),
    ("ports-start-abc", "ports: {start: abc}\n", {}, "ports.start: must be an integer"),
    (
        "negative-backoff",
        "restart: {backoff_base_s: -1}\n",
        {},
        "restart.backoff_base_s: must be >= 0, got -1",
    ),
    (
        "probe-not-number",
        "probes: {liveness_failures: many}\n",
        {},
        "probes.liveness_failures: must be an integer, got 'many'",
    ),
    ("stop-grace-negative", "stop_grace_s: -5\n", {}, "stop_grace_s: must be >= 0"),
    ("document-a-list", "- api\n", {}, "must be a mapping, got ['api']"),
    ("not-yaml", "api: [unclosed\n", {}, "not valid YAML"),
    (
        "env-api-port-abc",
        None,
        {"SAGELLM_API_PORT": "abc"},
        "environment: api.port: must be an integer, got 'abc'",
    ),
    (
        "env-ports-abc",
        None,
        {"SAGELLM_PORTS": "a-b"},
        "environment: ports.start: must be an integer",
    ),
    (
        "env-ports-reversed",
        None,
        {"SAGELLM_PORTS": "30010-30000"},
        "ports: end (30000) must be >= start (30010)",
    ),
]


@pytest.mark.parametrize(
    ("config", "environ", "expected"),
    [pytest.param(config, environ, expected, id=case) for case, config, environ, expected in BAD],
)
def test_bad_values_name_the_key(tmp_path, config, environ, expected):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, config, environ)
    assert expected in str(caught.value)
    if config is not None and "ports: end" not in expected:
        assert str(tmp_path.resolve() / "config.yaml") in str(caught.value)


def test_runtime_command_maps_python_to_this_interpreter(tmp_path):
    settings = load(tmp_path, FULL_CONFIG)
    assert settings.runtime_command("mine") == [sys.executable, "-m", "my.server"]
    assert settings.runtime_command("embedding") == [
        sys.executable,
        "-m",
        "sagellmd.engines.embedding",
    ]
    # An explicit interpreter path is kept as written.
    assert settings.runtime_command("vllm")[0] == "/opt/vllm/bin/python"
    # The template itself is not changed.
    assert settings.runtimes["mine"][0] == "python"


def test_runtime_command_maps_python3_too(tmp_path):
    settings = load(tmp_path, "runtimes: {x: {command: [python3, serve.py]}}\n")
    assert settings.runtime_command("x") == [sys.executable, "serve.py"]


def test_runtime_command_leaves_other_programs_alone(tmp_path):
    settings = load(tmp_path, "runtimes: {x: {command: [llama-server, --port, python]}}\n")
    assert settings.runtime_command("x") == ["llama-server", "--port", "python"]


def test_runtime_command_of_an_unknown_runtime(tmp_path):
    with pytest.raises(KeyError):
        load(tmp_path).runtime_command("nope")


# -- bugs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "environ"),
    [("stop_engines_on_exit: maybe\n", {}), (None, {"SAGELLM_STOP_ENGINES_ON_EXIT": "maybe"})],
    ids=["file", "environment"],
)
def test_bad_stop_engines_on_exit_names_the_key(tmp_path, config, environ):
    with pytest.raises(ConfigError, match="stop_engines_on_exit: must be true or false"):
        load(tmp_path, config, environ)


@pytest.mark.parametrize("config", ["api: {port: 70000}\n", "ports: {start: 65000, end: 70000}\n"])
def test_ports_above_65535_are_rejected(tmp_path, config):
    with pytest.raises(ConfigError):
        load(tmp_path, config)


def test_fractional_port_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="api.port"):
        load(tmp_path, "api: {port: 8765.5}\n")


@pytest.mark.parametrize("port", [0, 65536, 80000, -1])
def test_a_port_flag_out_of_range_names_the_flag(tmp_path, port):
    with pytest.raises(ConfigError, match="--port: must be"):
        load(tmp_path, None, None, port=port)


@pytest.mark.parametrize(
    ("config", "environ"),
    [
        ("restart: {backoff_base_s: .nan}\n", {}),
        ("stop_grace_s: .inf\n", {}),
        ("placement: {headroom: .nan}\n", {}),
        (None, {"SAGELLM_API_PORT": "nan"}),
        (None, {"SAGELLM_PORTS": "inf-inf"}),
    ],
)
def test_non_finite_numbers_in_config_are_refused(tmp_path, config, environ):
    with pytest.raises(ConfigError, match="must be"):
        load(tmp_path, config, environ)


# The key lists, types and bounds come from sagellmd/schemas/config.py.


def _leaves(schema: dict, prefix: str = ""):
    for key, child in schema.get("properties", {}).items():
        if "x-setting" in child:
            yield f"{prefix}{key}", child
        yield from _leaves(child, f"{prefix}{key}.")


def test_every_schema_setting_is_a_settings_field():
    fields = {field.name for field in dataclasses.fields(Settings)}
    leaves = dict(_leaves(CONFIG_SCHEMA))
    assert len(leaves) >= 20
    assert {leaf["x-setting"] for leaf in leaves.values()} <= fields


def test_a_closed_section_lists_the_keys_its_schema_has(tmp_path):
    api_keys = sorted(CONFIG_SCHEMA["properties"]["api"]["properties"])
    with pytest.raises(ConfigError, match=f"known: {', '.join(api_keys)}$"):
        load(tmp_path, "api: {prot: 1}\n")


def test_bounds_are_the_schemas(tmp_path):
    maximum = CONFIG_SCHEMA["properties"]["rollout"]["properties"]["min_healthy_s"]["maximum"]
    with pytest.raises(ConfigError, match=f"rollout.min_healthy_s: must be <= {maximum:g}"):
        load(tmp_path, f"rollout: {{min_healthy_s: {maximum + 1}}}\n")
    assert load(tmp_path, f"rollout: {{min_healthy_s: {maximum}}}\n").min_healthy_s == maximum


def test_an_empty_models_section_is_no_models_section(tmp_path):
    # `models:` with nothing under it is YAML null, like an empty api: or placement:.
    settings = load(tmp_path, "models:\n")
    assert settings.model_paths == () and settings.hub_check is True


# -- gateway ---------------------------------------------------------------------


def test_gateway_defaults(tmp_path):
    settings = load(tmp_path)
    assert settings.gateway_enabled is True
    assert (settings.gateway_host, settings.gateway_port) == ("127.0.0.1", 8000)
    assert (settings.gateway_policy, settings.gateway_balance) == ("adaptive", "least-outstanding")
    assert settings.gateway_retries == 2
    assert (settings.gateway_max_waiting, settings.gateway_queue_timeout_s) == (1024, 60.0)
    assert settings.gateway_api_keys == () and settings.gateway_api_keys_file is None
    assert (settings.gateway_slo_ttft_ms, settings.gateway_priority_aging_s) == (None, 10.0)
    assert load(tmp_path, "gateway: {slo_ttft_ms: null}\n").gateway_slo_ttft_ms is None
    assert settings.gateway_url == "http://127.0.0.1:8000"


def test_the_gateway_section_sets_every_key(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# one key a line\nfrom-file\n\n  k2  \n")
    settings = load(
        tmp_path,
        f"""\
gateway:
  enabled: false
  host: 0.0.0.0
  port: 8111
  policy: slo
  balance: kv-aware
  retries: 0
  queue: {{max_waiting: 8, timeout_s: 2.5}}
  slo_ttft_ms: 400
  priority_aging_s: 3
  api_keys: [k1, k2]
  api_keys_file: {keys}
""",
    )
    assert settings.gateway_enabled is False
    assert (settings.gateway_host, settings.gateway_port) == ("0.0.0.0", 8111)
    assert (settings.gateway_policy, settings.gateway_balance) == ("slo", "kv-aware")
    assert settings.gateway_retries == 0
    assert (settings.gateway_max_waiting, settings.gateway_queue_timeout_s) == (8, 2.5)
    assert (settings.gateway_slo_ttft_ms, settings.gateway_priority_aging_s) == (400.0, 3.0)
    assert settings.gateway_api_keys == ("k1", "k2", "from-file")
    assert settings.gateway_api_keys_file == keys


def test_gateway_environment_overrides(tmp_path):
    settings = load(
        tmp_path,
        "gateway: {port: 8111}\n",
        environ={
            "SAGELLM_GATEWAY_PORT": "8222",
            "SAGELLM_GATEWAY_ENABLED": "no",
            "SAGELLM_GATEWAY_POLICY": "fifo",
        },
    )
    assert (settings.gateway_port, settings.gateway_enabled) == (8222, False)
    assert settings.gateway_policy == "fifo"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("gateway: {port: 0}", "gateway.port: must be >= 1"),
        ("gateway: {port: eighty}", "gateway.port: must be an integer"),
        ("gateway: {enabled: maybe}", "gateway.enabled: must be true or false"),
        ("gateway: {policy: lottery}", "gateway.policy: must be one of fifo, priority, slo"),
        ("gateway: {balance: random}", "gateway.balance: must be one of least-outstanding"),
        ("gateway: {retries: -1}", "gateway.retries: must be >= 0"),
        ("gateway: {slo_ttft_ms: 0}", "gateway.slo_ttft_ms: must be >= 1"),
        ("gateway: {slo_ttft_ms: soon}", "gateway.slo_ttft_ms: must be a number"),
        ("gateway: {priority_aging_s: -2}", "gateway.priority_aging_s: must be >= 0"),
        ("gateway: {queue: {max_waiting: 1.5}}", "gateway.queue.max_waiting: must be an integer"),
        ("gateway: {queue: {timeout_s: -1}}", "gateway.queue.timeout_s: must be >= 0"),
        ("gateway: {queue: {size: 3}}", "gateway.queue: unknown key(s) size"),
        ("gateway: {colour: red}", "gateway: unknown key(s) colour"),
        ("gateway: {api_keys: k1}", "gateway.api_keys: must be a list of strings"),
        ("gateway: {api_keys: ['']}", "gateway.api_keys[0]: must be a non-empty string"),
        ("gateway: {api_keys: ['a b']}", "gateway.api_keys[0]: must not contain whitespace"),
        ("gateway: {api_keys_file: keys.txt}", "gateway.api_keys_file: must be an absolute path"),
        ("gateway: {api_keys_file: /no/such/keys}", "gateway.api_keys_file: cannot read"),
        ("gateway: {port: 8765}", "gateway.port 8765 is the daemon's own API port"),
    ],
)
def test_bad_gateway_values_name_the_field(tmp_path, config, expected):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, config + "\n")
    assert expected in caught.value.message


def test_a_network_gateway_without_keys_is_refused_naming_the_fix(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "gateway: {host: 0.0.0.0}\n")
    message = caught.value.message
    assert "gateway.host" in message and "gateway.api_keys" in message
    assert "127.0.0.1" in message and caught.value.exit_code == 2
    # With keys, or disabled, or on loopback it is fine.
    assert load(tmp_path, "gateway: {host: 0.0.0.0, api_keys: [k]}\n").gateway_api_keys == ("k",)
    assert not load(tmp_path, "gateway: {host: 0.0.0.0, enabled: false}\n").gateway_enabled
    assert load(tmp_path, "gateway: {host: '::1'}\n").gateway_url == "http://[::1]:8000"
    with pytest.raises(ConfigError):
        load(tmp_path, "{}\n", environ={"SAGELLM_GATEWAY_HOST": "192.168.1.5"})


def test_an_empty_keys_file_gives_no_keys(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# none yet\n")
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"gateway: {{host: 0.0.0.0, api_keys_file: {keys}}}\n")
    assert "gateway.api_keys" in caught.value.message
