"""What a benchmark ran on: the CPU by name, whether it computes bf16 natively, its cores and the load.

platform.processor() is empty on most Linux systems; /proc/cpuinfo names the CPU and its flags there.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def cpu_flags() -> tuple[str, set[str]]:
    """The CPU's model name and its flags (no flags where /proc/cpuinfo does not exist)."""
    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return name, flags


def cpu_name() -> str:
    return cpu_flags()[0]


def describe() -> dict[str, Any]:
    """The CPU, AVX-512 BF16 or not, the cores, and the load averages when called (a busy machine shows)."""
    name, flags = cpu_flags()
    return {
        "cpu": name,
        "avx512_bf16": "avx512_bf16" in flags,
        "cores": os.cpu_count(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
