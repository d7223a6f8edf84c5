"""Injected faults: the rules the admin API (`control.py`) sets and the middleware fires:

    {"method": "GET",            # optional, any method when absent or "*"
     "path": "/resolve/",        # regex, searched in the decoded and in the raw path
     "action": 503,              # 429/500/502/503/... or "drop" (close the connection, no response)
     "times": 2,                 # fire this many times (default 1; null: forever)
     "after": 0,                 # let this many matching requests through first
     "retry_after": 1,           # 429/503: seconds in Retry-After and RateLimit headers
     "after_bytes": 4096}        # "drop": read this many request body bytes first (default 0)

A "drop" aborts the TCP connection: the client sees it closed mid-request, like a network failure.
With `after_bytes` the request is handed to the app, which sees the client vanish mid-body.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

_RULE_KEYS = {"method", "path", "action", "status", "times", "after", "retry_after", "after_bytes"}


def is_json_int(value: object) -> bool:
    return type(value) is int  # JSON true/false are not numbers


def _count(data: dict[str, Any], key: str, default: int, *, maximum: int | None = None) -> int:
    value = data.get(key, default)
    if not is_json_int(value) or value < 0 or (maximum is not None and value > maximum):
        bound = f" up to {maximum}" if maximum is not None else ""
        raise ValueError(f"fault {key} must be a non-negative integer{bound}, not {value!r}")
    return value


@dataclass
class FaultRule:
    path: re.Pattern[str]
    action: int | str
    method: str | None = None
    times: int | None = 1
    after: int = 0
    retry_after: int = 1
    after_bytes: int = 0
    seen: int = 0
    fired: int = 0

    @classmethod
    def from_json(cls, data: Any) -> FaultRule:
        """A rule from its JSON form; ValueError for anything that would misfire later."""
        if not isinstance(data, dict):
            raise ValueError(f"a fault rule must be an object, not {type(data).__name__}")
        unknown = data.keys() - _RULE_KEYS
        if unknown:
            raise ValueError(f"unknown fault rule keys: {', '.join(sorted(unknown))}")
        action = data.get("action", data.get("status"))
        if isinstance(action, str) and action.isdigit():
            action = int(action)
        if not (action == "drop" or (is_json_int(action) and 400 <= action <= 599)):
            raise ValueError(f"fault action must be an HTTP error status or 'drop', not {action!r}")
        method = data.get("method")
        if method is not None and not (isinstance(method, str) and re.fullmatch(r"[A-Za-z]+|\*", method)):
            raise ValueError(f"fault method must be an HTTP method or '*', not {method!r}")
        path = data.get("path", "")
        if not isinstance(path, str):
            raise ValueError(f"fault path must be a regex string, not {path!r}")
        times = data.get("times", 1)
        if times is not None and not (is_json_int(times) and times >= 1):
            raise ValueError(f"fault times must be a positive integer or null, not {times!r}")
        return cls(
            path=re.compile(path),
            action=action,
            method=None if method in (None, "*") else method.upper(),
            times=times,
            after=_count(data, "after", 0),
            retry_after=_count(data, "retry_after", 1, maximum=3600),
            after_bytes=_count(data, "after_bytes", 0),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method or "*",
            "path": self.path.pattern,
            "action": self.action,
            "times": self.times,
            "after": self.after,
            "retry_after": self.retry_after,
            "after_bytes": self.after_bytes,
            "seen": self.seen,
            "fired": self.fired,
        }


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def replace(self, rules: list[dict[str, Any]]) -> None:
        parsed = [FaultRule.from_json(rule) for rule in rules]
        with self._lock:
            self._rules = parsed

    def add(self, rules: list[dict[str, Any]]) -> None:
        parsed = [FaultRule.from_json(rule) for rule in rules]
        with self._lock:
            self._rules.extend(parsed)

    def clear(self) -> None:
        self.replace([])

    def to_json(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_json() for rule in self._rules]

    def match(self, method: str, path: str, raw_path: str) -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.method is not None and rule.method != method:
                    continue
                if not (rule.path.search(path) or rule.path.search(raw_path)):
                    continue
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                rule.fired += 1
                return rule
        return None
