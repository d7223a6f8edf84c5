"""Request bodies: read with a cap (413 past it), and typed reads of JSON ones (a wrong type is a
400 naming the field, never a 500)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.requests import Request

from hubfuse.localhub.apierror import ApiError, bad_request

_MISSING = object()


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body is larger than this route's limit of {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is announced or found to be over `limit`."""
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def spool_body(request: Request, limit: int, path: Path) -> None:
    """The body written to `path` as it arrives (never held whole in memory); 413 past `limit`."""
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise too_large(limit)
    received = 0
    with open(path, "wb") as f:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(limit)
            f.write(chunk)


class Payload:
    """A JSON object body. Every accessor checks the type it returns."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    def parse(cls, body: bytes) -> Payload:
        if not body.strip():
            return cls({})
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise bad_request("Request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise bad_request(f"Request body must be a JSON object, not {type(data).__name__}")
        return cls(data)

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def _get(self, name: str, types: tuple[type, ...], what: str, default: Any, required: bool) -> Any:
        value = self.data.get(name, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise bad_request(f"'{name}' is required")
            return default
        # bool is an int subclass: JSON true is never a count
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise bad_request(f"'{name}' must be {what}, not {type(value).__name__}")
        return value

    def string(self, name: str, default: str | None = None, *, required: bool = False) -> Any:
        return self._get(name, (str,), "a string", default, required)

    def boolean(self, name: str, default: bool = False) -> bool:
        return bool(self._get(name, (bool,), "a boolean", default, False))

    def integer(self, name: str, default: int | None = None, *, required: bool = False) -> Any:
        return self._get(name, (int,), "an integer", default, required)

    def object(self, name: str) -> Payload:
        return Payload(self._get(name, (dict,), "an object", {}, False))

    def array(self, name: str, *, required: bool = False) -> list[Any]:
        return list(self._get(name, (list,), "a list", [], required))

    def objects(self, name: str, *, required: bool = False) -> list[Payload]:
        items = self.array(name, required=required)
        if not all(isinstance(item, dict) for item in items):
            raise bad_request(f"'{name}' must be a list of objects")
        return [Payload(item) for item in items]

    def strings(self, name: str) -> list[str]:
        value = self.data.get(name)
        if isinstance(value, str):
            return [value]
        items = self.array(name)
        if not all(isinstance(item, str) for item in items):
            raise bad_request(f"'{name}' must be a list of strings")
        return items
