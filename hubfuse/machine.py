"""What this machine has to spare: the one place hubfuse reads available memory."""

from __future__ import annotations


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo; 0 where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 0


def loads_that_fit(weights_bytes: int, bytes_per_weight_byte: float, wanted: int) -> int:
    """How many loads of a model to run side by side (1 to `wanted`), keeping a third of memory free."""
    per_load = max(1, int(weights_bytes * bytes_per_weight_byte))
    fits = int(available_memory_bytes() * 2 / 3 // per_load)
    return max(1, min(wanted, fits))
