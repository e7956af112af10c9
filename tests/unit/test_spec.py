"""Owns the tests of sagellmd/spec.py: defaults, the spec hash, and validation messages."""

from __future__ import annotations

import copy
import datetime
from dataclasses import replace
from typing import Any

import pytest

from sagellmd.errors import SpecError
from sagellmd.presets import catalogue
from sagellmd.spec import EngineSpec, engine_id, is_valid_name, parse_engine, parse_preset

GOOD_ENGINE = {"name": "chat", "model": "Qwen/Qwen2.5-1.5B-Instruct"}


def preset_doc(**overrides: Any) -> dict[str, Any]:
    """A valid preset document with two engines; keyword arguments replace top-level keys."""
    doc: dict[str, Any] = {
        "version": 1,
        "name": "tiny",
        "engines": [dict(GOOD_ENGINE), {"name": "embed", "kind": "embedding", "model": "m/bge"}],
    }
    doc.update(overrides)
    return doc


def with_engine(**fields: Any) -> dict[str, Any]:
    """A preset whose second engine (engines[1]) has `fields` set on top of a valid spec."""
    doc = preset_doc()
    doc["engines"][1].update(fields)
    return doc


def without(*keys: str, engine: int | None = None) -> dict[str, Any]:
    doc = preset_doc()
    target = doc if engine is None else doc["engines"][engine]
    for key in keys:
        del target[key]
    return doc


# -- defaults ----------------------------------------------------------------


def test_llm_defaults():
    spec = parse_engine(GOOD_ENGINE)
    assert spec.kind == "llm"
    assert spec.runtime == "vllm"
    assert spec.startup_timeout_s == 900.0
    assert spec.tensor_parallel == 1
    assert spec.pipeline_parallel == 1
    assert spec.port is None
    assert spec.max_concurrent_requests == 256
    assert spec.restart == "always"
    assert spec.extra_args == ()
    assert dict(spec.env) == {}
    assert dict(spec.metadata) == {}


def test_embedding_defaults():
    spec = parse_engine({"name": "embed", "kind": "embedding", "model": "m/bge"})
    assert spec.runtime == "embedding"
    assert spec.startup_timeout_s == 180.0


def test_explicit_runtime_and_timeout_win_over_kind_defaults():
    spec = parse_engine(
        {
            "name": "embed",
            "kind": "embedding",
            "model": "m",
            "runtime": "mine",
            "startup_timeout_s": 5,
        }
    )
    assert spec.runtime == "mine"
    assert spec.startup_timeout_s == 5.0
    assert isinstance(spec.startup_timeout_s, float)


def test_integral_floats_become_ints():
    spec = parse_engine({**GOOD_ENGINE, "tensor_parallel": 2.0, "port": 8000.0})
    assert spec.tensor_parallel == 2 and isinstance(spec.tensor_parallel, int)
    assert spec.port == 8000 and isinstance(spec.port, int)
    assert (
        spec.spec_hash
        == parse_engine({**GOOD_ENGINE, "tensor_parallel": 2, "port": 8000}).spec_hash
    )


def test_parse_does_not_mutate_its_input():
    data = {**GOOD_ENGINE, "extra_args": ["--x"], "env": {"A": "1"}, "metadata": {"k": [1]}}
    before = copy.deepcopy(data)
    parse_engine(data)
    assert data == before


def test_to_dict_round_trips_through_parse():
    spec = parse_engine(
        {
            **GOOD_ENGINE,
            "extra_args": ["--a", "b"],
            "env": {"A": "1"},
            "metadata": {"team": "x"},
            "port": 8001,
            "label": "l",
        }
    )
    assert parse_engine(spec.to_dict()) == spec


# -- spec hash ---------------------------------------------------------------

BASE_SPEC = parse_engine({**GOOD_ENGINE, "extra_args": ["--a"], "env": {"A": "1"}, "port": 8000})


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other/model"},
        {"port": 8001},
        {"port": None},
        {"extra_args": ("--a", "--b")},
        {"extra_args": ("--b",)},
        {"env": {"A": "2"}},
        {"env": {"A": "1", "B": "1"}},
        {"kind": "embedding"},
        {"runtime": "other"},
        {"tensor_parallel": 2},
        {"pipeline_parallel": 2},
        {"use_gpu": False},
        {"gpu_memory_gb": 8.0},
        {"max_concurrent_requests": 8},
        {"idle_action": "sleep"},
    ],
    ids=lambda change: next(iter(change)) + "=" + repr(next(iter(change.values()))),
)
def test_spec_hash_changes_with_process_fields(change):
    assert replace(BASE_SPEC, **change).spec_hash != BASE_SPEC.spec_hash


@pytest.mark.parametrize(
    "change",
    [
        {"label": "renamed"},
        {"metadata": {"owner": "someone"}},
        {"restart": "never"},
        {"restart": "on-failure"},
        {"startup_timeout_s": 1.0},
        {"restart_schedule": "0 3 * * *"},
        {"start": "on-demand"},
        {"idle_s": 30.0},
        {"idle_action": "stop"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_spec_hash_ignores_fields_applied_in_place(change):
    assert replace(BASE_SPEC, **change).spec_hash == BASE_SPEC.spec_hash


def test_spec_hash_ignores_env_key_order():
    one = replace(BASE_SPEC, env={"A": "1", "B": "2"})
    two = replace(BASE_SPEC, env={"B": "2", "A": "1"})
    assert one.spec_hash == two.spec_hash


def test_spec_hash_is_short_hex():
    assert len(BASE_SPEC.spec_hash) == 16
    int(BASE_SPEC.spec_hash, 16)


# -- wants_gpu ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "use_gpu", "expected"),
    [
        ("llm", None, True),
        ("embedding", None, False),
        ("llm", False, False),
        ("embedding", True, True),
        ("llm", True, True),
        ("embedding", False, False),
    ],
)
def test_wants_gpu(kind, use_gpu, expected):
    assert EngineSpec(name="e", model="m", kind=kind, use_gpu=use_gpu).wants_gpu is expected


# -- names -------------------------------------------------------------------


def test_engine_id():
    assert engine_id("qwen-mini", "chat") == "qwen-mini.chat"
    assert engine_id(None, "chat") == "chat"


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("a", True),
        ("a-1", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("A", False),
        ("-a", False),
        ("a-", False),
        ("a.b", False),
        ("", False),
        ("a_b", False),
    ],
)
def test_is_valid_name(name, valid):
    assert is_valid_name(name) is valid


# -- built-in presets --------------------------------------------------------


def test_builtin_presets_parse():
    entries = catalogue(None)
    assert set(entries) == {"minilm-cpu", "qwen-cpu", "qwen-mini", "qwen-plus-embeddings"}
    for name, entry in entries.items():
        assert entry.source == "builtin"
        assert entry.preset.name == name
        assert entry.preset.engines
        assert parse_preset(entry.preset.to_dict()) == entry.preset


def test_builtin_preset_contents():
    entries = catalogue(None)
    minilm = entries["minilm-cpu"].preset
    (embed,) = minilm.engines
    assert (embed.kind, embed.runtime, embed.startup_timeout_s) == ("embedding", "embedding", 180.0)
    assert not embed.wants_gpu
    assert dict(embed.env) == {"HF_HUB_OFFLINE": "1"}

    plus = {spec.name: spec for spec in entries["qwen-plus-embeddings"].preset.engines}
    assert plus["chat"].tensor_parallel == 2 and plus["chat"].wants_gpu
    assert plus["chat"].max_concurrent_requests == 512
    assert plus["embed"].port == 8090

    mini = {spec.name: spec for spec in entries["qwen-mini"].preset.engines}
    assert set(mini) == {"chat", "embed"}
    assert mini["chat"].runtime == "vllm"

    (cpu,) = entries["qwen-cpu"].preset.engines
    assert (cpu.kind, cpu.runtime) == ("llm", "llama-cpp")
    assert cpu.model == "Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"


def test_valid_preset_parses():
    preset = parse_preset({**preset_doc(), "description": "two engines"})
    assert preset.name == "tiny"
    assert preset.description == "two engines"
    assert [spec.name for spec in preset.engines] == ["chat", "embed"]


# -- malformed documents -----------------------------------------------------

NAME_RULE = "must be lowercase letters, digits and '-'"
INT_RULE = "must be an integer >= 1, got "
PORT_RULE = "must be an integer from 1 to 65535, or null for automatic, got "
GPU_MEM_RULE = "must be a number > 0 (GiB per GPU) or null for an estimate, got "

# (id, parser, document, expected start of one of the error messages)
MALFORMED = [
    # unknown fields
    (
        "unknown-top-level",
        parse_preset,
        preset_doc(colour="red"),
        "(document): unknown field 'colour'; allowed fields: description, engines, name, version",
    ),
    (
        "unknown-engine-field",
        parse_preset,
        with_engine(gpus=2),
        "engines[1]: unknown field 'gpus'; allowed fields: aliases, disaggregated, env,",
    ),
    (
        "unknown-field-bare-engine",
        parse_engine,
        {**GOOD_ENGINE, "replicas": 2},
        "(document): unknown field 'replicas'",
    ),
    # missing required fields
    (
        "missing-preset-name",
        parse_preset,
        without("name"),
        "name: required field is missing; it " + NAME_RULE,
    ),
    (
        "missing-version",
        parse_preset,
        without("version"),
        "version: required field is missing; it must be 1",
    ),
    (
        "missing-engines",
        parse_preset,
        without("engines"),
        "engines: required field is missing; it must be a non-empty list of engine specs",
    ),
    (
        "missing-engine-name",
        parse_preset,
        without("name", engine=1),
        "engines[1].name: required field is missing",
    ),
    (
        "missing-engine-model",
        parse_preset,
        without("model", engine=1),
        "engines[1].model: required field is missing; it must be a non-empty string",
    ),
    (
        "missing-model-bare-engine",
        parse_engine,
        {"name": "chat"},
        "model: required field is missing",
    ),
    # names
    ("name-uppercase", parse_preset, with_engine(name="Embed"), f"engines[1].name: {NAME_RULE}"),
    (
        "name-leading-dash",
        parse_preset,
        with_engine(name="-embed"),
        f"engines[1].name: {NAME_RULE}",
    ),
    (
        "name-64-chars",
        parse_preset,
        with_engine(name="e" * 64),
        "engines[1].name: must be at most 63 characters, got 64",
    ),
    ("name-with-dot", parse_preset, with_engine(name="em.bed"), f"engines[1].name: {NAME_RULE}"),
    ("name-not-string", parse_preset, with_engine(name=7), f"engines[1].name: {NAME_RULE}"),
    ("preset-name-uppercase", parse_preset, preset_doc(name="Tiny"), f"name: {NAME_RULE}"),
    ("preset-name-trailing-dash", parse_preset, preset_doc(name="tiny-"), f"name: {NAME_RULE}"),
    (
        "model-empty",
        parse_preset,
        with_engine(model=""),
        "engines[1].model: must be a non-empty string",
    ),
    # enums
    (
        "kind-not-in-enum",
        parse_preset,
        with_engine(kind="chat"),
        'engines[1].kind: must be one of: llm, embedding, got "chat"',
    ),
    (
        "restart-sometimes",
        parse_preset,
        with_engine(restart="sometimes"),
        'engines[1].restart: must be one of: always, on-failure, never, got "sometimes"',
    ),
    # parallelism
    (
        "tp-0",
        parse_preset,
        with_engine(tensor_parallel=0),
        "engines[1].tensor_parallel: must be an integer >= 1, got 0",
    ),
    (
        "tp-negative",
        parse_preset,
        with_engine(tensor_parallel=-1),
        f"engines[1].tensor_parallel: {INT_RULE}-1",
    ),
    (
        "tp-string",
        parse_preset,
        with_engine(tensor_parallel="2"),
        f'engines[1].tensor_parallel: {INT_RULE}"2"',
    ),
    (
        "tp-bool",
        parse_preset,
        with_engine(tensor_parallel=True),
        f"engines[1].tensor_parallel: {INT_RULE}true",
    ),
    (
        "tp-fraction",
        parse_preset,
        with_engine(tensor_parallel=1.5),
        f"engines[1].tensor_parallel: {INT_RULE}1.5",
    ),
    (
        "tp-too-large",
        parse_preset,
        with_engine(tensor_parallel=65),
        "engines[1].tensor_parallel: must be an integer >= 1 and at most 64, got 65",
    ),
    (
        "pp-0",
        parse_preset,
        with_engine(pipeline_parallel=0),
        f"engines[1].pipeline_parallel: {INT_RULE}0",
    ),
    (
        "pp-negative",
        parse_preset,
        with_engine(pipeline_parallel=-1),
        f"engines[1].pipeline_parallel: {INT_RULE}-1",
    ),
    (
        "pp-string",
        parse_preset,
        with_engine(pipeline_parallel="2"),
        f'engines[1].pipeline_parallel: {INT_RULE}"2"',
    ),
    (
        "pp-bool",
        parse_preset,
        with_engine(pipeline_parallel=True),
        f"engines[1].pipeline_parallel: {INT_RULE}true",
    ),
    (
        "pp-fraction",
        parse_preset,
        with_engine(pipeline_parallel=1.5),
        f"engines[1].pipeline_parallel: {INT_RULE}1.5",
    ),
    (
        "tp-bare-engine",
        parse_engine,
        {**GOOD_ENGINE, "tensor_parallel": 0},
        f"tensor_parallel: {INT_RULE}0",
    ),
    # ports and limits
    ("port-0", parse_preset, with_engine(port=0), f"engines[1].port: {PORT_RULE}0"),
    ("port-70000", parse_preset, with_engine(port=70000), f"engines[1].port: {PORT_RULE}70000"),
    ("port-string", parse_preset, with_engine(port="80"), f'engines[1].port: {PORT_RULE}"80"'),
    (
        "max-concurrent-0",
        parse_preset,
        with_engine(max_concurrent_requests=0),
        f"engines[1].max_concurrent_requests: {INT_RULE}0",
    ),
    (
        "use-gpu-yes",
        parse_preset,
        with_engine(use_gpu="yes"),
        'engines[1].use_gpu: must be true, false or null, got "yes"',
    ),
    (
        "gpu-memory-0",
        parse_preset,
        with_engine(gpu_memory_gb=0),
        f"engines[1].gpu_memory_gb: {GPU_MEM_RULE}0",
    ),
    (
        "gpu-memory-negative",
        parse_preset,
        with_engine(gpu_memory_gb=-1),
        f"engines[1].gpu_memory_gb: {GPU_MEM_RULE}-1",
    ),
    (
        "startup-timeout-0",
        parse_preset,
        with_engine(startup_timeout_s=0),
        "engines[1].startup_timeout_s: must be a number of seconds > 0, got 0",
    ),
    # lists and mappings
    (
        "extra-args-string",
        parse_preset,
        with_engine(extra_args="--enforce-eager"),
        'engines[1].extra_args: must be a list of strings, got "--enforce-eager"',
    ),
    (
        "extra-args-number",
        parse_preset,
        with_engine(extra_args=["--max-model-len", 4096]),
        "engines[1].extra_args[1]: must be a list of strings, got 4096",
    ),
    (
        "extra-args-nul",
        parse_preset,
        with_engine(extra_args=["a\x00b"]),
        "engines[1].extra_args[0]: must not contain control characters other than tab",
    ),
    (
        "env-non-string-value",
        parse_preset,
        with_engine(env={"HF_HOME": 1}),
        "engines[1].env.HF_HOME: must be a mapping of VARIABLE_NAME to string, got 1",
    ),
    ("env-bad-key", parse_preset, with_engine(env={"1BAD": "x"}), "engines[1].env: "),
    ("env-dash-key", parse_preset, with_engine(env={"MY-VAR": "x"}), "engines[1].env: "),
    (
        "env-not-mapping",
        parse_preset,
        with_engine(env=["A=1"]),
        'engines[1].env: must be a mapping of VARIABLE_NAME to string, got ["A=1"]',
    ),
    (
        "metadata-list",
        parse_preset,
        with_engine(metadata=["a"]),
        'engines[1].metadata: must be a mapping, got ["a"]',
    ),
    # the document
    ("version-2", parse_preset, preset_doc(version=2), "version: must be 1, got 2"),
    (
        "engines-empty",
        parse_preset,
        preset_doc(engines=[]),
        "engines: must list between 1 and 64 engines, got 0",
    ),
    (
        "engines-not-list",
        parse_preset,
        preset_doc(engines={"chat": GOOD_ENGINE}),
        "engines: must be a non-empty list of engine specs, got {",
    ),
    (
        "engines-string",
        parse_preset,
        preset_doc(engines="chat"),
        'engines: must be a non-empty list of engine specs, got "chat"',
    ),
    (
        "duplicate-engine-names",
        parse_preset,
        preset_doc(engines=[GOOD_ENGINE, {"name": "x", "model": "m"}, dict(GOOD_ENGINE)]),
        "engines[2].name: 'chat' is already used by engines[0]; engine names must be unique",
    ),
    (
        "duplicate-ports",
        parse_preset,
        preset_doc(
            engines=[{**GOOD_ENGINE, "port": 8090}, {"name": "b", "model": "m", "port": 8090}]
        ),
        "engines[1].port: 8090 is already used by engines[0]",
    ),
    ("document-list", parse_preset, [preset_doc()], "(document): "),
    ("document-string", parse_preset, "name: tiny", "(document): "),
    ("document-none", parse_preset, None, "(document): "),
    ("engine-document-list", parse_engine, [GOOD_ENGINE], "(document): "),
]


@pytest.mark.parametrize(
    ("parser", "document", "expected"),
    [pytest.param(parser, doc, expected, id=case) for case, parser, doc, expected in MALFORMED],
)
def test_malformed_documents_name_the_field(parser, document, expected):
    with pytest.raises(SpecError) as caught:
        parser(document)
    error = caught.value
    assert any(message.startswith(expected) for message in error.errors), error.errors
    assert expected in str(error)
    assert error.details == {"errors": error.errors}


def test_malformed_table_is_large_enough():
    assert len(MALFORMED) >= 30


def test_every_problem_is_reported_at_once():
    doc = preset_doc(version=2)
    doc["engines"][0]["tensor_parallel"] = 0
    with pytest.raises(SpecError) as caught:
        parse_preset(doc)
    assert any(e.startswith("version: must be 1") for e in caught.value.errors)
    assert any(e.startswith("engines[0].tensor_parallel:") for e in caught.value.errors)


def test_long_values_are_shortened_in_messages():
    with pytest.raises(SpecError) as caught:
        parse_preset(with_engine(kind="x" * 200))
    (message,) = caught.value.errors
    assert message.endswith("...")
    assert len(message) < 200


# -- bugs --------------------------------------------------------------------


@pytest.mark.parametrize("field", ["startup_timeout_s", "gpu_memory_gb"])
def test_nan_numbers_are_rejected(field):
    with pytest.raises(SpecError, match=field):
        parse_engine({**GOOD_ENGINE, field: float("nan")})


def test_nul_byte_message_of_a_bare_engine_has_no_leading_dot():
    with pytest.raises(SpecError) as caught:
        parse_engine({**GOOD_ENGINE, "extra_args": ["a\x00b"]})
    (message,) = caught.value.errors
    assert message.startswith("extra_args[0]: must not contain control characters")


def test_env_key_named_like_a_field_gets_the_env_rule():
    with pytest.raises(SpecError) as caught:
        parse_preset(with_engine(env={"model": 1}))
    (message,) = caught.value.errors
    assert message.startswith("engines[1].env.model: must be a mapping of VARIABLE_NAME to string")


def test_bad_env_key_message_says_keys_must_be_variable_names():
    with pytest.raises(SpecError) as caught:
        parse_preset(with_engine(env={"1BAD": "x"}))
    assert "keys must be environment variable names" in str(caught.value)


def test_engine_item_that_is_not_a_mapping_says_so():
    with pytest.raises(SpecError) as caught:
        parse_preset(preset_doc(engines=["chat"]))
    (message,) = caught.value.errors
    assert message.startswith("engines[0]:")
    assert "must be a non-empty list" not in message


# (spec fields on top of GOOD_ENGINE, expected start of the one message)
UNSENDABLE_OR_UNSPAWNABLE = [
    ({"model": "fake/a\x00b"}, "model: must not contain control characters"),
    ({"model": "m\n"}, "model: must not contain control characters"),
    ({"model": "m\x85"}, "model: must not contain control characters"),
    ({"label": "a\tb"}, "label: must not contain control characters"),
    ({"env": {"A": "x\x00"}}, "env.A: must not contain control characters other than tab"),
    ({"extra_args": ["\x1b[31m"]}, "extra_args[0]: must not contain control characters"),
    ({"label": "\ud800"}, "label: not valid Unicode (a lone surrogate \\ud800)"),
    ({"metadata": {"k": ["\udfff"]}}, "metadata.k[0]: not valid Unicode"),
    ({"metadata": {"\ud800": 1}}, "metadata: a key is not valid Unicode"),
    ({"metadata": {"x": float("nan")}}, "metadata.x: nan is not a number JSON allows"),
    ({"metadata": {"x": float("-inf")}}, "metadata.x: -inf is not a number JSON allows"),
    ({"metadata": {"when": datetime.date(2024, 1, 1)}}, "metadata.when: must be a JSON value"),
    ({"metadata": {1: "a"}}, "metadata: keys must be strings"),
]


@pytest.mark.parametrize(("fields", "expected"), UNSENDABLE_OR_UNSPAWNABLE)
def test_values_no_answer_could_carry_or_no_process_could_take_are_refused(fields, expected):
    with pytest.raises(SpecError) as caught:
        parse_engine({**GOOD_ENGINE, **fields})
    assert caught.value.errors[0].startswith(expected), caught.value.errors
    # The message itself must be sendable: ASCII-escaped, never the bad character.
    caught.value.message.encode("ascii")


def test_tabs_and_newlines_are_fine_in_arguments_env_and_metadata():
    spec = parse_engine(
        {
            **GOOD_ENGINE,
            "extra_args": ["--chat-template", "{{ a }}\n\t{{ b }}\r\n"],
            "env": {"PEM": "-----BEGIN-----\nxyz\n"},
            "metadata": {"note": "two\nlines", "label\u00e9": "caf\u00e9 \U0001f600"},
            "label": "caf\u00e9 \u65e5\u672c",
        }
    )
    assert spec.env["PEM"].endswith("\n")


def test_nesting_is_bounded_without_recursion():
    deep: dict = {}
    node = deep
    for _ in range(5000):  # far past Python's recursion limit
        node["a"] = {}
        node = node["a"]
    with pytest.raises(SpecError) as caught:
        parse_engine({**GOOD_ENGINE, "metadata": deep})
    assert caught.value.errors == ["metadata: nested deeper than 64 levels"]
    shallow: dict = {}
    node = shallow
    for _ in range(60):
        node["a"] = {}
        node = node["a"]
    assert parse_engine({**GOOD_ENGINE, "metadata": shallow}).metadata == shallow


@pytest.mark.parametrize(
    "fields",
    [{"name": "chat\n"}, {"env": {"A\n": "x"}}, {"runtime": "vllm\n"}, {"model": "m\n"}],
)
def test_a_trailing_newline_does_not_slip_past_a_pattern(fields):
    # Python's `$` matches before a final newline; JSON Schema's does not.
    with pytest.raises(SpecError):
        parse_engine({**GOOD_ENGINE, **fields})


def test_a_name_with_a_trailing_newline_is_not_valid():
    assert not is_valid_name("chat\n")


# -- aliases and reserved names ----------------------------------------------------


def test_aliases_are_routable_names_and_no_process_field():
    spec = parse_engine({**GOOD_ENGINE, "aliases": ["qwen", "fast-chat"]})
    assert spec.aliases == ("qwen", "fast-chat")
    assert spec.to_dict()["aliases"] == ["qwen", "fast-chat"]
    plain = parse_engine(GOOD_ENGINE)
    assert plain.aliases == () and plain.spec_hash == spec.spec_hash


@pytest.mark.parametrize(
    ("aliases", "expected"),
    [
        (["two words"], "aliases[0]: must be one word"),
        (["tab\there"], "aliases[0]: must be one word"),
        ([""], "aliases[0]:"),
        (["a", "a"], "aliases: must be a list of distinct names"),
        ("qwen", "aliases: must be a list of distinct names"),
        ([3], "aliases[0]:"),
    ],
)
def test_bad_aliases_name_the_field(aliases, expected):
    with pytest.raises(SpecError) as caught:
        parse_engine({**GOOD_ENGINE, "aliases": aliases})
    assert any(message.startswith(expected) for message in caught.value.errors), caught.value.errors


def test_the_gateway_runtime_is_reserved():
    with pytest.raises(SpecError) as caught:
        parse_engine({**GOOD_ENGINE, "runtime": "gateway"})
    assert caught.value.errors[0].startswith("runtime: 'gateway' is reserved")


def test_the_gateway_engine_id_is_reserved():
    from sagellmd.spec import reserved_engine_id_problem

    assert "reserved" in (reserved_engine_id_problem("gateway") or "")
    assert reserved_engine_id_problem("gateway-2") is None
    assert reserved_engine_id_problem("p.gateway") is None


def test_on_demand_fields_default_and_fill_idle_s():
    always = parse_engine(GOOD_ENGINE)
    assert (always.start, always.idle_s, always.idle_action) == ("always", None, "stop")
    assert not always.idle_able
    on_demand = parse_engine({**GOOD_ENGINE, "start": "on-demand"})
    assert (on_demand.start, on_demand.idle_s) == ("on-demand", 600.0)
    assert on_demand.idle_able
    # An explicit null on an on-demand engine means: never idle once started.
    assert parse_engine({**GOOD_ENGINE, "start": "on-demand", "idle_s": None}).idle_s is None
    timed = parse_engine({**GOOD_ENGINE, "idle_s": 2, "idle_action": "sleep"})
    assert (timed.idle_s, timed.idle_action, timed.idle_able) == (2.0, "sleep", True)
    assert isinstance(timed.idle_s, float)
    assert parse_engine(timed.to_dict()) == timed


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"start": "lazy"}, 'chat.start: must be one of: always, on-demand, got "lazy"'),
        ({"idle_s": 0}, "chat.idle_s: must be a number of seconds > 0, or null for never idle"),
        ({"idle_s": "10"}, "chat.idle_s: must be a number of seconds > 0"),
        ({"idle_action": "pause"}, "chat.idle_action: must be one of: stop, sleep"),
    ],
)
def test_bad_on_demand_fields_name_the_field(fields, expected):
    with pytest.raises(SpecError) as caught:
        parse_engine({**GOOD_ENGINE, **fields}, "chat")
    assert caught.value.errors[0].startswith(expected)
