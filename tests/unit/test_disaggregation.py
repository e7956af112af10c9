"""The `disaggregated:` block: parsing, its messages, the instances and the GPU check."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from sagellmd.disaggregation import (
    Disaggregation,
    RoleSpec,
    check_gpu_count,
    engine_problems,
    gpu_shortfall,
    gpus_needed,
    instance_spec,
    instances_of,
    parse_disaggregated,
)
from sagellmd.errors import SpecError
from sagellmd.spec import parse_engine, parse_preset

WHERE = "engines[1].disaggregated"


def problems_of(data: object) -> list[str]:
    with pytest.raises(SpecError) as caught:
        parse_disaggregated(data, WHERE)
    return caught.value.errors


def test_empty_block_is_one_prefill_and_one_decode_over_nixl():
    block = parse_disaggregated({}, WHERE)
    assert block == Disaggregation(RoleSpec(), RoleSpec(), "nixl", None)
    assert block.prefill.replicas == 1 and block.decode.tensor_parallel == 1


def test_full_block_from_yaml():
    text = """
    prefill: {replicas: 2, tensor_parallel: 2, gpu_memory_gb: 30.5, extra_args: [--enforce-eager]}
    decode: {replicas: 1, tensor_parallel: 1.0, extra_args: ["--max-model-len", "8192"]}
    connector: p2p-nccl
    threshold_input_tokens: 512
    """
    block = parse_disaggregated(yaml.safe_load(text), WHERE)
    assert block.prefill == RoleSpec(2, 2, 30.5, ("--enforce-eager",))
    assert block.decode == RoleSpec(1, 1, None, ("--max-model-len", "8192"))
    assert isinstance(block.decode.tensor_parallel, int)
    assert block.connector == "p2p-nccl"
    assert block.threshold_input_tokens == 512


def test_to_dict_round_trips():
    block = parse_disaggregated(
        {
            "prefill": {"replicas": 3, "gpu_memory_gb": 12},
            "decode": {"tensor_parallel": 4, "extra_args": ["-x"]},
            "connector": "p2p-nccl",
            "threshold_input_tokens": 0,
        },
        WHERE,
    )
    data = block.to_dict()
    assert parse_disaggregated(data, WHERE) == block
    assert data["prefill"]["gpu_memory_gb"] == 12.0
    assert data["decode"]["extra_args"] == ["-x"]
    assert parse_disaggregated({}, WHERE).to_dict() == {
        "prefill": {"replicas": 1, "tensor_parallel": 1, "gpu_memory_gb": None, "extra_args": []},
        "decode": {"replicas": 1, "tensor_parallel": 1, "gpu_memory_gb": None, "extra_args": []},
        "connector": "nixl",
        "threshold_input_tokens": None,
    }


def test_messages_name_the_field_path_like_spec_does():
    assert problems_of({"prefill": {"tensor_parallel": 0}}) == [
        "engines[1].disaggregated.prefill.tensor_parallel: must be an integer >= 1 and at most"
        " 64, got 0"
    ]
    assert problems_of({"decode": {"replicas": True}}) == [
        "engines[1].disaggregated.decode.replicas: must be an integer from 1 to 64, got true"
    ]
    assert problems_of({"prefill": {"gpu_memory_gb": -1}}) == [
        "engines[1].disaggregated.prefill.gpu_memory_gb: must be a number > 0 (GiB per GPU) or"
        " null for an estimate, got -1"
    ]
    assert problems_of({"decode": {"extra_args": "--enforce-eager"}}) == [
        "engines[1].disaggregated.decode.extra_args: must be a list of strings,"
        ' got "--enforce-eager"'
    ]
    assert problems_of({"connector": "mooncake"}) == [
        "engines[1].disaggregated.connector: must be one of: nixl, p2p-nccl, lmcache,"
        ' got "mooncake"'
    ]
    assert problems_of({"threshold_input_tokens": -5})[0].startswith(
        "engines[1].disaggregated.threshold_input_tokens: must be an integer >= 0 or null"
    )


def test_the_same_rule_as_spec_for_the_same_field():
    """A role's tensor_parallel reads like the engine's own (test_spec checks that one)."""
    with pytest.raises(SpecError) as caught:
        parse_preset(
            {
                "version": 1,
                "name": "p",
                "engines": [{"name": "a", "model": "m", "tensor_parallel": 0}],
            }
        )
    engine_rule = caught.value.errors[0].split(": ", 1)[1]
    role_rule = problems_of({"prefill": {"tensor_parallel": 0}})[0].split(": ", 1)[1]
    assert role_rule.startswith(engine_rule.removesuffix(", got 0"))


def test_unknown_keys_are_named_with_the_allowed_ones():
    assert problems_of({"prefil": {}, "decode": {"replica": 2}}) == [
        "engines[1].disaggregated: unknown field 'prefil'; allowed fields: connector, decode,"
        " prefill, threshold_input_tokens",
        "engines[1].disaggregated.decode: unknown field 'replica'; allowed fields: extra_args,"
        " gpu_memory_gb, replicas, tensor_parallel",
    ]


def test_every_problem_is_reported_at_once():
    problems = problems_of(
        {"prefill": {"replicas": 0}, "decode": {"tensor_parallel": "2"}, "connector": 1}
    )
    assert [p.split(":")[0] for p in problems] == [
        f"{WHERE}.prefill.replicas",
        f"{WHERE}.decode.tensor_parallel",
        f"{WHERE}.connector",
    ]


def test_not_a_mapping_and_bad_json_values():
    assert problems_of(None)[0].startswith(
        "engines[1].disaggregated: must be a mapping of prefill, decode, connector,"
        " threshold_input_tokens ({} for one prefill and one decode instance over nixl), got null"
    )
    assert problems_of({"prefill": [1]}) == [
        "engines[1].disaggregated.prefill: must be a mapping of replicas, tensor_parallel,"
        " gpu_memory_gb, extra_args, got [1]"
    ]
    assert problems_of({"prefill": {"gpu_memory_gb": float("nan")}}) == [
        "engines[1].disaggregated.prefill.gpu_memory_gb: nan is not a number JSON allows;"
        " numbers must be finite"
    ]


def test_role_args_may_not_carry_the_flags_sagellm_sets():
    problems = problems_of(
        {"decode": {"extra_args": ["--kv-transfer-config={}", "--tensor-parallel-size", "2"]}}
    )
    assert problems == [
        f"{WHERE}.decode.extra_args[0]: sagellm sets --kv-transfer-config on every prefill and"
        " decode instance itself; remove it (a role sets its size with tensor_parallel)",
        f"{WHERE}.decode.extra_args[1]: sagellm sets --tensor-parallel-size on every prefill and"
        " decode instance itself; remove it (a role sets its size with tensor_parallel)",
    ]
    assert problems_of({"prefill": {"extra_args": ["a\x00b"]}})[0].startswith(
        f"{WHERE}.prefill.extra_args[0]: must not contain control characters"
    )


def test_lmcache_decode_with_tensor_parallel_is_refused_with_the_way_out():
    assert problems_of({"connector": "lmcache", "decode": {"tensor_parallel": 2}}) == [
        f"{WHERE}.decode.tensor_parallel: connector lmcache supports 1 for now, got 2; use"
        " connector nixl for a tensor-parallel decode"
    ]


def test_only_llm_engines_on_vllm():
    embedding = parse_engine({"name": "emb", "model": "m", "kind": "embedding"})
    assert engine_problems(embedding, "engines[0]") == [
        "engines[0].disaggregated: only llm engines can be disaggregated; kind 'embedding' has"
        " no decode phase to separate from its prefill (remove disaggregated)"
    ]
    gguf = parse_engine({"name": "g", "model": "/m.gguf", "runtime": "llama-cpp"})
    assert engine_problems(gguf, "") == [
        "disaggregated: needs the vllm runtime (its KV connectors move the KV cache from the"
        " prefill to the decode instance); runtime 'llama-cpp' has none"
    ]
    custom = parse_engine({"name": "c", "model": "m", "runtime": "my-vllm"})
    assert engine_problems(custom, "", runtime_kind="vllm") == []
    assert engine_problems(parse_engine({"name": "chat", "model": "m"}), "engines[0]") == []


def test_engine_port_and_owned_flags_are_refused():
    spec = parse_engine(
        {"name": "chat", "model": "m", "port": 8001, "extra_args": ["--kv-transfer-config", "{}"]}
    )
    assert engine_problems(spec, "engines[2]") == [
        "engines[2].port: a disaggregated engine runs several instances, each on its own"
        " automatic port; remove port (got 8001)",
        "engines[2].extra_args[0]: sagellm sets --kv-transfer-config on every prefill and"
        " decode instance itself; remove it (a role sets its size with tensor_parallel)",
    ]


def test_instances_of_an_engine():
    block = Disaggregation(RoleSpec(2, 2, 20.0, ("-p",)), RoleSpec(1, 1, None, ("-d",)))
    instances = instances_of("lab.chat", block)
    assert [(i.instance_id, i.role, i.index, i.tensor_parallel) for i in instances] == [
        ("lab.chat.prefill-0", "prefill", 0, 2),
        ("lab.chat.prefill-1", "prefill", 1, 2),
        ("lab.chat.decode-0", "decode", 0, 1),
    ]
    assert {i.engine_id for i in instances} == {"lab.chat"}
    assert instances[0].gpu_memory_gb == 20.0 and instances[2].gpu_memory_gb is None
    assert instances[1].extra_args == ("-p",) and instances[2].extra_args == ("-d",)


def test_instance_spec_is_the_engine_sized_for_its_role():
    spec = parse_engine(
        {"name": "chat", "model": "m", "gpu_memory_gb": 10, "extra_args": ["--dtype", "half"]}
    )
    block = Disaggregation(RoleSpec(1, 2, 30.0, ("-p",)), RoleSpec())
    prefill, decode = (instance_spec(spec, i) for i in instances_of("chat", block))
    assert (prefill.tensor_parallel, prefill.gpu_memory_gb) == (2, 30.0)
    assert prefill.extra_args == ("--dtype", "half", "-p")
    assert (decode.tensor_parallel, decode.gpu_memory_gb, decode.extra_args) == (
        1,
        10.0,
        ("--dtype", "half"),
    )
    assert prefill.spec_hash != decode.spec_hash
    assert (prefill.name, prefill.model) == ("chat", "m")


def test_one_gpu_is_never_enough():
    block = Disaggregation()
    assert gpu_shortfall(block, 1) == (
        "disaggregated needs at least 2 GPUs (prefill and decode never share one): this box has 1"
    )
    assert gpu_shortfall(block, 0).endswith("this box has 0")
    assert gpu_shortfall(block, 2) is None


def test_shortfall_gives_the_per_role_sums():
    block = Disaggregation(RoleSpec(replicas=2, tensor_parallel=2), RoleSpec(tensor_parallel=1))
    assert gpus_needed(block) == 5
    assert gpu_shortfall(block, 5) is None
    assert gpu_shortfall(block, 4) == (
        "disaggregated needs 5 GPUs (prefill 2 replicas x 2 GPUs + decode 1 replica x 1 GPU):"
        " this box has 4"
    )
    assert gpus_needed(block, pipeline_parallel=2) == 10
    assert "prefill 2 replicas x 4 GPUs + decode 1 replica x 2 GPUs" in gpu_shortfall(block, 8, 2)


def test_check_gpu_count_raises_with_the_path():
    with pytest.raises(SpecError) as caught:
        check_gpu_count(Disaggregation(), 1, WHERE)
    assert caught.value.errors == [
        f"{WHERE}: disaggregated needs at least 2 GPUs (prefill and decode never share one):"
        " this box has 1"
    ]
    check_gpu_count(Disaggregation(), 2, WHERE)


def test_a_preset_engine_declares_the_block_and_spec_keeps_it_round_trip():
    """spec.py parses the block into the EngineSpec; to_dict gives it back for the store."""
    preset = parse_preset(
        {
            "version": 1,
            "name": "lab",
            "engines": [
                {"name": "chat", "model": "m", "disaggregated": {"decode": {"replicas": 2}}},
                {"name": "plain", "model": "m"},
            ],
        }
    )
    chat, plain = preset.engines
    assert chat.disaggregated == Disaggregation(decode=RoleSpec(replicas=2))
    assert plain.disaggregated is None and "disaggregated" not in plain.to_dict()
    again = parse_engine(chat.to_dict())
    assert again == chat and again.spec_hash == chat.spec_hash
    assert chat.spec_hash != replace(chat, disaggregated=None).spec_hash


@pytest.mark.parametrize("connector", ["p2p-nccl", "lmcache"])
def test_connectors_the_gateway_cannot_serve_are_refused_naming_the_field(connector):
    with pytest.raises(SpecError) as caught:
        parse_engine(
            {"name": "chat", "model": "m", "disaggregated": {"connector": connector}}, "engines[0]"
        )
    assert caught.value.errors == [
        "engines[0].disaggregated.connector: only nixl is supported so far (p2p-nccl and"
        " lmcache need a proxy protocol the gateway does not speak yet); use connector: nixl,"
        f" got {connector!r}"
    ]


@pytest.mark.parametrize("name", ["prefill-0", "decode-12"])
def test_instance_names_are_reserved_in_presets(name):
    with pytest.raises(SpecError) as caught:
        parse_preset({"version": 1, "name": "lab", "engines": [{"name": name, "model": "m"}]})
    assert caught.value.errors[0].startswith(f"engines[0].name: {name!r} is reserved in presets")
