"""Owns the tests of sagellmd/gpu/inventory.py: the gpus setting, simulated GPUs, NVML or none.

NVML itself is replaced by a stand-in module where a test needs devices; the one test of the
real library expects this machine to have none and skips on a GPU box.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from sagellmd.errors import ConfigError
from sagellmd.gpu import inventory
from sagellmd.gpu.accounting import capacities
from sagellmd.gpu.inventory import (
    GIB,
    GpuDevice,
    GpuInventory,
    GpuProcess,
    parse_gpu_setting,
    read_inventory,
)
from sagellmd.gpu.placement import GpuCapacity

# -- the gpus setting ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("auto", ("auto", ())),
        ("none", ("none", ())),
        (" auto ", ("auto", ())),
        ("simulate:2x80", ("simulate", (80.0, 80.0))),
        ("simulate:1x24", ("simulate", (24.0,))),
        ("simulate:80,24", ("simulate", (80.0, 24.0))),
        ("simulate:80", ("simulate", (80.0,))),
        ("simulate:4x40.5", ("simulate", (40.5,) * 4)),
        ("simulate:80,24.5,16", ("simulate", (80.0, 24.5, 16.0))),
        ("simulate:64x1", ("simulate", (1.0,) * 64)),
    ],
)
def test_parse_gpu_setting(text, parsed):
    assert parse_gpu_setting(text) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "",
        "gpu",
        "AUTO",
        "simulate",
        "simulate:",
        "simulate:2x",
        "simulate:x80",
        "simulate:2x80,24",
        "simulate:80,",
        "simulate:,80",
        "simulate:-1",
        "simulate:2x80GB",
        "simulate: 2x80",
        "simulated:2x80",
        "cuda:0",
    ],
)
def test_bad_gpu_settings_name_the_field_and_the_allowed_forms(text):
    with pytest.raises(ConfigError) as raised:
        parse_gpu_setting(text)

    message = raised.value.message
    assert message.startswith("gpus:")
    for form in ("auto", "none", "simulate:2x80", "simulate:80,24"):
        assert form in message
    assert repr(text) in message


@pytest.mark.parametrize(
    "text", ["simulate:0x80", "simulate:2x0", "simulate:80,0", "simulate:65x1", "simulate:0"]
)
def test_gpu_counts_and_sizes_out_of_range_are_config_errors(text):
    with pytest.raises(ConfigError, match=r"^gpus: between 1 and 64 GPUs"):
        parse_gpu_setting(text)


def test_an_absurd_gpu_count_is_a_config_error():
    with pytest.raises(ConfigError):
        parse_gpu_setting("simulate:100000000000000000000x80")


def test_an_infinite_gpu_size_is_a_config_error():
    with pytest.raises(ConfigError):
        parse_gpu_setting("simulate:" + "9" * 400)


# -- simulated and disabled inventories -----------------------------------------------


def test_simulated_inventory_is_labelled_and_has_the_right_totals():
    found = read_inventory("simulate:80,24")

    assert found.mode == "simulated"
    assert found.simulated
    assert [device.index for device in found.devices] == [0, 1]
    assert [device.total_bytes for device in found.devices] == [80 * GIB, 24 * GIB]
    assert all(device.simulated for device in found.devices)
    assert all(device.used_bytes == 0 for device in found.devices)
    assert [device.free_bytes for device in found.devices] == [80 * GIB, 24 * GIB]
    assert all("simulated" in device.name for device in found.devices)
    assert len({device.uuid for device in found.devices}) == 2
    assert found.message == "simulated GPUs: GPU0 80 GiB, GPU1 24 GiB"


def test_simulated_count_times_size():
    found = read_inventory("simulate:2x80")

    assert found.mode == "simulated"
    assert [device.total_bytes for device in found.devices] == [80 * GIB, 80 * GIB]
    assert "simulated" in found.message


def test_gpus_none_says_so():
    found = read_inventory("none")

    assert (found.mode, found.devices) == ("none", ())
    assert not found.simulated
    assert found.message.startswith("no GPUs")
    assert "gpus: none" in found.message


def test_read_inventory_rejects_a_bad_setting():
    with pytest.raises(ConfigError):
        read_inventory("simulate:lots")


# -- NVML ----------------------------------------------------------------------------


def test_auto_without_nvml_on_this_machine():
    found = read_inventory("auto")

    if found.mode == "nvml":
        pytest.skip("NVML is present (a GPU box): the no-NVML message cannot be observed here")
    assert found.mode == "none"
    assert found.devices == ()
    assert found.message.startswith("no GPUs (NVML unavailable:")
    assert found.message.endswith(")")


def test_auto_without_the_pynvml_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setattr(inventory, "_nvml_started", False)

    found = read_inventory("auto")

    assert found.mode == "none"
    assert found.message.startswith("no GPUs (NVML unavailable: ")


class FakeNvml:
    """Stands in for the pynvml module: two GPUs, one process list that cannot be read."""

    def __init__(self, fail_init: Exception | None = None) -> None:
        self.fail_init = fail_init
        self.init_calls = 0
        self.devices = [
            dict(
                total=80 * GIB,
                used=30 * GIB,
                util=57,
                name=b"NVIDIA A100-SXM4-80GB",
                uuid=b"GPU-aaaa",
                processes=[(100, 20 * GIB), (200, None)],
            ),
            dict(
                total=24 * GIB,
                used=GIB,
                util=RuntimeError("not supported"),
                name="NVIDIA L4",
                uuid="GPU-bbbb",
                processes=RuntimeError("insufficient permissions"),
            ),
        ]

    def nvmlInit(self):
        self.init_calls += 1
        if self.fail_init is not None:
            raise self.fail_init

    def nvmlDeviceGetCount(self):
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.devices[index]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=handle["total"], used=handle["used"])

    def nvmlDeviceGetUtilizationRates(self, handle):
        if isinstance(handle["util"], Exception):
            raise handle["util"]
        return SimpleNamespace(gpu=handle["util"], memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if isinstance(handle["processes"], Exception):
            raise handle["processes"]
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in handle["processes"]]

    def nvmlDeviceGetName(self, handle):
        return handle["name"]

    def nvmlDeviceGetUUID(self, handle):
        return handle["uuid"]


def with_fake_nvml(monkeypatch, fake: FakeNvml) -> FakeNvml:
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(inventory, "_nvml_started", False)
    return fake


def test_nvml_inventory_reads_devices_and_processes(monkeypatch):
    fake = with_fake_nvml(monkeypatch, FakeNvml())

    found = read_inventory("auto")

    assert found.mode == "nvml"
    assert not found.simulated
    assert found.message == "2 GPU(s) from NVML"
    first, second = found.devices
    assert first == GpuDevice(
        index=0,
        uuid="GPU-aaaa",
        name="NVIDIA A100-SXM4-80GB",
        total_bytes=80 * GIB,
        used_bytes=30 * GIB,
        utilization=57,
        processes=(GpuProcess(100, 20 * GIB), GpuProcess(200, 0)),
    )
    assert (second.name, second.uuid, second.utilization, second.processes) == (
        "NVIDIA L4",
        "GPU-bbbb",
        None,
        (),
    )
    assert found.errors == ("GPU1: cannot list processes: insufficient permissions",)
    # NVML is initialised once per process, not on every reconcile pass.
    read_inventory("auto")
    assert fake.init_calls == 1


def test_nvml_init_failure_keeps_the_reason(monkeypatch):
    with_fake_nvml(monkeypatch, FakeNvml(fail_init=RuntimeError("Driver Not Loaded")))

    found = read_inventory("auto")

    assert found == GpuInventory("none", (), "no GPUs (NVML unavailable: Driver Not Loaded)")


def test_nvml_failing_while_reading_says_so(monkeypatch):
    fake = with_fake_nvml(monkeypatch, FakeNvml())

    def lost(handle):
        raise RuntimeError("GPU is lost")

    fake.nvmlDeviceGetMemoryInfo = lost

    found = read_inventory("auto")

    assert found.mode == "none"
    assert found.message == "no GPUs (NVML failed: GPU is lost)"


def test_nvml_with_no_devices(monkeypatch):
    fake = with_fake_nvml(monkeypatch, FakeNvml())
    fake.devices.clear()

    found = read_inventory("auto")

    assert (found.mode, found.devices, found.message) == ("nvml", (), "no GPUs (NVML found none)")


# -- what placement sees of the inventory (sagellmd/gpu/accounting.py) -----------------


def test_capacities_count_memory_of_processes_we_did_not_start(monkeypatch):
    with_fake_nvml(monkeypatch, FakeNvml())
    found = read_inventory("auto")

    ours = capacities(found, our_pids={100})
    theirs = capacities(found, our_pids=set())

    assert ours == (GpuCapacity(0, 80 * GIB, 0), GpuCapacity(1, 24 * GIB, 0))
    assert theirs == (GpuCapacity(0, 80 * GIB, 20 * GIB), GpuCapacity(1, 24 * GIB, 0))


def test_capacities_of_simulated_gpus_have_no_foreign_memory():
    assert capacities(read_inventory("simulate:2x80"), set()) == (
        GpuCapacity(0, 80 * GIB, 0),
        GpuCapacity(1, 80 * GIB, 0),
    )
