"""Injected faults, rate limits and the request log, seen through the real client's retries."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError

from hubfuse.localhub import LocalHub


def test_500_twice_on_head_then_download_succeeds(
    hub: LocalHub, users, api: HfApi, repo_id: str, cache_dir: Path
) -> None:
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id)
    hub.set_faults([{"method": "HEAD", "path": f"/{repo_id}/resolve/", "action": 500, "times": 2}])
    mark = hub.request_stats()["count"]
    path = hf_hub_download(
        repo_id, "config.json", endpoint=hub.endpoint, token=users.alice, cache_dir=cache_dir
    )
    assert Path(path).read_bytes() == b"{}"
    calls = [(r["method"], r["status"]) for r in hub.requests(since=mark)]
    assert calls == [("HEAD", 500), ("HEAD", 500), ("HEAD", 200), ("GET", 200)]
    assert hub.faults()[0]["fired"] == 2


def test_500_on_get_is_not_retried_by_the_client(
    hub: LocalHub, users, api: HfApi, repo_id: str, cache_dir: Path
) -> None:
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=repo_id)
    hub.set_faults([{"method": "GET", "path": "/resolve/main/config.json", "action": 500}])
    kwargs = {"endpoint": hub.endpoint, "token": users.alice, "cache_dir": cache_dir}
    with pytest.raises(HfHubHTTPError) as excinfo:
        hf_hub_download(repo_id, "config.json", **kwargs)
    assert excinfo.value.response.status_code == 500
    assert Path(hf_hub_download(repo_id, "config.json", **kwargs)).read_bytes() == b"{}"


def test_429_carries_rate_limit_headers(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    hub.set_faults([{"method": "GET", "path": f"^/api/models/{repo_id}$", "action": 429, "retry_after": 7}])
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.model_info(repo_id)
    response = excinfo.value.response
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.headers["ratelimit"] == '"api";r=0;t=7'
    assert "q=" in response.headers["ratelimit-policy"] and "w=" in response.headers["ratelimit-policy"]
    assert "you have reached your 'api' rate limit" in str(excinfo.value)
    assert api.model_info(repo_id).id == repo_id


def test_429_on_download_is_retried(hub: LocalHub, users, api: HfApi, repo_id: str, cache_dir: Path) -> None:
    api.upload_file(path_or_fileobj=b"data", path_in_repo="f.txt", repo_id=repo_id)
    hub.set_faults([{"method": "GET", "path": "/resolve/main/f.txt", "action": 429, "retry_after": 0}])
    path = hf_hub_download(repo_id, "f.txt", endpoint=hub.endpoint, token=users.alice, cache_dir=cache_dir)
    assert Path(path).read_bytes() == b"data"
    assert hub.faults()[0]["fired"] == 1


def test_rate_limit(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    hub.set_rate_limit(3, window=60)
    first = httpx2.get(
        f"{hub.endpoint}/api/models/{repo_id}", headers={"Authorization": f"Bearer {api.token}"}
    )
    assert first.headers["ratelimit"].startswith('"api";r=2;t=')
    api.model_info(repo_id)
    api.model_info(repo_id)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.model_info(repo_id)
    assert excinfo.value.response.status_code == 429
    assert "rate limit" in str(excinfo.value)


def test_after_skips_the_first_matches(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    hub.set_faults([{"path": f"^/api/models/{repo_id}$", "action": 503, "after": 1, "times": 1}])
    api.model_info(repo_id)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.model_info(repo_id)
    assert excinfo.value.response.status_code == 503
    api.model_info(repo_id)


def test_dropped_connection_is_a_transport_error(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    hub.set_faults([{"method": "GET", "path": f"^/api/models/{repo_id}$", "action": "drop"}])
    mark = hub.request_stats()["count"]
    with pytest.raises(httpx2.TransportError):
        api.model_info(repo_id)
    assert [(r["status"], r["fault"]) for r in hub.requests(since=mark)] == [(0, "drop")]
    assert api.model_info(repo_id).id == repo_id


def _leftovers(hub: LocalHub) -> list[str]:
    return [p.name for p in (hub.data_dir / "tmp").iterdir()]


def test_drop_during_lfs_put_stores_nothing_and_the_client_retry_succeeds(
    hub: LocalHub, users, api: HfApi, repo_id: str, cache_dir: Path, classic_lfs: None
) -> None:
    weights = os.urandom(1_000_000)
    sha256 = hashlib.sha256(weights).hexdigest()
    hub.set_faults([{"method": "PUT", "path": "^/lfs-upload/", "action": "drop", "after_bytes": 100_000}])
    mark = hub.request_stats()["count"]
    api.upload_file(path_or_fileobj=weights, path_in_repo="model.safetensors", repo_id=repo_id)
    puts = [(r["status"], r["fault"]) for r in hub.requests(since=mark) if r["method"] == "PUT"]
    assert puts == [(0, "drop"), (200, None)]
    assert _leftovers(hub) == []
    path = hf_hub_download(
        repo_id, "model.safetensors", endpoint=hub.endpoint, token=users.alice, cache_dir=cache_dir
    )
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == sha256


def test_drop_during_a_xorb_upload_stores_nothing_and_the_client_retry_succeeds(
    hub: LocalHub, users, api: HfApi, repo_id: str, cache_dir: Path
) -> None:
    weights = os.urandom(1_000_000)
    hub.set_faults(
        [{"method": "POST", "path": "/v1/xorbs/default/", "action": "drop", "after_bytes": 100_000}]
    )
    mark = hub.request_stats()["count"]
    api.upload_file(path_or_fileobj=weights, path_in_repo="model.safetensors", repo_id=repo_id)
    posts = [(r["status"], r["fault"]) for r in hub.requests(since=mark) if "/v1/xorbs/" in r["path"]]
    assert posts == [(0, "drop"), (200, None)]
    assert _leftovers(hub) == []
    path = hf_hub_download(
        repo_id, "model.safetensors", endpoint=hub.endpoint, token=users.alice, cache_dir=cache_dir
    )
    assert Path(path).read_bytes() == weights


def _batch(hub: LocalHub, token: str, repo_id: str, oid: str, size: int) -> dict:
    response = httpx2.post(
        f"{hub.endpoint}/{repo_id}.git/info/lfs/objects/batch",
        json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": size}]},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/vnd.git-lfs+json"},
    )
    response.raise_for_status()
    return response.json()["objects"][0]


def test_client_vanishing_mid_upload_leaves_nothing(hub: LocalHub, users, api: HfApi, repo_id: str) -> None:
    data = os.urandom(500_000)
    oid = hashlib.sha256(data).hexdigest()
    href = _batch(hub, users.alice, repo_id, oid, len(data))["actions"]["upload"]["href"]
    url = urlsplit(href)
    with socket.create_connection((url.hostname, url.port)) as conn:
        conn.sendall(
            f"PUT {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data[: len(data) // 2]
        )
    deadline = time.monotonic() + 5
    while _leftovers(hub) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(hub) == []
    assert "actions" in _batch(hub, users.alice, repo_id, oid, len(data))  # still not stored

    # The same URL, used whole, works; then it is spent.
    assert httpx2.put(href, content=data).status_code == 200
    assert "actions" not in _batch(hub, users.alice, repo_id, oid, len(data))
    assert httpx2.put(href, content=data).status_code == 403


def test_upload_checks_size_and_hash(hub: LocalHub, users, repo_id: str) -> None:
    data = b"y" * 1000
    oid = hashlib.sha256(data).hexdigest()
    href = _batch(hub, users.alice, repo_id, oid, len(data))["actions"]["upload"]["href"]
    assert httpx2.put(href, content=b"z" * 1000).status_code == 400  # wrong content
    assert httpx2.put(href, content=data + b"!").status_code == 400  # too long
    assert httpx2.put(href[:-3] + "AAA", content=data).status_code == 403  # tampered signature
    assert _leftovers(hub) == []
    assert httpx2.put(href, content=data).status_code == 200


def test_admin_api_can_be_disabled(tmp_path: Path) -> None:
    with LocalHub(tmp_path / "hub", admin=False) as hub:
        assert httpx2.get(f"{hub.endpoint}/_localhub/requests").status_code == 404
        assert (
            httpx2.put(f"{hub.endpoint}/_localhub/faults", content=json.dumps({"rules": []})).status_code
            == 404
        )
        with pytest.raises(RuntimeError, match="404"):
            hub.requests()


def test_request_log(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    hub.clear_requests()
    api.model_info(repo_id)
    log = hub.requests()
    assert [(r["method"], r["path"], r["status"]) for r in log] == [("GET", f"/api/models/{repo_id}", 200)]
    assert log[0]["bytes_sent"] > 0 and log[0]["seq"] == 1
    assert hub.request_stats() == {"count": 1, "bytes_sent": log[0]["bytes_sent"]}
