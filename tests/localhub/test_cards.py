"""Card metadata validated like the Hub: license ids, model-index, on validate-yaml and on commit."""

from __future__ import annotations

import base64
import json

import httpx2
import pytest
from huggingface_hub import HfApi

from hubfuse.localhub import LocalHub

GOOD_MODEL_INDEX = """model-index:
- name: tiny
  results:
  - task: {type: image-text-to-text}
    dataset: {type: mmmu, name: MMMU}
    metrics:
    - {type: accuracy, value: 0.5}
"""


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ("license: apache-2.0\n", None),
        ("license: llama3.2\n", None),
        ("license: other\nlicense_name: acme-research\nlicense_link: LICENSE\n", None),
        (GOOD_MODEL_INDEX, None),
        ("license: my-own-license\n", "license"),
        ("license: Apache 2.0\n", "license"),
        ("license: [mit, not-a-license]\n", "license"),
        ("license: other\nlicense_name: [a]\n", "license_name"),
        ("model-index: {name: tiny}\n", "model-index"),
        ("model-index:\n- name: tiny\n  results:\n  - task: {name: x}\n", "model-index"),
        (GOOD_MODEL_INDEX.replace("type: accuracy, ", ""), "model-index"),
    ],
)
def test_validate_yaml(hub: LocalHub, metadata: str, error: str | None) -> None:
    response = httpx2.post(
        f"{hub.endpoint}/api/validate-yaml",
        json={"content": f"---\n{metadata}---\n# card\n", "repoType": "model"},
    )
    if error is None:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 400
        assert error in response.json()["errors"][0]["message"]


def test_commit_of_a_card_the_hub_would_refuse_is_refused(
    hub: LocalHub, users, api: HfApi, repo_id: str
) -> None:
    # Raw NDJSON, as a client that skips validate-yaml would send it.
    lines = [
        {"key": "header", "value": {"summary": "card"}},
        {
            "key": "file",
            "value": {
                "path": "README.md",
                "encoding": "base64",
                "content": base64.b64encode(b"---\nlicense: mine\n---\n").decode(),
            },
        },
    ]
    for create_pr in ("", "?create_pr=1"):
        response = httpx2.post(
            f"{hub.endpoint}/api/models/{repo_id}/commit/main{create_pr}",
            content="\n".join(json.dumps(line) for line in lines),
            headers={"Authorization": f"Bearer {users.alice}", "Content-Type": "application/x-ndjson"},
        )
        assert response.status_code == 400 and "license" in response.json()["error"]
    assert api.list_repo_files(repo_id) == [".gitattributes"]
    assert api.get_repo_discussions(repo_id) is not None and list(api.get_repo_discussions(repo_id)) == []
    api.upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n", path_in_repo="README.md", repo_id=repo_id)
    assert api.model_info(repo_id).card_data.license == "mit"


@pytest.mark.parametrize("lead", ["\n", "\n\n", "  \n", "\r\n"], ids=["nl", "2nl", "spaces", "crlf"])
def test_metadata_after_leading_blank_lines_is_metadata(
    hub: LocalHub, users, api: HfApi, repo_id: str, lead: str
) -> None:
    """The client's `REGEX_YAML_BLOCK` allows whitespace before the fence, and so does the Hub."""
    bad = f"{lead}---\nlicense: not-a-license\n---\n# card\n".encode()
    with pytest.raises(ValueError, match="license"):  # validate-yaml, before anything is uploaded
        api.upload_file(path_or_fileobj=bad, path_in_repo="README.md", repo_id=repo_id)
    lines = [
        {"key": "header", "value": {"summary": "card"}},
        {
            "key": "file",
            "value": {"path": "README.md", "encoding": "base64", "content": base64.b64encode(bad).decode()},
        },
    ]
    response = httpx2.post(
        f"{hub.endpoint}/api/models/{repo_id}/commit/main",
        content="\n".join(json.dumps(line) for line in lines),
        headers={"Authorization": f"Bearer {users.alice}", "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 400 and "license" in response.json()["error"]
    bad_index = f"{lead}---\nmodel-index: {{name: tiny}}\n---\n".encode()
    with pytest.raises(ValueError, match="model-index"):
        api.upload_file(path_or_fileobj=bad_index, path_in_repo="README.md", repo_id=repo_id)
    assert api.list_repo_files(repo_id) == [".gitattributes"]

    good = f"{lead}---\nlicense: mit\ntags: [tiny]\n---\n# card\n".encode()
    api.upload_file(path_or_fileobj=good, path_in_repo="README.md", repo_id=repo_id)
    info = api.model_info(repo_id)
    assert info.card_data is not None and info.card_data.license == "mit"
    assert "tiny" in (info.tags or [])


def test_front_matter_is_read_with_the_clients_regex() -> None:
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    from hubfuse.localhub.cards import FRONT_MATTER_RE, front_matter

    assert FRONT_MATTER_RE.pattern == REGEX_YAML_BLOCK.pattern
    for text in (
        "\n---\na: 1\n---\n",
        "---\n---\n",
        "x\n---\na: 1\n---\n",
        "---\r\na: 1\r\n---",
        "\t---\na: 1\n---",
    ):
        block = REGEX_YAML_BLOCK.search(text)
        assert front_matter(text) == (block.group(2) if block else None), repr(text)
