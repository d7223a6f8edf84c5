"""What tests and benchmarks steer and watch, in front of the Hub app.

`ControlMiddleware` wraps the Hub app. It serves the admin API under `/_localhub/` (loopback callers
only, and only when enabled), counts every other request in the log (`requestlog.py`), applies the
rate limit (`ratelimit.py`) and fires the fault rules (`faults.py`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hubfuse.localhub.faults import FaultInjector, is_json_int
from hubfuse.localhub.inert import inert_send
from hubfuse.localhub.ratelimit import RateLimiter, ratelimit_headers
from hubfuse.localhub.requestlog import RequestLog

ADMIN_PREFIX = "/_localhub/"
_ADMIN_MAX_BODY = 1024 * 1024
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _rate_limit(payload: Any) -> tuple[int | None, int]:
    if not isinstance(payload, dict):
        raise ValueError("the rate limit must be an object {limit, window}")
    limit, window = payload.get("limit"), payload.get("window", 300)
    if limit is not None and not (is_json_int(limit) and limit >= 1):
        raise ValueError(f"limit must be a positive integer or null, not {limit!r}")
    if not (is_json_int(window) and window >= 1):
        raise ValueError(f"window must be a positive number of seconds, not {window!r}")
    return limit, window


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
