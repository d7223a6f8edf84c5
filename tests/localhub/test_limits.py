"""Bounded work per request: bodies are capped and refused unread, repo content is parsed within bounds."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import time
from urllib.parse import urlparse

import httpx2
import pytest
from huggingface_hub import HfApi

from hubfuse.localhub import LocalHub

BILLION_LAUGHS = (
    "---\n"
    + "".join(
        f"{name}: &{name} [{','.join([f'*{prev}'] * 9) if prev else ','.join(['lol'] * 9)}]\n"
        for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
    )
    + "---\n"
)


def _raw_post(
    endpoint: str, path: str, announced: int, sent: int, token: str | None = None
) -> tuple[int, bytes]:
    """POST announcing `announced` body bytes, send `sent` of them, then read whatever comes back."""
    url = urlparse(endpoint)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\n{auth}Content-Length: {announced}\r\n\r\n"
        sock.sendall(head.encode())
        with contextlib.suppress(OSError):  # the server may answer and close before taking it all
            sock.sendall(b"x" * sent)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    return status, answer


def test_anonymous_body_is_refused_unread(hub: LocalHub, repo_id: str) -> None:
    hub.clear_requests()
    status, _ = _raw_post(hub.endpoint, f"/api/models/{repo_id}/commit/main", 400_000_000, 1024 * 1024)
    assert status == 401
    (entry,) = hub.requests()
    assert entry["bytes_received"] <= 1024 * 1024  # what the client managed to push; never the 400 MB


def test_bodies_over_a_routes_cap_are_413(hub: LocalHub, users, repo_id: str) -> None:
    status, answer = _raw_post(hub.endpoint, "/api/repos/create", 400_000_000, 0, users.alice)
    assert status == 413 and b"limit" in answer
    status, _ = _raw_post(hub.endpoint, f"/api/models/{repo_id}/commit/main", 5 * 1024**3, 0, users.alice)
    assert status == 413

    def chunks():  # no Content-Length: the cap applies while streaming
        for _ in range(3):
            yield b" " * (1024 * 1024)

    hub.clear_requests()
    response = httpx2.post(f"{hub.endpoint}/api/models/{repo_id}/paths-info/main", content=chunks())
    assert response.status_code == 413
    assert hub.requests()[0]["bytes_received"] <= 2 * 1024 * 1024


def _safetensors_with_dims(dims: int) -> bytes:
    header = json.dumps({"t": {"dtype": "F32", "shape": [999_999_999_999] * dims, "data_offsets": [0, 4]}})
    return struct.pack("<Q", len(header)) + header.encode() + b"\0" * 4


def test_hostile_safetensors_header_is_parsed_within_bounds(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    # 60,000 dimensions in one 0.8 MB header: seconds of big-integer arithmetic per request before.
    api.upload_file(
        path_or_fileobj=_safetensors_with_dims(60_000), path_in_repo="model.safetensors", repo_id=repo_id
    )
    anonymous = HfApi(endpoint=hub.endpoint, token=False)
    started = time.monotonic()
    info = anonymous.model_info(repo_id)
    assert time.monotonic() - started < 1.5
    assert info.safetensors is None


def test_deeply_nested_config_is_no_500(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=b"[" * 100_000, path_in_repo="config.json", repo_id=repo_id)
    assert HfApi(endpoint=hub.endpoint, token=False).model_info(repo_id).config is None


def test_alias_bombs_are_refused(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    assert len(BILLION_LAUGHS) < 400
    response = httpx2.post(
        f"{hub.endpoint}/api/validate-yaml", json={"content": BILLION_LAUGHS, "repoType": "model"}
    )
    assert response.status_code == 400 and "aliases" in response.json()["errors"][0]["message"]
    with pytest.raises(ValueError, match="aliases"):  # the client asks validate-yaml first
        api.upload_file(path_or_fileobj=BILLION_LAUGHS.encode(), path_in_repo="README.md", repo_id=repo_id)

    # One written before the server checked READMEs is not expanded either.
    hub.put_legacy_file(repo_id, "README.md", BILLION_LAUGHS.encode())
    response = httpx2.get(f"{hub.endpoint}/api/models/{repo_id}")
    assert response.status_code == 200 and len(response.content) < 10_000
    assert "cardData" not in response.json()


def test_card_with_aliases_within_bounds_is_served(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    card = "---\nlicense: mit\nbase: &tags [a, b]\ntags: *tags\n---\n# card\n"
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo_id)
    assert api.model_info(repo_id).card_data.to_dict()["tags"] == ["a", "b"]
