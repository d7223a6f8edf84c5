"""Repo lifecycle, settings, listings and metadata through the real client."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from hubfuse.localhub import LocalHub


def test_whoami(api: HfApi) -> None:
    me = api.whoami()
    assert me["name"] == "alice"
    assert me["type"] == "user"
    assert [org["name"] for org in me["orgs"]] == ["acme"]
    assert me["auth"]["accessToken"]["role"] == "write"


def test_whoami_with_unknown_token_is_invalid(hub: LocalHub) -> None:
    with pytest.raises(HfHubHTTPError, match="Invalid user token") as excinfo:
        HfApi(endpoint=hub.endpoint, token="hf_NotARealTokenAtAll1234").whoami()
    assert excinfo.value.response.status_code == 401


def test_create_exists_and_delete(api: HfApi, hub: LocalHub) -> None:
    url = api.create_repo("alice/lifecycle")
    assert url == f"{hub.endpoint}/alice/lifecycle"
    assert url.repo_id == "alice/lifecycle"
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo("alice/lifecycle")
    assert excinfo.value.response.status_code == 409
    assert excinfo.value.response.json()["url"] == url
    assert api.create_repo("alice/lifecycle", exist_ok=True) == url
    assert api.repo_exists("alice/lifecycle")
    api.delete_repo("alice/lifecycle")
    assert not api.repo_exists("alice/lifecycle")
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo("alice/lifecycle")
    api.delete_repo("alice/lifecycle", missing_ok=True)


def test_create_without_namespace_uses_token_user(api: HfApi) -> None:
    url = api.create_repo("bare-name")
    assert url.repo_id == "alice/bare-name"


def test_org_repo_and_dataset(api: HfApi, hub: LocalHub) -> None:
    url = api.create_repo("acme/data", repo_type="dataset")
    assert url == f"{hub.endpoint}/datasets/acme/data"
    api.upload_file(
        path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv", repo_id="acme/data", repo_type="dataset"
    )
    info = api.dataset_info("acme/data")
    assert info.id == "acme/data"
    assert {s.rfilename for s in info.siblings} == {".gitattributes", "train.csv"}
    assert api.list_repo_files("acme/data", repo_type="dataset") == [".gitattributes", "train.csv"]


def test_repo_info_fields(api: HfApi, repo_id: str) -> None:
    api.upload_file(
        path_or_fileobj=b"---\nlicense: apache-2.0\ntags:\n- fusion\nlibrary_name: transformers\n---\n# Card\n",
        path_in_repo="README.md",
        repo_id=repo_id,
    )
    api.upload_file(path_or_fileobj=b'{"model_type": "bert"}', path_in_repo="config.json", repo_id=repo_id)
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}}).encode()
    weights = struct.pack("<Q", len(header)) + header + bytes(24)
    api.upload_file(path_or_fileobj=weights, path_in_repo="model.safetensors", repo_id=repo_id)
    info = api.model_info(repo_id)
    assert info.safetensors.total == 6 and info.safetensors.parameters == {"F32": 6}
    assert "safetensors" in info.tags
    assert info.id == repo_id
    assert info.author == "alice"
    assert len(info.sha) == 40
    assert info.private is False
    assert info.config == {"model_type": "bert"}
    assert info.card_data.license == "apache-2.0"
    assert info.card_data.tags == ["fusion"]
    assert info.library_name == "transformers"
    assert info.created_at is not None and info.last_modified >= info.created_at
    assert all(s.size is None for s in info.siblings)
    detailed = api.model_info(repo_id, files_metadata=True)
    assert {s.rfilename: s.size for s in detailed.siblings}["config.json"] == len(b'{"model_type": "bert"}')


def test_repo_info_at_revision(api: HfApi, repo_id: str) -> None:
    first = api.model_info(repo_id).sha
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert api.model_info(repo_id).sha != first
    old = api.model_info(repo_id, revision=first)
    assert old.sha == first
    assert "x.txt" not in {s.rfilename for s in old.siblings}
    assert api.model_info(repo_id, revision=first[:7]).sha == first
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")


def test_missing_repo(api: HfApi) -> None:
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("alice/does-not-exist")
    assert not api.repo_exists("alice/does-not-exist")


def test_settings_private_and_gated(api: HfApi, repo_id: str) -> None:
    api.update_repo_settings(repo_id, private=True)
    assert api.model_info(repo_id).private is True
    api.update_repo_settings(repo_id, private=False, gated="manual")
    info = api.model_info(repo_id)
    assert info.private is False and info.gated == "manual"


def test_list_models_author_search_and_paging(tmp_path, users) -> None:
    with LocalHub(tmp_path / "hub", page_size=2) as small:
        token = small.add_token("alice", "write", ["acme"])
        api = HfApi(endpoint=small.endpoint, token=token)
        for name in ("alpha", "beta", "gamma", "delta", "epsilon"):
            api.create_repo(f"alice/{name}")
        api.create_repo("acme/alpha-org")
        api.create_repo("alice/hidden", private=True)

        everything = [m.id for m in api.list_models(author="alice")]
        assert sorted(everything) == sorted(
            ["alice/alpha", "alice/beta", "alice/gamma", "alice/delta", "alice/epsilon", "alice/hidden"]
        )
        assert [m.id for m in api.list_models(search="alpha")] == ["acme/alpha-org", "alice/alpha"]
        assert len(list(api.list_models(limit=3))) == 3
        anonymous = HfApi(endpoint=small.endpoint, token=False)
        assert "alice/hidden" not in {m.id for m in anonymous.list_models(author="alice")}
        pages = [r for r in small.requests() if r["path"] == "/api/models"]
        assert len(pages) > 3  # the client followed the Link headers

        first = httpx2.get(f"{small.endpoint}/api/models", params={"author": "alice"})
        assert 'rel="next"' in first.headers["link"]


def test_validate_yaml(api: HfApi, repo_id: str) -> None:
    with pytest.raises(ValueError, match=r"Invalid metadata in README\.md"):
        api.upload_file(
            path_or_fileobj=b"---\nlicense: [unclosed\n---\n", path_in_repo="README.md", repo_id=repo_id
        )
    response = httpx2.post(
        f"{api.endpoint}/api/validate-yaml", json={"content": "---\ntags: a\n---\nbody", "repoType": "model"}
    )
    assert response.status_code == 200 and response.json()["errors"] == []


def test_branches_and_tags(api: HfApi, repo_id: str) -> None:
    api.create_branch(repo_id, branch="dev")
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="dev.txt", repo_id=repo_id, revision="dev")
    api.create_tag(repo_id, tag="v1", revision="dev")
    refs = api.list_repo_refs(repo_id)
    assert {b.name for b in refs.branches} == {"main", "dev"}
    assert refs.converts == []
    assert [t.name for t in refs.tags] == ["v1"]
    assert refs.tags[0].target_commit == next(b.target_commit for b in refs.branches if b.name == "dev")
    assert "dev.txt" in api.list_repo_files(repo_id, revision="v1")
    assert "dev.txt" not in api.list_repo_files(repo_id)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_branch(repo_id, branch="dev")
    assert excinfo.value.response.status_code == 409
    api.create_branch(repo_id, branch="dev", exist_ok=True)
    api.delete_tag(repo_id, tag="v1")
    api.delete_branch(repo_id, branch="dev")
    assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["main"]


def test_move_repo(api: HfApi, repo_id: str) -> None:
    api.move_repo(repo_id, "acme/moved-here")
    assert api.repo_exists("acme/moved-here")
    assert api.model_info(repo_id).id == "acme/moved-here"  # the old name redirects, as on the Hub


def test_repo_ids_are_case_insensitive(hub: LocalHub, api: HfApi) -> None:
    api.create_repo("alice/CaseRepo")
    api.upload_file(path_or_fileobj=b"hi", path_in_repo="a.txt", repo_id="alice/caserepo")
    for spelling in ("alice/CaseRepo", "alice/caserepo", "ALICE/CASEREPO"):
        assert api.model_info(spelling).id == "alice/CaseRepo"  # the created casing, whatever was asked
    assert api.list_repo_files("Alice/caseREPO") == [".gitattributes", "a.txt"]
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo("alice/CASEREPO")
    assert excinfo.value.response.status_code == 409
    assert [m.id for m in api.list_models(author="ALICE", search="caserepo")] == ["alice/CaseRepo"]


def test_moved_repo_redirects_from_its_old_name(
    hub: LocalHub, api: HfApi, repo_id: str, tmp_path: Path
) -> None:
    api.upload_file(path_or_fileobj=b"moved", path_in_repo="m.txt", repo_id=repo_id)
    api.move_repo(repo_id, "acme/moved-twice")
    api.move_repo("acme/moved-twice", "acme/Moved-Final")
    for old in (repo_id, "acme/moved-twice"):
        assert api.model_info(old).id == "acme/Moved-Final"
        path = hf_hub_download(old, "m.txt", endpoint=hub.endpoint, token=False, cache_dir=tmp_path / "c")
        assert Path(path).read_bytes() == b"moved"
    raw = httpx2.get(f"{hub.endpoint}/api/models/{repo_id}/tree/main?recursive=1", follow_redirects=False)
    assert raw.status_code == 307
    assert raw.headers["location"] == "/api/models/acme/Moved-Final/tree/main?recursive=1"


def test_id_without_namespace_is_repo_not_found(hub: LocalHub, api: HfApi) -> None:
    assert api.repo_exists("gpt2") is False
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("gpt2", revision="main")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("gpt2", "config.json", endpoint=hub.endpoint, token=False)
