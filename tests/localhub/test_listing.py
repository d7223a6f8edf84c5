"""Listings filtered and shaped as the Hub does: `filter=` tags, `expand=` exactly, unknown expand 400."""

from __future__ import annotations

import json
from typing import get_args

import httpx2
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.hf_api import ExpandDatasetProperty_T, ExpandModelProperty_T, ExpandSpaceProperty_T

from hubfuse.localhub import LocalHub
from hubfuse.localhub.listing import EXPAND_PROPERTIES

CARD = b"---\nlicense: mit\nlibrary_name: transformers\npipeline_tag: text-generation\ntags: [listing-probe]\ndatasets: [acme/corpus]\n---\n"


@pytest.fixture(scope="module")
def tagged(hub: LocalHub, users) -> tuple[str, str]:
    api = HfApi(endpoint=hub.endpoint, token=users.alice)
    tagged = api.create_repo("alice/listing-tagged", exist_ok=True).repo_id
    api.upload_file(path_or_fileobj=CARD, path_in_repo="README.md", repo_id=tagged)
    config = json.dumps({"model_type": "listingtype"}).encode()
    api.upload_file(path_or_fileobj=config, path_in_repo="config.json", repo_id=tagged)
    plain = api.create_repo("alice/listing-plain", exist_ok=True).repo_id
    return tagged, plain


def test_filter_keeps_only_repos_with_every_tag(api: HfApi, tagged: tuple[str, str]) -> None:
    repo, plain = tagged
    assert [m.id for m in api.list_models(filter="listing-probe")] == [repo]
    for tags in (
        ["listing-probe", "license:mit"],
        ["transformers", "listing-probe"],
        ["dataset:acme/corpus", "listingtype"],
        ["text-generation", "listing-probe"],
    ):
        assert [m.id for m in api.list_models(filter=tags)] == [repo], tags
    assert list(api.list_models(filter=["listing-probe", "license:apache-2.0"])) == []
    assert list(api.list_models(filter="no-repo-has-this-tag")) == []
    assert [m.id for m in api.list_models(author="alice", search="listing-")] == [plain, repo]
    assert [m.id for m in api.list_models(search="listing-", pipeline_tag="text-generation")] == [repo]
    info = api.model_info(repo)
    assert {"listing-probe", "license:mit", "dataset:acme/corpus", "transformers"} <= set(info.tags)


def test_expand_returns_only_the_asked_fields(api: HfApi, tagged: tuple[str, str]) -> None:
    repo, _ = tagged
    (model,) = api.list_models(search="listing-tagged", expand=["author"])
    assert (model.id, model.author) == (repo, "alice")
    assert model.sha is None and model.created_at is None and model.last_modified is None
    assert model.downloads is None and model.tags is None and model.config is None
    (model,) = api.list_models(search="listing-tagged", expand=["sha", "config", "downloadsAllTime"])
    assert model.sha == api.model_info(repo).sha and model.config == {"model_type": "listingtype"}
    assert model.downloads_all_time == 0 and model.author is None and model.downloads is None
    (model,) = api.list_models(search="listing-tagged", expand=["siblings", "safetensors"])
    assert {s.rfilename for s in model.siblings} == {".gitattributes", "README.md", "config.json"}
    info = api.model_info(repo, expand=["author", "cardData"])
    assert info.author == "alice" and info.card_data.license == "mit"
    assert info.sha is None and info.created_at is None and info.siblings is None


def test_plain_model_listing_has_the_hubs_fields(hub: LocalHub, tagged: tuple[str, str]) -> None:
    response = httpx2.get(f"{hub.endpoint}/api/models", params={"search": "listing-tagged"})
    (entry,) = response.json()
    assert set(entry) == {
        "_id", "id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag",
        "library_name", "createdAt", "modelId",
    }  # fmt: skip
    with_card = httpx2.get(f"{hub.endpoint}/api/models", params={"search": "listing-tagged", "cardData": "1"})
    assert with_card.json()[0]["cardData"]["license"] == "mit"


def test_unknown_expand_value_is_a_400(hub: LocalHub, api: HfApi, tagged: tuple[str, str]) -> None:
    repo, _ = tagged
    for call in (
        lambda: list(api.list_models(expand=["foo"])),  # type: ignore[list-item]
        lambda: api.model_info(repo, expand=["foo"]),  # type: ignore[list-item]
        lambda: list(api.list_datasets(expand=["config"])),  # type: ignore[list-item]
    ):
        with pytest.raises(HfHubHTTPError) as excinfo:
            call()
        assert excinfo.value.response.status_code == 400


def test_expand_properties_are_the_clients() -> None:
    for repo_type, literal in (
        ("model", ExpandModelProperty_T),
        ("dataset", ExpandDatasetProperty_T),
        ("space", ExpandSpaceProperty_T),
    ):
        assert EXPAND_PROPERTIES[repo_type] == set(get_args(literal)), repo_type


def test_dataset_keyword_filters_are_card_tags(api: HfApi) -> None:
    repo = api.create_repo("alice/listing-dataset", repo_type="dataset", exist_ok=True).repo_id
    card = b"---\nlanguage: [fr]\ntask_categories: [text-classification]\nlicense: cc-by-4.0\n---\n"
    api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id=repo, repo_type="dataset")
    found = [d.id for d in api.list_datasets(language="fr", task_categories="text-classification")]
    assert found == [repo]
    assert [d.id for d in api.list_datasets(filter="license:cc-by-4.0", author="alice")] == [repo]
    assert list(api.list_datasets(language="de", author="alice")) == []
    (dataset,) = api.list_datasets(search="listing-dataset", expand=["tags", "lastModified"])
    assert "language:fr" in dataset.tags and dataset.last_modified is not None and dataset.sha is None
