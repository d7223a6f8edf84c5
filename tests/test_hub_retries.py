"""Each HTTP request is retried at one layer: hubfuse's `Hub.call` or the client's own backoff.

Against the local hub with a fault that never stops, counted in its request log: a request the
client retries itself (1 try + its 5 retries) is not retried again by hubfuse, and one the client
sends once is retried by hubfuse, HUBFUSE_RETRIES times in all.
"""

from __future__ import annotations

import pytest
from huggingface_hub import CommitOperationAdd, HfApi

from hubfuse.errors import HubUnavailableError
from hubfuse.hub import Hub, RetryPolicy
from hubfuse.localhub import LocalHub

ATTEMPTS = 3
CLIENT_TRIES = 6  # huggingface_hub's http_backoff: the request and its 5 retries


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        token = server.add_token("alice", role="write")
        api = HfApi(endpoint=server.endpoint, token=token)
        api.create_repo("alice/flaky")
        api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="a.txt", repo_id="alice/flaky")
        server.client = Hub(server.endpoint, token, retry=RetryPolicy(attempts=ATTEMPTS, base_delay_s=0.01))
        server.sha = server.client.resolve("alice/flaky", None).sha
        yield server


def failing_requests(hub, path: str, call) -> int:
    # Retry-After 0: the client's backoff waits its minimum (1 s) between tries.
    hub.add_faults({"path": path, "action": 503, "times": None, "retry_after": 0})
    before = len(hub.requests())
    try:
        with pytest.raises(HubUnavailableError, match="the Hub kept failing"):
            call()
    finally:
        hub.clear_faults()
    return sum(1 for entry in hub.requests()[before:] if entry["fault"])


def test_a_listing_page_is_retried_by_the_client_alone(hub):
    sent = failing_requests(hub, "/tree/", lambda: hub.client.list_files("alice/flaky", hub.sha))
    assert sent == CLIENT_TRIES  # not CLIENT_TRIES * ATTEMPTS


def test_a_preupload_is_retried_by_the_client_alone(hub):
    addition = CommitOperationAdd("weights.bin", b"\0" * 2048)
    sent = failing_requests(hub, "/preupload/", lambda: hub.client.preupload("alice/flaky", [addition]))
    assert sent == CLIENT_TRIES


def test_a_request_the_client_sends_once_is_retried_by_hubfuse(hub):
    sent = failing_requests(hub, "/revision/main$", lambda: hub.client.resolve("alice/flaky", "main"))
    assert sent == ATTEMPTS


def test_a_commit_is_never_replayed_blindly(hub):
    addition = CommitOperationAdd("b.txt", b"more\n")
    sent = failing_requests(
        hub,
        "/commit/",
        lambda: hub.client.commit("alice/flaky", [addition], message="m", description="", parent=hub.sha),
    )
    assert sent == 1
