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
    local = httpx2.get(f"{hub.endpoint}/_localhub/health", headers={"Origin": hub.endpoint})
    assert local.status_code == 200


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
