"""Uploads, tree listings and downloads: LFS and regular files, revisions, ranges, caching."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from hubfuse.localhub import LocalHub

WEIGHTS = os.urandom(300_000)
CONFIG = b'{"model_type": "bert", "hidden_size": 8}\n'
CONFIG_OID = hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    (folder / "nested" / "deeper").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    (folder / "config.json").write_bytes(CONFIG)
    (folder / "nested" / "notes.txt").write_text("notes")
    (folder / "nested" / "deeper" / "blob.bin").write_bytes(b"\0\1\2")
    return folder


@pytest.fixture
def uploaded(api: HfApi, repo_id: str, model_dir: Path) -> str:
    api.upload_folder(repo_id=repo_id, folder_path=model_dir, commit_message="Add model")
    return repo_id


def test_upload_folder_stores_lfs_and_regular(api: HfApi, uploaded: str) -> None:
    info = api.model_info(uploaded, files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {
        ".gitattributes",
        "config.json",
        "model.safetensors",
        "nested/notes.txt",
        "nested/deeper/blob.bin",
    }
    weights = siblings["model.safetensors"]
    assert weights.lfs is not None
    assert weights.lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert weights.lfs.size == weights.size == len(WEIGHTS)
    assert siblings["config.json"].lfs is None
    assert siblings["config.json"].blob_id == CONFIG_OID
    assert siblings["nested/deeper/blob.bin"].lfs is not None  # binary content goes to LFS
    assert info.config == {"model_type": "bert", "hidden_size": 8}


def test_tree_listing(api: HfApi, uploaded: str) -> None:
    top = list(api.list_repo_tree(uploaded))
    assert {(type(e).__name__, e.path) for e in top} == {
        ("RepoFolder", "nested"),
        ("RepoFile", ".gitattributes"),
        ("RepoFile", "config.json"),
        ("RepoFile", "model.safetensors"),
    }
    nested = {e.path for e in api.list_repo_tree(uploaded, path_in_repo="nested")}
    assert nested == {"nested/notes.txt", "nested/deeper"}
    deep = list(api.list_repo_tree(uploaded, path_in_repo="nested/deeper"))
    assert [e.path for e in deep] == ["nested/deeper/blob.bin"]
    everything = list(api.list_repo_tree(uploaded, recursive=True))
    assert {e.path for e in everything if isinstance(e, RepoFolder)} == {"nested", "nested/deeper"}
    assert len([e for e in everything if isinstance(e, RepoFile)]) == 5
    weights = next(e for e in everything if e.path == "model.safetensors")
    assert weights.lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert len(weights.xet_hash) == 64 and int(weights.xet_hash, 16) >= 0  # as the Hub lists LFS files
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(uploaded, path_in_repo="missing"))


def test_tree_expand_has_last_commit(api: HfApi, uploaded: str) -> None:
    api.upload_file(
        path_or_fileobj=b"v2", path_in_repo="nested/notes.txt", repo_id=uploaded, commit_message="v2"
    )
    entries = {e.path: e for e in api.list_repo_tree(uploaded, expand=True)}
    assert entries["nested"].last_commit.title == "v2"
    assert entries["config.json"].last_commit.title == "Add model"
    infos = api.get_paths_info(uploaded, ["config.json", "nested", "nope"], expand=True)
    assert [i.path for i in infos] == ["config.json", "nested"]


def test_tree_pagination_follows_link_on_raw_paths(tmp_path: Path, model_dir: Path) -> None:
    with LocalHub(tmp_path / "hub", page_size=2) as small:
        api = HfApi(endpoint=small.endpoint, token=small.add_token("alice"))
        api.create_repo("alice/paged")
        api.upload_folder(repo_id="alice/paged", folder_path=model_dir)
        files = api.list_repo_files("alice/paged")
        assert len(files) == 5
        nested = list(api.list_repo_tree("alice/paged", path_in_repo="nested/deeper", revision="main"))
        assert [e.path for e in nested] == ["nested/deeper/blob.bin"]
        tree_calls = [r for r in small.requests() if "/tree/" in r["path"]]
        assert len(tree_calls) >= 4  # 7 entries in pages of 2, then the nested listing

        # Later pages list the commit the first page listed, even if the branch moves meanwhile.
        listing = iter(api.list_repo_tree("alice/paged", recursive=True))
        first_page = [next(listing), next(listing)]
        api.upload_file(path_or_fileobj=b"late", path_in_repo="a-late-file.txt", repo_id="alice/paged")
        paths = [e.path for e in [*first_page, *listing]]
        assert len(paths) == len(set(paths)) == 7
        assert "a-late-file.txt" not in paths


def test_refs_and_commits(api: HfApi, uploaded: str) -> None:
    refs = api.list_repo_refs(uploaded, include_pull_requests=True)
    assert [b.ref for b in refs.branches] == ["refs/heads/main"]
    assert refs.pull_requests == []
    commits = api.list_repo_commits(uploaded)
    assert [c.title for c in commits] == ["Add model", "initial commit"]
    assert commits[0].authors == ["alice"] and commits[1].authors == ["system"]
    assert commits[0].commit_id == refs.branches[0].target_commit
    assert api.list_repo_commits(uploaded, formatted=True)[0].formatted_title == "Add model"


@pytest.fixture(params=["xet", "classic-lfs"])
def transport(request: pytest.FixtureRequest) -> str:
    """Both download paths: Xet (the client's default, as against the Hub) and classic LFS."""
    if request.param == "classic-lfs":
        request.getfixturevalue("classic_lfs")
    return request.param


def test_hf_hub_download_lfs_and_regular(
    hub: LocalHub, api: HfApi, users, uploaded: str, cache_dir: Path, transport: str
) -> None:
    weights = hf_hub_download(
        uploaded, "model.safetensors", endpoint=hub.endpoint, token=users.alice, cache_dir=cache_dir
    )
    assert Path(weights).read_bytes() == WEIGHTS
    config = hf_hub_download(
        uploaded, "config.json", endpoint=hub.endpoint, token=users.alice, cache_dir=cache_dir
    )
    assert Path(config).read_bytes() == CONFIG
    # The cache names LFS blobs as with the real Hub: by sha256, by the Xet hash when Xet fetched them.
    blobs = {p.name for p in Path(weights).resolve().parent.iterdir()}
    xet_hash = api.get_paths_info(uploaded, ["model.safetensors"])[0].xet_hash
    assert (xet_hash if transport == "xet" else hashlib.sha256(WEIGHTS).hexdigest()) in blobs
    nested = hf_hub_download(
        uploaded, "nested/notes.txt", endpoint=hub.endpoint, token=users.alice, cache_dir=cache_dir
    )
    assert Path(nested).read_text() == "notes"


def test_resolve_headers_and_ranges(hub: LocalHub, uploaded: str) -> None:
    url = f"{hub.endpoint}/{uploaded}/resolve/main/model.safetensors"
    head = httpx2.head(url)
    sha256 = hashlib.sha256(WEIGHTS).hexdigest()
    assert head.status_code == 200
    assert head.headers["x-linked-etag"] == head.headers["etag"] == f'"{sha256}"'
    assert head.headers["x-linked-size"] == head.headers["content-length"] == str(len(WEIGHTS))
    assert len(head.headers["x-repo-commit"]) == 40
    # As the Hub: the Xet hash and where a Xet client gets its read token (classic clients ignore them).
    listed = HfApi(endpoint=hub.endpoint).get_paths_info(uploaded, ["model.safetensors"])[0]
    assert head.headers["x-xet-hash"] == listed.xet_hash
    assert 'rel="xet-auth"' in head.headers["link"]
    part = httpx2.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == WEIGHTS[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(WEIGHTS)}"
    tail = httpx2.get(url, headers={"Range": "bytes=-5"})
    assert tail.content == WEIGHTS[-5:]
    assert httpx2.get(url, headers={"Range": f"bytes={len(WEIGHTS)}-"}).status_code == 416
    regular = httpx2.head(f"{hub.endpoint}/{uploaded}/resolve/main/config.json")
    assert regular.headers["etag"] == f'"{CONFIG_OID}"'
    assert "x-linked-etag" not in regular.headers


def test_download_errors(hub: LocalHub, users, uploaded: str, cache_dir: Path) -> None:
    kwargs = {"endpoint": hub.endpoint, "token": users.alice, "cache_dir": cache_dir}
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(uploaded, "missing.txt", **kwargs)
    missing = httpx2.head(f"{hub.endpoint}/{uploaded}/resolve/main/missing.txt")
    assert missing.headers["x-error-code"] == "EntryNotFound"
    assert len(missing.headers["x-repo-commit"]) == 40
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(uploaded, "config.json", revision="nope", **kwargs)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("alice/no-such-repo", "config.json", **kwargs)


def test_snapshot_download_twice_downloads_nothing_the_second_time(
    hub: LocalHub, users, uploaded: str, cache_dir: Path, transport: str
) -> None:
    kwargs = {"endpoint": hub.endpoint, "token": users.alice, "cache_dir": cache_dir}
    before = hub.request_stats()["count"]
    folder = Path(snapshot_download(uploaded, **kwargs))
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "nested" / "deeper" / "blob.bin").read_bytes() == b"\0\1\2"
    first = hub.requests(since=before)
    # Three regular files and two LFS ones: through Xet, LFS bytes come from xorb fetches.
    lfs_route = "/v1/fetch/" if transport == "xet" else "/resolve/"
    resolved = sum(1 for r in first if r["method"] == "GET" and "/resolve/" in r["path"])
    assert resolved == (3 if transport == "xet" else 5)
    assert sum(r["bytes_sent"] for r in first if lfs_route in r["path"]) >= len(WEIGHTS)

    mark = first[-1]["seq"]
    assert Path(snapshot_download(uploaded, **kwargs)) == folder
    second = hub.requests(since=mark)
    assert [r for r in second if "/resolve/" in r["path"] or "/xet-cas/" in r["path"]] == []
    assert sum(r["bytes_sent"] for r in second) < 10_000  # only the repo info


def test_local_dir_download(hub: LocalHub, users, uploaded: str, tmp_path: Path) -> None:
    target = tmp_path / "local"
    snapshot_download(
        uploaded, endpoint=hub.endpoint, token=users.alice, local_dir=target, cache_dir=tmp_path / "c"
    )
    assert (target / "config.json").read_bytes() == CONFIG


def test_reupload_of_unchanged_files_sends_no_lfs_bytes(
    hub: LocalHub, api: HfApi, uploaded: str, model_dir: Path
) -> None:
    mark = hub.request_stats()["count"]
    (model_dir / "config.json").write_bytes(b'{"model_type": "bert", "hidden_size": 16}\n')
    api.upload_folder(repo_id=uploaded, folder_path=model_dir, commit_message="Only the config changed")
    calls = hub.requests(since=mark)
    assert not [r for r in calls if r["path"].startswith("/lfs-upload/")]
    assert api.list_repo_commits(uploaded)[0].title == "Only the config changed"
    assert api.model_info(uploaded).config["hidden_size"] == 16
