"""Protocol hygiene: every request gets an answer, bad bodies are 400s, the admin API stays local."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi

from hubfuse.localhub import LocalHub


@pytest.fixture
def repo_id(api: HfApi) -> str:
    """One repo for the whole module (parametrized node names do not make valid repo names)."""
    return api.create_repo("alice/hygiene", exist_ok=True).repo_id


def test_control_characters_in_paths_get_an_answer(hub: LocalHub, users, repo_id: str) -> None:
    headers = {"Authorization": f"Bearer {users.alice}"}
    for path in (
        f"/api/models/{repo_id}/tree/main/a%01b",
        f"/api/models/{repo_id}/revision/x%00y",
        f"/{repo_id}/resolve/main/%1b%5b31m.txt",
        f"/{repo_id}/resolve/ma%7Fin/config.json",
    ):
        response = httpx2.get(f"{hub.endpoint}{path}", headers=headers)  # a dropped connection raises
        assert response.status_code == 404, path
        message = response.headers["x-error-message"]
        assert message.isascii() and message.isprintable() and "\\x" in message


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/repos/create", []),
        ("POST", "/api/repos/create", {"name": 5}),
        ("POST", "/api/repos/create", {"name": "x", "private": "yes"}),
        ("DELETE", "/api/repos/delete", {"name": ["x"]}),
        ("POST", "/api/repos/move", {"fromRepo": 1, "toRepo": "alice/y"}),
        ("POST", "/api/validate-yaml", {"content": 3}),
        ("PUT", "/api/models/{repo}/settings", {"private": "no"}),
        ("POST", "/api/models/{repo}/paths-info/main", {"paths": [1, 2]}),
        ("POST", "/api/models/{repo}/preupload/main", {"files": [1]}),
        ("POST", "/api/models/{repo}/preupload/main", {"files": [{"path": "a", "size": "big"}]}),
        ("POST", "/api/models/{repo}/branch/dev", {"startingPoint": 7}),
        ("POST", "/api/models/{repo}/tag/main", {"tag": {"v": 1}}),
        ("POST", "/api/models/{repo}/discussions", {"title": "t", "pullRequest": "maybe"}),
        ("POST", "/api/models/{repo}/discussions", "just a string"),
        ("POST", "/{repo}.git/info/lfs/objects/batch", {"operation": "upload", "objects": 3}),
        (
            "POST",
            "/{repo}.git/info/lfs/objects/batch",
            {"operation": "upload", "transfers": 1, "objects": []},
        ),
        ("POST", "/{repo}.git/info/lfs/objects/batch", {"ref": {"name": 1}, "objects": []}),
        ("POST", "/{repo}.git/info/lfs/objects/verify", {"oid": "a", "size": "1"}),
    ],
)
def test_wrongly_typed_json_is_a_400(
    hub: LocalHub, users, repo_id: str, method: str, path: str, body
) -> None:
    response = httpx2.request(
        method,
        hub.endpoint + path.format(repo=repo_id),
        content=json.dumps(body),
        headers={"Authorization": f"Bearer {users.alice}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]


@pytest.mark.parametrize(
    "lines",
    [
        ['{"key": "header", "value": "summary"}'],
        ['{"key": "header", "value": {"summary": ["s"]}}'],
        ['{"key": "header", "value": {"summary": "s", "parentCommit": 12}}'],
        [
            '{"key": "header", "value": {"summary": "s"}}',
            '{"key": "file", "value": {"path": "a", "content": 5}}',
        ],
        [
            '{"key": "header", "value": {"summary": "s"}}',
            '{"key": "lfsFile", "value": {"path": "a", "size": "1"}}',
        ],
        ['{"key": "header", "value": {"summary": "s"}}', '{"key": "deletedFile", "value": {"path": ["a"]}}'],
        ['{"key": "header", "value": {"summary": "s"}}', '["key", "value"]'],
        ['{"key": 1, "value": {}}'],
        ["[" * 100_000],
    ],
)
def test_malformed_commit_payload_is_a_400(hub: LocalHub, users, repo_id: str, lines: list[str]) -> None:
    response = httpx2.post(
        f"{hub.endpoint}/api/models/{repo_id}/commit/main",
        content="\n".join(lines),
        headers={"Authorization": f"Bearer {users.alice}", "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 400, response.text


def test_admin_api_refuses_cross_origin_and_non_json(hub: LocalHub, api: HfApi, repo_id: str) -> None:
    rule = json.dumps({"rules": [{"path": ".", "action": 500, "times": None}]})
    url = f"{hub.endpoint}/_localhub/faults"
    refused = [
        httpx2.post(url, content=rule, headers={"Content-Type": "text/plain"}),  # a "simple" CORS request
        httpx2.post(url, content=rule),
        httpx2.post(
            url, content=rule, headers={"Content-Type": "application/json", "Origin": "https://evil.example"}
        ),
        httpx2.post(url, content=rule, headers={"Content-Type": "application/json", "Host": "evil.example"}),
        httpx2.get(f"{hub.endpoint}/_localhub/requests", headers={"Host": "rebound.example:80"}),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert hub.faults() == []
    assert api.model_info(repo_id).id == repo_id
    assert httpx2.get(f"{hub.endpoint}/_localhub/health").status_code == 200


def test_admin_api_refuses_every_browser_request_the_hubs_own_pages_included(hub: LocalHub) -> None:
    url = f"{hub.endpoint}/_localhub/faults"
    rule = json.dumps({"rules": [{"path": ".", "action": 500, "times": None}]})
    browser_marks = [
        {"Origin": hub.endpoint},  # a script on the hub's own origin (a repo file opened there)
        {"Origin": "null"},  # a sandboxed document
        {"Cookie": f"hubfuse_token_{hub.port}=hf_x"},  # the page cookie
        {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"},  # any fetch a browser sends
    ]
    for marks in browser_marks:
        changed = httpx2.post(url, content=rule, headers={"Content-Type": "application/json", **marks})
        read = httpx2.get(f"{hub.endpoint}/_localhub/requests", headers=marks)
        assert (changed.status_code, read.status_code) == (403, 403), marks
        assert "browser" in changed.json()["error"] or "web pages" in changed.json()["error"]
    assert hub.faults() == []


HOSTILE_FILES = {
    "evil.html": b"<script>fetch('/_localhub/requests')</script>",
    "evil.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "evil.xhtml": b'<html xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></html>',
    "no-extension": b"<html><script>alert(1)</script></html>",
    "notes.md": b"<script>alert(1)</script>",
    "picture.png": b"\x89PNG\r\n\x1a\n<script>alert(1)</script>",
    "config.json": b'{"a": "<script>alert(1)</script>"}',
}


def test_repo_files_never_render_as_pages_of_the_hub(
    hub: LocalHub, api: HfApi, users, tmp_path: Path
) -> None:
    from huggingface_hub import CommitOperationAdd, hf_hub_download

    repo = api.create_repo("alice/stored-script", exist_ok=True).repo_id
    api.create_commit(
        repo,
        [CommitOperationAdd(name, data) for name, data in HOSTILE_FILES.items()],
        commit_message="files a browser must not run",
    )
    for name, data in HOSTILE_FILES.items():
        for method in ("GET", "HEAD"):
            # A logged-in user's browser: the page cookie, no Authorization header.
            response = httpx2.request(
                method,
                f"{hub.endpoint}/{repo}/resolve/main/{name}",
                headers={"Cookie": f"hubfuse_token_{hub.port}={users.alice}", "Sec-Fetch-Dest": "document"},
            )
            assert response.status_code == 200, (name, response.text)
            headers = response.headers
            csp = headers["content-security-policy"]
            assert csp.startswith("sandbox") and "default-src 'none'" in csp, name
            assert headers["x-content-type-options"] == "nosniff", name
            content_type = headers["content-type"].split(";")[0]
            if name.endswith((".html", ".svg", ".xhtml")) or name == "no-extension":
                assert content_type == "application/octet-stream", name
                assert headers["content-disposition"].startswith("attachment;"), name
            else:
                assert content_type in ("text/plain", "image/png", "application/json"), name
            if method == "GET":
                assert response.content == data
        # The real client's downloads still work: ETag, X-Repo-Commit and sizes as before.
        path = hf_hub_download(repo, name, endpoint=hub.endpoint, token=users.alice, cache_dir=tmp_path)
        assert Path(path).read_bytes() == data
    # Every other non-page answer too: API JSON, errors.
    for response in (
        httpx2.get(f"{hub.endpoint}/api/models/{repo}"),
        httpx2.get(f"{hub.endpoint}/api/models/{repo}/tree/main"),
        httpx2.get(f"{hub.endpoint}/{repo}/resolve/main/absent.html"),
        httpx2.get(f"{hub.endpoint}/api/whoami-v2"),
        httpx2.get(f"{hub.endpoint}/_localhub/health"),
    ):
        assert response.headers["content-security-policy"] == "sandbox; default-src 'none'"
        assert response.headers["x-content-type-options"] == "nosniff"
    # The pages keep their own policy (no script, styles from the hub).
    page = httpx2.get(f"{hub.endpoint}/{repo}")
    assert page.status_code == 200 and "style-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.parametrize(
    "rule",
    [
        {"path": ".", "action": 500, "times": "x"},
        {"path": ".", "action": 500, "times": True},
        {"path": ".", "action": 500, "after": -1},
        {"path": ".", "action": 500, "retry_after": "soon"},
        {"path": 5, "action": 500},
        {"path": "(", "action": 500},
        {"path": ".", "action": 200},
        {"path": ".", "action": 500, "method": ["GET"]},
        {"path": ".", "action": 500, "tims": 2},
        "not a rule",
    ],
)
def test_invalid_fault_rules_are_refused_and_break_nothing(
    hub: LocalHub, api: HfApi, repo_id: str, rule
) -> None:
    with pytest.raises(RuntimeError, match="HTTP 400"):
        hub.add_faults(rule)
    assert hub.faults() == []
    assert api.model_info(repo_id).id == repo_id


@pytest.mark.parametrize("payload", [{"limit": "10"}, {"limit": 0}, {"limit": 5, "window": "1m"}, [5]])
def test_invalid_rate_limits_are_refused(hub: LocalHub, api: HfApi, repo_id: str, payload) -> None:
    with pytest.raises(RuntimeError, match="HTTP 400"):
        hub._admin("PUT", "ratelimit", payload)
    assert api.model_info(repo_id).id == repo_id


def test_auth_file_is_private(tmp_path: Path) -> None:
    data = tmp_path / "hub"
    hub = LocalHub(data)
    hub.add_token("alice")
    auth = data / "auth.json"
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    auth.chmod(0o644)  # written by an older version
    hub.add_token("bob")
    assert stat.S_IMODE(auth.stat().st_mode) == 0o600
    assert [p.name for p in data.iterdir() if p.name.startswith(".tmp")] == []
