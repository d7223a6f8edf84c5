"""What this machine has to spare: the one place hubfuse reads the machine's memory and cores."""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_MEMORY_MAX = Path("/sys/fs/cgroup/memory.max")  # cgroup v2: a container's own limit


def _meminfo_bytes(field: str) -> int:
    """A /proc/meminfo field in bytes; 0 where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields[field].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo; 0 where it cannot be read."""
    return _meminfo_bytes("MemAvailable")


def total_memory_bytes() -> int:
    """The memory this machine (or the container it runs in, if smaller) has; 0 if unknown."""
    total = _meminfo_bytes("MemTotal")
    try:
        limit = CGROUP_MEMORY_MAX.read_text().strip()
    except OSError:
        return total
    if limit.isdigit() and (total == 0 or int(limit) < total):
        return int(limit)
    return total


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def loads_that_fit(weights_bytes: int, bytes_per_weight_byte: float, wanted: int) -> int:
    """How many loads of a model to run side by side (1 to `wanted`), keeping a third of memory free."""
    per_load = max(1, int(weights_bytes * bytes_per_weight_byte))
    fits = int(available_memory_bytes() * 2 / 3 // per_load)
    return max(1, min(wanted, fits))
