"""The server as processes: restarts, a child process, two processes on one data dir, the CLI,
and `transformers` loading from it through HF_ENDPOINT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

from hubfuse.localhub import LocalHub


def test_data_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    weights = os.urandom(20_000)
    with LocalHub(data_dir) as hub:
        token = hub.add_token("alice")
        api = HfApi(endpoint=hub.endpoint, token=token)
        api.create_repo("alice/persist", private=True)
        api.upload_file(path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id="alice/persist")
        pr = api.create_commit(
            "alice/persist", [CommitOperationAdd("a.txt", b"a")], commit_message="PR", create_pr=True
        )
        api.comment_discussion("alice/persist", pr.pr_num, "remember me")
        api.create_tag("alice/persist", tag="v1")
        sha = api.model_info("alice/persist").sha

    with LocalHub(data_dir) as hub:
        api = HfApi(endpoint=hub.endpoint, token=token)  # the token persisted too
        info = api.model_info("alice/persist")
        assert info.sha == sha and info.private is True
        assert [t.name for t in api.list_repo_refs("alice/persist").tags] == ["v1"]
        path = hf_hub_download(
            "alice/persist", "w.safetensors", endpoint=hub.endpoint, token=token, cache_dir=tmp_path / "c"
        )
        assert Path(path).read_bytes() == weights
        assert "a.txt" in api.list_repo_files("alice/persist", revision="refs/pr/1")
        details = api.get_discussion_details("alice/persist", pr.pr_num)
        assert details.events[-1].content == "remember me"
        mark = hub.request_stats()["count"]
        api.upload_file(path_or_fileobj=weights, path_in_repo="copy.safetensors", repo_id="alice/persist")
        assert not [r for r in hub.requests(since=mark) if r["method"] == "PUT"]  # the LFS object is known


def test_two_server_processes_share_one_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    with LocalHub(data_dir, subprocess=True) as child, LocalHub(data_dir) as local:
        token = local.add_token("alice")
        HfApi(endpoint=child.endpoint, token=token).create_repo("alice/shared")
        endpoints = [child.endpoint, local.endpoint]

        def commit(i: int) -> str:
            api = HfApi(endpoint=endpoints[i % 2], token=token)
            return api.upload_file(
                path_or_fileobj=str(i).encode(), path_in_repo=f"f{i}.txt", repo_id="alice/shared"
            ).oid

        with ThreadPoolExecutor(max_workers=8) as pool:
            oids = set(pool.map(commit, range(12)))
        for endpoint in endpoints:
            api = HfApi(endpoint=endpoint, token=token)
            assert {f"f{i}.txt" for i in range(12)} <= set(api.list_repo_files("alice/shared"))
            assert len(api.list_repo_commits("alice/shared")) == 13
            assert oids <= {c.commit_id for c in api.list_repo_commits("alice/shared")}
        assert len(child.requests()) > 0  # the child's admin API answers over HTTP


def test_cli_token_add(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    result = subprocess.run(
        [sys.executable, "-m", "hubfuse.localhub", "token", "add", "erin", "--data", str(data_dir),
         "--role", "read", "--org", "acme", "--org", "beta"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    token = result.stdout.strip()
    assert token.startswith("hf_")
    entry = json.loads((data_dir / "auth.json").read_text())["tokens"][token]
    assert (entry["user"], entry["role"], entry["orgs"]) == ("erin", "read", ["acme", "beta"])
    with LocalHub(data_dir) as hub:
        assert HfApi(endpoint=hub.endpoint, token=token).whoami()["name"] == "erin"


TRANSFORMERS_SCRIPT = textwrap.dedent(
    """
    import sys, tempfile
    import torch
    from huggingface_hub import CommitOperationAdd, HfApi
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel

    repo = "alice/tiny-bert"
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    model = BertModel(config)
    api = HfApi()  # endpoint and token from HF_ENDPOINT / HF_TOKEN
    api.create_repo(repo)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        commit = api.upload_folder(repo_id=repo, folder_path=folder)
    api.create_commit(repo, [CommitOperationAdd("config.json", config.to_json_string().replace(
        '"hidden_act": "gelu"', '"hidden_act": "relu"').encode())], commit_message="relu", create_pr=True)

    assert AutoConfig.from_pretrained(repo).hidden_size == 16
    assert AutoConfig.from_pretrained(repo, revision="refs/pr/1").hidden_act == "relu"
    loaded = AutoModel.from_pretrained(repo, revision=commit.oid)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    print("loaded", type(loaded).__name__)
    """
)


def test_transformers_from_pretrained_through_hf_endpoint(tmp_path: Path) -> None:
    with LocalHub(tmp_path / "hub") as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.endpoint,
            "HF_TOKEN": hub.add_token("alice"),
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
        result = subprocess.run(
            [sys.executable, "-c", TRANSFORMERS_SCRIPT], env=env, capture_output=True, text=True, timeout=240
        )
        assert result.returncode == 0, result.stderr[-4000:]
        assert "loaded BertModel" in result.stdout
        resolves = [r for r in hub.requests() if "/resolve/" in r["path"] and r["method"] == "GET"]
        assert any(r["path"].endswith("/model.safetensors") for r in resolves)
