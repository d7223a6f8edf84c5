"""A rate limit like the Hub's: a fixed window per token, answered with its `RateLimit` headers."""

from __future__ import annotations

import threading
import time
from typing import Any


class RateLimiter:
    """A fixed-window limit per token (or client address), off until configured."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.limit: int | None = None
        self.window = 300
        self._windows: dict[str, tuple[float, int]] = {}

    def configure(self, limit: int | None, window: int = 300) -> None:
        with self._lock:
            self.limit, self.window = limit, window
            self._windows.clear()

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "window": self.window}

    def hit(self, key: str) -> tuple[bool, dict[str, str]]:
        """Count one request; (allowed, RateLimit headers). No headers when no limit is set."""
        with self._lock:
            if self.limit is None:
                return True, {}
            now = time.monotonic()
            start, used = self._windows.get(key, (now, 0))
            if now - start >= self.window:
                start, used = now, 0
            used += 1
            self._windows[key] = (start, used)
            remaining = max(self.limit - used, 0)
            reset = max(int(start + self.window - now), 0)
            headers = ratelimit_headers(remaining, reset, self.limit, self.window)
            return used <= self.limit, headers


def ratelimit_headers(remaining: int, reset: int, limit: int, window: int) -> dict[str, str]:
    # The IETF draft format the Hub uses, which huggingface_hub parses on a 429.
    return {
        "RateLimit": f'"api";r={remaining};t={reset}',
        "RateLimit-Policy": f'"fixed window";"api";q={limit};w={window}',
    }
