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
