"""The HTML pages over real HTTP: what they show, to whom, and that the API paths stay the API's.

tests/test_pages_browser.py loads the pages of a published repo in a real browser.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx2
import pytest
from huggingface_hub import HfApi, constants

from hubfuse.hub import Hub
from hubfuse.localhub import LocalHub

CARD = """---
license: mit
base_model: acme/source
tags: [vision, "<b>bold</b>"]
---
# A card

<script>document.title = "pwned"</script>

Text with <img src=x onerror="document.title='pwned'"> inline HTML.

| check | result |
|---|---|
| weights | exact |

<!-- hubfuse-variant: {"hidden": true} -->
"""


def get(hub: LocalHub, path: str, token: str | None = None, **kwargs) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.get(f"{hub.endpoint}{path}", headers=headers, **kwargs)


@pytest.fixture
def card_repo(api: HfApi, repo_id: str) -> str:
    api.upload_file(path_or_fileobj=CARD.encode(), path_in_repo="README.md", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b'{\n  "a": 1\n}\n', path_in_repo="config.json", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"\1" * 3000, path_in_repo="w/model.safetensors", repo_id=repo_id)
    api.upload_file(
        path_or_fileobj=b'{\n  "a": 1,\n  "fusion_config": {}\n}\n',
        path_in_repo="config.json",
        repo_id=repo_id,
        create_pr=True,
        commit_message="Enable <i>it</i>",
        commit_description="Why:\n\n| check | result |\n|---|---|\n| x | <script>alert(1)</script> |\n",
    )
    return repo_id


def test_repo_page_renders_the_card_inert_and_the_files(hub: LocalHub, card_repo: str) -> None:
    page = get(hub, f"/{card_repo}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]  # so no script may run
    body = page.text
    assert "<script" not in body and "<img" not in body
    assert "&lt;script&gt;document.title = &#34;pwned&#34;&lt;/script&gt;" in body.replace("&quot;", "&#34;")
    assert "&lt;b&gt;bold&lt;/b&gt;" in body  # a metadata value, escaped
    assert "<tr><th>base_model</th><td>acme/source</td></tr>" in body
    assert "<td>weights</td>" in body  # the Markdown table is a table
    assert "hubfuse-variant" not in body  # HTML comments stay hidden, as on the Hub
    assert f'href="/{card_repo}/blob/main/config.json"' in body
    assert f'href="/{card_repo}/tree/main/w"' in body

    folder = get(hub, f"/{card_repo}/tree/main/w").text
    assert "model.safetensors" in folder and ">LFS<" in folder and "3.0 kB" in folder

    text = get(hub, f"/{card_repo}/blob/main/config.json")
    assert text.status_code == 200 and "&#34;a&#34;: 1" in text.text
    lfs = get(hub, f"/{card_repo}/blob/main/w/model.safetensors").text
    a_file = get(hub, f"/{card_repo}/tree/main/w/model.safetensors")
    assert (
        a_file.status_code == 302
        and a_file.headers["location"] == f"/{card_repo}/blob/main/w/model.safetensors"
    )
    assert "Not shown: an LFS file" in lfs

    pr_files = get(hub, f"/{card_repo}/tree/refs%2Fpr%2F1")
    assert pr_files.status_code == 200 and "revision <b>refs/pr/1</b>" in pr_files.text


def test_pull_request_page(hub: LocalHub, card_repo: str) -> None:
    listing = get(hub, f"/{card_repo}/discussions").text
    assert f'href="/{card_repo}/discussions/1"' in listing and "Enable &lt;i&gt;it&lt;/i&gt;" in listing

    page = get(hub, f"/{card_repo}/discussions/1").text
    assert '<span class="status open" id="status">open</span>' in page
    assert '<b id="author">alice</b>' in page
    assert "<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>" in page  # description table, inert
    assert '<span class="line add">+  &#34;fusion_config&#34;: {}</span>' in page
    assert '<span class="line del">-  &#34;a&#34;: 1</span>' in page
    assert "<script" not in page


def test_api_paths_are_never_pages(hub: LocalHub, users, card_repo: str) -> None:
    info = get(hub, f"/api/models/{card_repo}")
    assert info.headers["content-type"] == "application/json" and info.json()["id"] == card_repo
    raw = get(hub, f"/{card_repo}/resolve/main/config.json")
    assert raw.status_code == 200 and raw.content == b'{\n  "a": 1\n}\n'
    unknown = get(hub, "/api/no-such-route")
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/json"
    for path in ("/api/models", "/datasets/x", "/spaces/x"):
        assert not get(hub, path).headers["content-type"].startswith("text/html"), path
    lfs = httpx2.post(f"{hub.endpoint}/{card_repo}.git/info/lfs/objects/batch", json={})
    assert lfs.headers["content-type"] != "text/html"


def test_datasets_are_listed_and_shown(hub: LocalHub, api: HfApi) -> None:
    dataset = api.create_repo("acme/pages-data", repo_type="dataset").repo_id
    api.upload_file(
        path_or_fileobj=b"---\nlicense: cc0-1.0\n---\n# Data card",
        path_in_repo="README.md",
        repo_id=dataset,
        repo_type="dataset",
    )
    assert f'href="/datasets/{dataset}"' in get(hub, "/").text
    page = get(hub, f"/datasets/{dataset}").text
    assert "<h1>Data card</h1>" in page and "<tr><th>license</th><td>cc0-1.0</td></tr>" in page
    assert get(hub, f"/{dataset}").status_code == 401  # no model of that name


def test_private_and_gated_repos_follow_the_api_rules(hub: LocalHub, users, api: HfApi) -> None:
    private = api.create_repo("acme/pages-private", private=True).repo_id
    api.upload_file(path_or_fileobj=b"# secret card", path_in_repo="README.md", repo_id=private)
    for token, status in ((None, 401), (users.bob, 404)):
        page = get(hub, f"/{private}", token)
        assert page.status_code == status and "secret" not in page.text
        assert get(hub, f"/{private}/discussions", token).status_code == status
        assert private not in get(hub, "/", token).text
    assert "secret card" in get(hub, f"/{private}", users.alice_read).text
    assert private in get(hub, "/", users.alice).text

    gated = api.create_repo("acme/pages-gated").repo_id
    api.upload_file(path_or_fileobj=b"# gated card", path_in_repo="README.md", repo_id=gated)
    api.upload_file(path_or_fileobj=b"gated change", path_in_repo="README.md", repo_id=gated, create_pr=True)
    api.update_repo_settings(gated, gated="auto")
    for token in (None, users.bob):
        page = get(hub, f"/{gated}", token)
        assert page.status_code == 200 and "gated card" not in page.text and 'id="gate"' in page.text
        assert "README.md" in page.text  # the file list, as the API's tree shows it to anyone
        assert get(hub, f"/{gated}/blob/main/README.md", token).status_code == (401 if token is None else 403)
        pr = get(hub, f"/{gated}/discussions/1", token)
        assert pr.status_code == 200 and "gated change" not in pr.text and 'id="diff"' not in pr.text
    hub.grant_access(gated, "bob")
    assert "gated card" in get(hub, f"/{gated}", users.bob).text
    assert "gated change" in get(hub, f"/{gated}/discussions/1", users.bob).text


def test_token_form_keeps_the_token_in_a_strict_http_only_cookie(hub: LocalHub, users, api: HfApi) -> None:
    private = api.create_repo("acme/pages-cookie", private=True).repo_id
    with httpx2.Client(base_url=hub.endpoint) as browser:
        assert browser.get(f"/{private}").status_code == 401
        login = browser.post("/login", data={"token": users.alice, "next": f"/{private}"})
        assert login.status_code == 303 and login.headers["location"] == f"/{private}"
        assert users.alice not in login.headers["location"]
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("hubfuse_token_") and users.alice in cookie
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/"):
            assert attribute.lower() in cookie.lower(), cookie
        page = browser.get(f"/{private}")
        assert page.status_code == 200 and "signed in as <b>alice</b>" in page.text
        assert users.alice not in page.text
        # The cookie authenticates pages only, never the API.
        assert browser.get(f"/api/models/{private}").status_code == 401
        logout = browser.post("/logout", data={"next": "/"})
        assert logout.status_code == 303 and "Max-Age=0" in logout.headers["set-cookie"]
        assert browser.get(f"/{private}").status_code == 401

    bad = httpx2.post(f"{hub.endpoint}/login", data={"token": "hf_not_a_token", "next": "/"})
    assert bad.status_code == 401 and "set-cookie" not in bad.headers and "hf_not_a_token" not in bad.text
    elsewhere = httpx2.post(f"{hub.endpoint}/login", data={"token": users.alice, "next": "//evil.example/"})
    assert elsewhere.headers["location"] == "/"
    cross_site = httpx2.post(
        f"{hub.endpoint}/login", data={"token": users.alice}, headers={"Origin": "http://evil.example"}
    )
    assert cross_site.status_code == 403 and "set-cookie" not in cross_site.headers


def test_publish_detects_the_local_hub_by_its_header(hub: LocalHub) -> None:
    assert Hub(endpoint=hub.endpoint, token="unused").is_local_hub()


@pytest.fixture
def plain_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_another_server_is_not_taken_for_the_local_hub(
    plain_server: str, hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not Hub(endpoint=plain_server, token="unused").is_local_hub()
    assert not Hub(endpoint="http://127.0.0.1:9", token="unused").is_local_hub()  # nothing listens
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert not Hub(endpoint=hub.endpoint, token="unused").is_local_hub()  # asks nothing when offline
