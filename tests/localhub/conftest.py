"""Fixtures for the local Hub conformance tests: a running server and tokens for a few users.

Every test talks to the server through the real `huggingface_hub` client over HTTP.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import pytest
from huggingface_hub import HfApi, constants

from hubfuse.localhub import LocalHub


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # huggingface_hub's own LFS upload passes a file object as `data=`, which httpx2 deprecates.
    for item in items:
        if "localhub" in item.nodeid:
            item.add_marker(pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"))


@dataclass
class Users:
    alice: str  # write, member of org "acme"
    alice_read: str  # alice's read-only token
    bob: str  # write, no orgs


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    with LocalHub(tmp_path_factory.mktemp("hub")) as running:
        yield running


@pytest.fixture(scope="session")
def users(hub: LocalHub) -> Users:
    return Users(
        alice=hub.add_token("alice", "write", ["acme"]),
        alice_read=hub.add_token("alice", "read", ["acme"]),
        bob=hub.add_token("bob", "write"),
    )


@pytest.fixture(autouse=True)
def _no_leftover_faults(hub: LocalHub) -> Iterator[None]:
    yield
    hub.clear_faults()
    hub.set_rate_limit(None)


@pytest.fixture
def classic_lfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's classic LFS path, as against a server that does not speak Xet."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


@pytest.fixture
def api(hub: LocalHub, users: Users) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=users.alice)


@pytest.fixture
def repo_id(request: pytest.FixtureRequest, api: HfApi) -> str:
    """A fresh model repo of alice's, named after the test."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-.")[:80]
    repo = f"alice/{name}"
    api.create_repo(repo)
    return repo


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"
