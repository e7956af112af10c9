"""Owns the tests of sagellmd/cluster_config.py: the `cluster:` section and the Ray node
labels sagellm reads (issue 17, docs/multi-node.md). The daemon still refuses the section."""

from __future__ import annotations

import pytest

from sagellmd.cluster_config import ClusterSettings, NodeLabels, node_labels, parse_cluster
from sagellmd.config import load_settings
from sagellmd.errors import ConfigError

WHERE = "/h/config.yaml"


def test_the_design_example_parses():
    parsed = parse_cluster({"backend": "ray", "address": "auto", "namespace": "sagellm"}, WHERE)
    assert parsed == ClusterSettings("ray", "auto", "sagellm", {})


def test_a_bare_section_means_every_default():
    assert parse_cluster(None, WHERE) == ClusterSettings()
    assert parse_cluster({}, WHERE) == ClusterSettings()


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("10.0.0.5:6379", "10.0.0.5:6379"),
        (" head.lan:6379 ", "head.lan:6379"),
        ("[fd00::5]:6379", "[fd00::5]:6379"),
        ("localhost:1", "localhost:1"),
    ],
)
def test_host_port_addresses_are_kept(given, kept):
    assert parse_cluster({"address": given}, WHERE).address == kept


def test_advertise_maps_node_names_to_hosts():
    parsed = parse_cluster({"advertise": {"box2": "10.0.0.6", "box3": "box3.lan"}}, WHERE)
    assert parsed.advertise == {"box2": "10.0.0.6", "box3": "box3.lan"}


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("ray", "cluster: must be a mapping such as {backend: ray, address: auto}, got 'ray'"),
        ({"backend": "k8s"}, "cluster.backend: must be ray (the only backend), got 'k8s'"),
        ({"adress": "auto"}, "cluster: unknown key(s) adress; known: address, advertise,"),
        ({"address": ""}, "cluster.address: must be auto or HOST:PORT (10.0.0.5:6379), got ''"),
        ({"address": 6379}, "cluster.address: must be auto or HOST:PORT"),
        ({"address": "10.0.0.5"}, "cluster.address: must be auto or HOST:PORT"),
        ({"address": "fd00::5:6379"}, "cluster.address: must be auto or HOST:PORT"),
        ({"address": "[nothost]:6379"}, "cluster.address: must be auto or HOST:PORT"),
        ({"address": "bad_host!:6379"}, "cluster.address: must be auto or HOST:PORT"),
        ({"address": "10.0.0.5:0"}, "cluster.address: the port must be 1 to 65535"),
        ({"address": "10.0.0.5:70000"}, "cluster.address: the port must be 1 to 65535"),
        ({"address": "ray://10.0.0.5:10001"}, "cluster.address: give the head's GCS address"),
        ({"namespace": ""}, "cluster.namespace: must be a name of letters"),
        ({"namespace": "a b"}, "cluster.namespace: must be a name of letters"),
        ({"namespace": 3}, "cluster.namespace: must be a name of letters"),
        ({"advertise": ["10.0.0.6"]}, "cluster.advertise: must map node names to addresses"),
        ({"advertise": {"box 2": "10.0.0.6"}}, "cluster.advertise: 'box 2' is not a node name"),
        ({"advertise": {"box2": "no way"}}, "cluster.advertise.box2: must be an IP address"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(section, message):
    with pytest.raises(ConfigError) as caught:
        parse_cluster(section, WHERE)
    assert caught.value.message.startswith(f"{WHERE}: {message}"), caught.value.message


def test_load_settings_reads_the_section_and_names_a_bad_key(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("cluster: {backend: ray, address: 10.0.0.5:6379, namespace: team}\n")
    settings = load_settings(home=tmp_path / "home", config_file=config, environ={})
    assert settings.cluster == ClusterSettings("ray", "10.0.0.5:6379", "team")
    config.write_text("cluster: {adress: auto}\n")
    with pytest.raises(ConfigError, match=r"cluster: unknown key\(s\) adress"):
        load_settings(home=tmp_path / "home", config_file=config, environ={})
    config.write_text("gpus: auto\n")
    assert load_settings(home=tmp_path / "home", config_file=config, environ={}).cluster is None


def test_a_node_is_named_by_its_label_else_its_address():
    assert node_labels({"sagellm.node": "box2"}, "10.0.0.6") == NodeLabels("box2")
    assert node_labels({}, "10.0.0.6") == NodeLabels("10.0.0.6")
    assert node_labels({"sagellm.node": "  "}, "10.0.0.6").name == "10.0.0.6"


def test_a_node_label_gives_its_simulated_gpus():
    labels = {"sagellm.node": "node-b", "sagellm.gpus": "simulate:2x80"}
    assert node_labels(labels, "10.0.0.6") == NodeLabels("node-b", "simulate", (80.0, 80.0))
    assert node_labels({"sagellm.gpus": "none"}, "10.0.0.6").gpus == "none"


def test_bad_labels_name_the_node_and_the_label():
    with pytest.raises(ConfigError) as caught:
        node_labels({"sagellm.gpus": "simulate:lots"}, "10.0.0.6")
    assert caught.value.message.startswith("node 10.0.0.6: label sagellm.gpus: gpus: must be")
    with pytest.raises(ConfigError, match="label sagellm.node='a/b': must be letters.*--labels"):
        node_labels({"sagellm.node": "a/b"}, "10.0.0.6")
