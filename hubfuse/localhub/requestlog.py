"""The request log tests and benchmarks read through the admin API (`control.py`)."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class RequestLog:
    """Every non-admin request: method, path, status (0 when dropped), bytes sent and received."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._entries: deque[dict[str, Any]] = deque(maxlen=max_entries)
        self._seq = 0
        self._bytes_sent = 0

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            self._bytes_sent += entry["bytes_sent"]
            self._entries.append(entry)

    def to_json(self, since: int = 0, *, entries: bool = True) -> dict[str, Any]:
        with self._lock:
            data: dict[str, Any] = {"count": self._seq, "bytes_sent": self._bytes_sent}
            if entries:
                data["requests"] = [dict(e) for e in self._entries if e["seq"] > since]
            return data

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._seq = 0
            self._bytes_sent = 0
