"""GPU inventory: from NVML, simulated from the config, or none, always saying which."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from sagellmd.errors import ConfigError

GIB = 1024**3


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_bytes: int


@dataclass(frozen=True)
class GpuDevice:
    index: int
    uuid: str
    name: str
    total_bytes: int
    used_bytes: int
    utilization: int | None = None
    processes: tuple[GpuProcess, ...] = ()
    simulated: bool = False

    @property
    def free_bytes(self) -> int:
        return max(0, self.total_bytes - self.used_bytes)


# Where the inventory came from: NVML, the simulate: setting, or nowhere (gpus: none).
GPU_MODES = ("nvml", "simulated", "none")


@dataclass(frozen=True)
class GpuInventory:
    """What the daemon can see; `message` explains an empty or simulated inventory."""

    mode: str  # one of GPU_MODES
    devices: tuple[GpuDevice, ...] = ()
    message: str = ""
    errors: tuple[str, ...] = field(default=())

    @property
    def simulated(self) -> bool:
        return self.mode == "simulated"


_SIMULATE = re.compile(r"^simulate:(?:(\d+)x(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?(?:,\d+(?:\.\d+)?)*))$")


def parse_gpu_setting(text: str) -> tuple[str, tuple[float, ...]]:
    """('auto'|'none'|'simulate', sizes in GiB); a bad value raises ConfigError."""
    value = text.strip()
    if value in ("auto", "none"):
        return value, ()
    match = _SIMULATE.fullmatch(value)
    if match is None:
        raise ConfigError(
            f"gpus: must be auto, none, simulate:COUNTxGIB (simulate:2x80) or"
            f" simulate:GIB,GIB (simulate:80,24), got {text!r}"
        )
    if match.group(1):
        count, size = int(match.group(1)), float(match.group(2))
        # Checked before building the tuple: a huge count must not exhaust memory.
        sizes = (size,) * count if count <= 64 else ()
    else:
        sizes = tuple(float(part) for part in match.group(3).split(","))
    if not sizes or len(sizes) > 64 or not all(0 < size <= 1e6 for size in sizes):
        raise ConfigError(
            f"gpus: between 1 and 64 GPUs of more than 0 and at most 1000000 GiB, got {text!r}"
        )
    return "simulate", sizes


def simulated_inventory(sizes: tuple[float, ...]) -> GpuInventory:
    devices = tuple(
        GpuDevice(
            index=index,
            uuid=f"GPU-simulated-{index}",
            name=f"simulated {size:g} GiB",
            total_bytes=int(size * GIB),
            used_bytes=0,
            utilization=0,
            simulated=True,
        )
        for index, size in enumerate(sizes)
    )
    described = ", ".join(
        f"GPU{d.index} {size:g} GiB" for d, size in zip(devices, sizes, strict=True)
    )
    return GpuInventory("simulated", devices, f"simulated GPUs: {described}")


_nvml_started = False


def _nvml_inventory() -> GpuInventory:
    try:
        import pynvml
    except ImportError as exc:
        return GpuInventory("none", (), f"no GPUs (NVML unavailable: {exc})")
    global _nvml_started
    if not _nvml_started:
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError subclasses carry the reason in str()
            return GpuInventory("none", (), f"no GPUs (NVML unavailable: {exc})")
        # Initialised once per process: the inventory is read on every reconcile pass.
        _nvml_started = True
    devices = []
    errors = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization: int | None = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
            except Exception:
                utilization = None
            try:
                running = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                processes = tuple(GpuProcess(p.pid, int(p.usedGpuMemory or 0)) for p in running)
            except Exception as exc:
                processes = ()
                errors.append(f"GPU{index}: cannot list processes: {exc}")
            name = pynvml.nvmlDeviceGetName(handle)
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            devices.append(
                GpuDevice(
                    index=index,
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    total_bytes=int(memory.total),
                    used_bytes=int(memory.used),
                    utilization=utilization,
                    processes=processes,
                )
            )
    except Exception as exc:
        return GpuInventory("none", (), f"no GPUs (NVML failed: {exc})")
    if not devices:
        return GpuInventory("nvml", (), "no GPUs (NVML found none)")
    return GpuInventory("nvml", tuple(devices), f"{len(devices)} GPU(s) from NVML", tuple(errors))


def read_inventory(setting: str) -> GpuInventory:
    """The inventory for the `gpus` setting: auto (NVML), none, or simulate:..."""
    mode, sizes = parse_gpu_setting(setting)
    if mode == "none":
        return GpuInventory("none", (), "no GPUs (gpus: none in the configuration)")
    if mode == "simulate":
        return simulated_inventory(sizes)
    return _nvml_inventory()
