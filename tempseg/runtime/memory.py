"""Host memory figures from the OS (no psutil needed on a Jetson)."""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path


def current_rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; peak RSS elsewhere)."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def is_jetson() -> bool:
    """True on NVIDIA Jetson (integrated GPU: device memory is the same DRAM as host memory)."""
    model = Path("/proc/device-tree/model")
    return Path("/etc/nv_tegra_release").exists() or (
        model.exists() and "jetson" in model.read_text(errors="ignore").lower()
    )
