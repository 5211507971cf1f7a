"""Which physical GPU a job gets, named the way the TA names it, and how a sandbox shows it.

A GPU is named by its nvidia-smi index (PCI bus order) or its UUID. Its device node is
``/dev/nvidia<minor>``, and the driver's minor number is not that index, so both are read from
``/proc/driver/nvidia/gpus/<bus>/information``. Inside a sandbox the job sees only its own node and
its own ``/proc/driver/nvidia/gpus`` entry (as the NVIDIA container runtime does), so CUDA and
NVML both show that one GPU, as ``cuda:0``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DRIVER = Path("/proc/driver/nvidia/gpus")
CONTROL_NODES = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)


@dataclass(frozen=True)
class Gpu:
    """One physical GPU."""

    index: str  # nvidia-smi's index (PCI bus order)
    minor: int  # its device node is /dev/nvidia<minor>
    bus: str  # its folder under /proc/driver/nvidia/gpus
    uuid: str


def _information(folder: Path) -> dict[str, str]:
    try:
        text = (folder / "information").read_text()
    except OSError:
        return {}
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def installed(driver: Path = DRIVER) -> tuple[Gpu, ...]:
    """The machine's GPUs in nvidia-smi order (empty where the NVIDIA driver is not loaded)."""
    try:
        buses = sorted(entry.name for entry in driver.iterdir())
    except OSError:
        return ()
    gpus = []
    for position, bus in enumerate(buses):
        info = _information(driver / bus)
        minor = info.get("Device Minor", "")
        if minor.isdigit():
            gpus.append(Gpu(str(position), int(minor), bus, info.get("GPU UUID", "")))
    return tuple(gpus)


def find(name: str, driver: Path = DRIVER) -> Gpu | None:
    """The GPU with nvidia-smi index or UUID ``name``; None when there is no such GPU."""
    return next((g for g in installed(driver) if name in (g.index, g.uuid)), None)


def sandbox_args(gpu: Gpu | None, driver: Path = DRIVER) -> list[str]:
    """bwrap arguments exposing exactly ``gpu`` (after ``--proc /proc --dev /dev``); for no GPU, no
    device node and an empty driver listing (seen on an H200: without it a CPU job's NVML lists the
    GPU)."""
    if gpu is None:
        return ["--tmpfs", str(driver)] if driver.is_dir() else []
    nodes = [n for n in CONTROL_NODES if os.path.exists(n)] + [f"/dev/nvidia{gpu.minor}"]
    args = [arg for node in nodes for arg in ("--dev-bind", node, node)]
    if driver.is_dir():  # NVML lists what it finds here: hide the other GPUs
        mine = driver / gpu.bus
        args += ["--tmpfs", str(driver), "--ro-bind", str(mine), str(mine)]
    return args
