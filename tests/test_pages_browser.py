"""The local hub's pages in a real browser: headless Chromium loads what a publish left there.

`hubfuse publish --variant` runs as a user runs it against a local hub; Chromium then renders the
pull request, the variant and a hostile card (scripts run in it as in any browser, unless the
page keeps them inert), and the test reads the DOM Chromium ends up with.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import httpx2
import pytest
from cli_env import hubfuse_env, run_hubfuse
from huggingface_hub import HfApi

from hubfuse.localhub import LocalHub

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium on this machine: scripts/test.sh installs the Debian package `chromium` when"
        " run as root; install it to run the browser tests",
    ),
    # huggingface_hub's own LFS upload passes a file object as `data=`, which httpx2 deprecates.
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]
REPO = "org/pages-model"
HOSTILE = "<script>document.title = 'pwned'; document.body.setAttribute('data-pwned', '1')</script>"


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""


class Dom(HTMLParser):
    """The elements of an HTML document, each with all the text inside it."""

    def __init__(self, markup: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.elements.append(element)
        if tag not in ("meta", "link", "input", "br", "img", "hr"):
            self._open.append(element)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._open) - 1, -1, -1):
            if self._open[depth].tag == tag:
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        return [
            e
            for e in self.elements
            if (tag is None or e.tag == tag) and (cls is None or cls in e.attrs.get("class", "").split())
        ]

    def by_id(self, element_id: str) -> Element:
        (element,) = [e for e in self.elements if e.attrs.get("id") == element_id]
        return element


class Chromium:
    """Headless Chromium, a fresh profile for every page."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._profiles = itertools.count()

    def _run(self, url: str, *args: str) -> str:
        profile = self.workdir / f"profile-{next(self._profiles)}"
        command = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *args,
            url,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    def dom(self, url: str) -> Dom:
        return Dom(self._run(url, "--dump-dom"))

    def screenshot(self, url: str, name: str) -> Path:
        path = self.workdir / f"{name}.png"
        self._run(url, f"--screenshot={path}", "--window-size=1280,1400", "--hide-scrollbars")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
        return path


@dataclass
class Published:
    hub: LocalHub
    api: HfApi
    output: str
    browser: Chromium


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, checkpoints) -> Iterator[Published]:
    root = tmp_path_factory.mktemp("pages")
    with LocalHub(root / "hub") as hub:
        token = hub.add_token("alice", "write", ["org"])
        api = HfApi(endpoint=hub.endpoint, token=token)
        api.create_repo(REPO)
        api.upload_folder(repo_id=REPO, folder_path=str(checkpoints("qwen3_vl")), commit_message="seed")
        result = run_hubfuse("publish", REPO, "--variant", env=hubfuse_env(hub.endpoint, root, token))
        assert result.returncode == 0, result.stderr[-3000:]
        yield Published(hub, api, result.stdout, Chromium(root))


def test_publish_prints_the_local_hub_pages(published: Published) -> None:
    endpoint = published.hub.endpoint
    lines = published.output.split("pages on the local hub:\n", 1)[1].splitlines()
    pages = dict(line.strip().rsplit(" ", 1) for line in lines if line.startswith("  "))
    pages = {label.strip(): url for label, url in pages.items()}
    assert pages == {
        "repos": f"{endpoint}/",
        "source repo": f"{endpoint}/{REPO}",
        "pull request": f"{endpoint}/{REPO}/discussions/1",
        "pull request files": f"{endpoint}/{REPO}/tree/refs%2Fpr%2F1",
        "variant": f"{endpoint}/{REPO}-fused",
    }
    for url in pages.values():
        page = httpx2.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), url


def test_pull_request_page_shows_the_diff_and_the_verification_table(published: Published) -> None:
    url = f"{published.hub.endpoint}/{REPO}/discussions/1"
    dom = published.browser.dom(url)
    assert dom.by_id("title").text.startswith("Enable fusion_config: patch_embeddings (hubfuse)")
    assert dom.by_id("status").text == "open" and dom.by_id("author").text == "alice"
    added = [line.text for line in dom.all("span", "add")]
    assert '+  "fusion_config": {' in added and '+    "patch_embeddings": true' in added
    assert not dom.all("span", "del")  # a minimal diff: nothing removed
    description = dom.by_id("description").text
    tables = [t for t in dom.all("table") if "original-format re-save" in t.text]
    assert len(tables) == 1 and tables[0].text in description
    cells = [td.text for td in dom.all("td")]
    assert "original-format re-save" in cells and "fused weights = converted source weights" in cells
    downstream = [cell for cell in cells if cell.startswith("fused, weights exact")]
    assert len(downstream) == 1 and "|output diff|" in downstream[0] and "tolerance" in downstream[0]
    assert "hubfuse:" not in description  # the marker stays hidden
    published.browser.screenshot(url, "pull-request")


def test_variant_page_shows_its_card_metadata(published: Published) -> None:
    url = f"{published.hub.endpoint}/{REPO}-fused"
    dom = published.browser.dom(url)
    base_model = [tr.text for tr in dom.all("tr") if tr.text.startswith("base_model")]
    assert base_model == [f"base_model{REPO}"] and base_model[0] in dom.by_id("metadata").text
    assert "hubfuse" in next(tr.text for tr in dom.all("tr") if tr.text.startswith("tags"))
    assert "fused layout reload" in dom.by_id("card").text
    files = [a.text for a in dom.all("a") if a.attrs.get("href", "").startswith(f"/{REPO}-fused/blob/main/")]
    assert "config.json" in files and "model.safetensors" in files
    published.browser.screenshot(url, "variant")


def test_scripts_in_a_card_or_a_pull_request_never_run(published: Published) -> None:
    api = published.api
    repo = api.create_repo("org/hostile-card").repo_id
    card = f'---\nlicense: mit\ndescription: "{HOSTILE}"\n---\n# Hostile\n\n{HOSTILE}\n\n<img src=x onerror="document.title=\'pwned\'">\n'
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=repo)
    api.upload_file(
        path_or_fileobj=b"{}",
        path_in_repo="config.json",
        repo_id=repo,
        create_pr=True,
        commit_message="harmless",
        commit_description=f"Look: {HOSTILE}",
    )
    for path, title in ((repo, f"{repo} · hubfuse local hub"), (f"{repo}/discussions/1", None)):
        dom = published.browser.dom(f"{published.hub.endpoint}/{path}")
        (page_title,) = dom.all("title")
        assert "pwned" not in page_title.text and (title is None or page_title.text == title)
        assert not dom.all("script") and not dom.all("img")
        (body,) = dom.all("body")
        assert "data-pwned" not in body.attrs
        shown = dom.by_id("card" if path == repo else "description").text
        assert "<script>document.title = 'pwned'" in shown  # shown as text
