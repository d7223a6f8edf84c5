"""What tests and benchmarks steer and watch: injected faults, a rate limit, the request log.

`ControlMiddleware` wraps the Hub app. It serves the admin API under `/_localhub/` (loopback callers
only, and only when enabled), counts every other request in the log, and fires fault rules:

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

import asyncio
import json
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hubfuse.localhub.inert import inert_send

ADMIN_PREFIX = "/_localhub/"
_ADMIN_MAX_BODY = 1024 * 1024
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


_RULE_KEYS = {"method", "path", "action", "status", "times", "after", "retry_after", "after_bytes"}


def _is_int(value: object) -> bool:
    return type(value) is int  # JSON true/false are not numbers


def _count(data: dict[str, Any], key: str, default: int, *, maximum: int | None = None) -> int:
    value = data.get(key, default)
    if not _is_int(value) or value < 0 or (maximum is not None and value > maximum):
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
        if not (action == "drop" or (_is_int(action) and 400 <= action <= 599)):
            raise ValueError(f"fault action must be an HTTP error status or 'drop', not {action!r}")
        method = data.get("method")
        if method is not None and not (isinstance(method, str) and re.fullmatch(r"[A-Za-z]+|\*", method)):
            raise ValueError(f"fault method must be an HTTP method or '*', not {method!r}")
        path = data.get("path", "")
        if not isinstance(path, str):
            raise ValueError(f"fault path must be a regex string, not {path!r}")
        times = data.get("times", 1)
        if times is not None and not (_is_int(times) and times >= 1):
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


def _rate_limit(payload: Any) -> tuple[int | None, int]:
    if not isinstance(payload, dict):
        raise ValueError("the rate limit must be an object {limit, window}")
    limit, window = payload.get("limit"), payload.get("window", 300)
    if limit is not None and not (_is_int(limit) and limit >= 1):
        raise ValueError(f"limit must be a positive integer or null, not {limit!r}")
    if not (_is_int(window) and window >= 1):
        raise ValueError(f"window must be a positive number of seconds, not {window!r}")
    return limit, window


def ratelimit_headers(remaining: int, reset: int, limit: int, window: int) -> dict[str, str]:
    # The IETF draft format the Hub uses, which huggingface_hub parses on a 429.
    return {
        "RateLimit": f'"api";r={remaining};t={reset}',
        "RateLimit-Policy": f'"fixed window";"api";q={limit};w={window}',
    }


def _abort_transport(receive: Receive) -> bool:
    # uvicorn's `receive` is a bound method of its per-request cycle, which holds the transport.
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None:
        return False
    transport.abort()
    return True


async def _json_response(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> int:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})
    return len(payload)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body; None once it grows past `limit`."""
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return body


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _loopback_host(host: str) -> bool:
    """`host` (a Host header, or an Origin's host part) names the loopback interface."""
    if host.startswith("["):
        name = host[1 : host.find("]")] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.lower() in _LOOPBACK


def _admin_refusal(scope: Scope) -> str | None:
    """Why a loopback request must still be refused: a web page can reach loopback too.

    A page on another origin can send a "simple" cross-origin POST (text/plain, no preflight), a
    DNS-rebound name makes the browser send a foreign Host, and a repo file opened on the hub's own
    origin would be same-origin. Requiring a loopback Host, no mark of a browser and a JSON content
    type on changes closes all three.
    """
    host = _header(scope, b"host")
    if host is None or not _loopback_host(host):
        return "the admin API answers only requests addressed to a loopback host"
    # Its callers are test and bench processes. A browser marks what it sends (Origin on every
    # cross-origin request and same-origin write, Sec-Fetch-* on all, the page cookie): a page of
    # any origin, the hub's own included, is refused.
    if _header(scope, b"origin") is not None:
        return "the admin API refuses requests from web pages (an Origin header)"
    if _header(scope, b"cookie") is not None or any(
        key.startswith(b"sec-fetch-") for key, _ in scope.get("headers", [])
    ):
        return "the admin API refuses requests from a browser (cookies or Sec-Fetch headers)"
    if scope["method"] not in ("GET", "HEAD"):
        content_type = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            return "admin requests that change something must be sent as application/json"
    return None


def _token_of(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            return value.decode("latin-1").removeprefix("Bearer ").strip()
    return None


class ControlMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        admin: bool,
        faults: FaultInjector,
        log: RequestLog,
        limiter: RateLimiter,
    ) -> None:
        self.app = app
        self.admin = admin
        self.faults = faults
        self.log = log
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = inert_send(send)
        path: str = scope["path"]
        if path.startswith(ADMIN_PREFIX):
            await self._admin(scope, receive, send)
            return
        raw_path = scope.get("raw_path", path.encode()).decode("latin-1")
        method: str = scope["method"]
        entry: dict[str, Any] = {
            "time": time.time(),
            "method": method,
            "path": path,
            "raw_path": raw_path,
            "query": scope.get("query_string", b"").decode("latin-1"),
            "status": 0,
            "bytes_sent": 0,
            "bytes_received": 0,
            "fault": None,
        }
        started = time.monotonic()
        try:
            await self._handle(scope, receive, send, entry)
        finally:
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
            self.log.record(entry)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, entry: dict[str, Any]) -> None:
        method = entry["method"]
        rule = self.faults.match(method, entry["path"], entry["raw_path"])
        allowed, rl_headers = self.limiter.hit(_token_of(scope) or str((scope.get("client") or ("?",))[0]))
        if rule is not None and rule.action != "drop":
            entry["fault"] = rule.action
            entry["status"] = int(rule.action)
            headers = {}
            if rule.action in (429, 503):
                headers["Retry-After"] = str(rule.retry_after)
            if rule.action == 429:
                headers.update(
                    ratelimit_headers(0, rule.retry_after, self.limiter.limit or 500, self.limiter.window)
                )
            sent = await _json_response(
                send, int(rule.action), {"error": f"Injected fault: HTTP {rule.action}"}, headers
            )
            entry["bytes_sent"] = 0 if method == "HEAD" else sent
            return
        if not allowed:
            entry["status"] = 429
            reset = rl_headers["RateLimit"].rsplit("t=", 1)[-1]
            sent = await _json_response(
                send, 429, {"error": "Rate limit reached"}, {**rl_headers, "Retry-After": reset}
            )
            entry["bytes_sent"] = 0 if method == "HEAD" else sent
            return

        dropped = False

        async def drop() -> None:
            nonlocal dropped
            dropped = True
            entry["fault"] = "drop"
            entry["status"] = 0
            if not _abort_transport(receive):
                raise ConnectionAbortedError("injected drop")  # makes the server close the connection
            await asyncio.sleep(0)  # let the server notice the lost connection before we return

        if rule is not None and rule.after_bytes <= 0:
            await drop()
            return

        async def counting_receive() -> Message:
            if dropped:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                entry["bytes_received"] += len(message.get("body", b""))
                if rule is not None and entry["bytes_received"] >= rule.after_bytes:
                    await drop()
                    return {"type": "http.disconnect"}
            return message

        async def counting_send(message: Message) -> None:
            if dropped:
                return
            if message["type"] == "http.response.start":
                if rule is not None:  # the body was shorter than after_bytes: drop before answering
                    await drop()
                    return
                entry["status"] = message["status"]
                if rl_headers:
                    message = {
                        **message,
                        "headers": [
                            *message.get("headers", []),
                            *((k.lower().encode(), v.encode()) for k, v in rl_headers.items()),
                        ],
                    }
            elif message["type"] == "http.response.body" and method != "HEAD":
                entry["bytes_sent"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        except Exception:
            if not dropped:
                raise

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = (scope.get("client") or ("",))[0]
        if not self.admin or client not in _LOOPBACK:
            await _json_response(send, 404, {"error": "Not found"})
            return
        what = scope["path"][len(ADMIN_PREFIX) :].strip("/")
        method = scope["method"]
        refusal = _admin_refusal(scope)
        if refusal is not None:
            await _json_response(send, 403, {"error": refusal})
            return
        body = await _read_body(receive, _ADMIN_MAX_BODY)
        if body is None:
            await _json_response(
                send, 413, {"error": f"admin request bodies are limited to {_ADMIN_MAX_BODY} bytes"}
            )
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            payload = json.loads(body) if body.strip() else None
            result = self._admin_action(what, method, payload, query)
        except (ValueError, TypeError, KeyError, re.error, RecursionError) as exc:
            await _json_response(send, 400, {"error": str(exc)})
            return
        if result is None:
            await _json_response(send, 404, {"error": f"Unknown admin route: {method} {scope['path']}"})
            return
        await _json_response(send, 200, result)

    def _admin_action(
        self, what: str, method: str, payload: Any, query: dict[str, list[str]]
    ) -> dict[str, Any] | None:
        if what == "health" and method == "GET":
            return {"ok": True}
        if what == "faults":
            rules = payload.get("rules", []) if isinstance(payload, dict) and "rules" in payload else payload
            if isinstance(rules, dict):
                rules = [rules]
            if rules is not None and not isinstance(rules, list):
                raise ValueError("fault rules must be a list of rule objects")
            if method == "POST":
                self.faults.add(rules or [])
            elif method == "PUT":
                self.faults.replace(rules or [])
            elif method == "DELETE":
                self.faults.clear()
            elif method != "GET":
                return None
            return {"rules": self.faults.to_json()}
        if what == "requests":
            if method == "DELETE":
                self.log.clear()
            elif method != "GET":
                return None
            since_text = query.get("since", ["0"])[0]
            if not since_text.isdigit():
                raise ValueError(f"since must be a request sequence number, not {since_text!r}")
            since = int(since_text)
            return self.log.to_json(since, entries=not query.get("summary"))
        if what == "ratelimit":
            if method in ("PUT", "POST"):
                limit, window = _rate_limit(payload)
                self.limiter.configure(limit, window)
            elif method == "DELETE":
                self.limiter.configure(None)
            elif method != "GET":
                return None
            return self.limiter.to_json()
        return None
