"""Targeted mode against the local hub: headers and touched tensors by range, verdicts as full mode.

Every check runs as a user runs it (`hubfuse check ORG/MODEL`, a subprocess with HF_ENDPOINT),
against tiny repos served over real HTTP; `bench/architectures.py --modes` runs the whole matrix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_env import hubfuse_env, run_hubfuse
from huggingface_hub import HfApi, HfFileSystem

from hubfuse.check import transformers_fusion
from hubfuse.check.modes import CheckRequest
from hubfuse.check.verify import open_source, verify
from hubfuse.hub import Hub
from hubfuse.localhub import LocalHub
from hubfuse.source import open_remote

# safe, not_applicable (a Conv3d the family does not match), and qwen2_5_vl with its legacy `visual.*`
# names: its fused patch embedding stays random under global registration (5.13-5.24), and loads
# exactly on the init-context generation (5.25 on).
QWEN2_5_VL = "unsafe" if transformers_fusion.registration_is_sticky() else "safe"
REPRESENTATIVES = {"qwen3_vl": "safe", "qwen2_5_vl": QWEN2_5_VL, "vivit": "not_applicable"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        server.alice = server.add_token("alice", role="write", orgs=["org"])
        server.bob = server.add_token("bob", role="write")
        yield server


def _seed(hub: LocalHub, repo_id: str, folder: Path, token: str, private: bool = False) -> str:
    api = HfApi(endpoint=hub.endpoint, token=token)
    api.create_repo(repo_id, exist_ok=True, private=private)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="seed")
    return api.repo_info(repo_id).sha


def _check(hub: LocalHub, source: str, mode: str) -> dict:
    """In this process, sharing its forkserver: the CLI is exercised once, below."""
    report = verify(
        open_source(source, lambda: Hub(hub.endpoint, hub.alice)),
        CheckRequest(families=["patch_embeddings"], mode=mode),
    )
    return report.to_dict()


def test_check_cli_refuses_a_missing_repo_in_one_line(hub, tmp_path):
    # The CLI's success path on a Hub repo runs in the variant test below (publish --mode targeted).
    env = hubfuse_env(hub.endpoint, tmp_path, hub.alice)
    missing = run_hubfuse("check", "org/no-such-repo", "--mode", "targeted", "--json", env=env)
    assert missing.returncode == 2 and "not found" in missing.stderr and "Traceback" not in missing.stderr
    assert missing.stdout == ""


@pytest.mark.parametrize(("model_type", "expected"), REPRESENTATIVES.items())
def test_targeted_verdict_equals_full(hub, checkpoints, tmp_path, model_type, expected):
    folder = checkpoints(model_type, dtype="bfloat16", sharded=True)
    repo_id = f"org/{model_type}-targeted"
    _seed(hub, repo_id, folder, hub.alice)
    before = len(hub.requests())

    targeted = _check(hub, repo_id, "targeted")
    full = _check(hub, str(folder), "full")

    assert (targeted["mode"], full["mode"]) == ("targeted", "full")
    assert targeted["verdict"] == full["verdict"] == expected
    (family,) = targeted["families"]
    assert [p["point"] for p in family["proofs"]] == [
        "discovery",
        "fused_load",
        "weights_arrive",
        "resave",
        "downstream",
        "fused_layout",
    ]
    if expected == "safe":
        assert all(p["holds"] is True for p in family["proofs"]), family["proofs"]
        assert "real bytes" in family["proofs"][2]["tensors"]
        assert family["downstream"]["weights_match"] and family["roundtrip"]["tensors_bit_exact"]
    elif expected == "unsafe":
        # Legacy names: the whole-model load report on meta tensors shows what a fused load loses.
        assert family["proofs"][1]["holds"] is False
        assert "missing model.visual.patch_embed.linear_proj.weight" in family["reasons"][0]
    else:
        assert family["proofs"][0]["holds"] is True and family["reasons"]
    # Targeted mode never downloads a weight file whole: every weight GET was a range request.
    weight_gets = [
        r for r in hub.requests()[before:] if r["method"] == "GET" and r["path"].endswith(".safetensors")
    ]
    assert weight_gets and all(r["status"] == 206 for r in weight_gets)


def test_range_reads_through_the_real_client(hub, checkpoints, tmp_path):
    folder = checkpoints("qwen3_vl", dtype="bfloat16", sharded=True)
    sha = _seed(hub, "org/ranges", folder, hub.alice)
    shard = sorted(folder.glob("*.safetensors"))[-1]
    data = shard.read_bytes()

    fs = HfFileSystem(endpoint=hub.endpoint, token=hub.alice)
    with fs.open(f"org/ranges@{sha}/{shard.name}", "rb", block_size=64) as handle:
        handle.seek(100)
        assert handle.read(50) == data[100:150]

    source = open_remote(Hub(hub.endpoint, hub.alice), "org/ranges", None)
    assert source.sha == sha
    tensors = source.tensors()
    name, (file_name, location) = next(iter(sorted(tensors.items())))
    assert source.tensor_bytes(name) == (folder / file_name).read_bytes()[location.start : location.end]
    # Headers cost at most 100 kB per file (as huggingface_hub's own reader), a tensor its bytes.
    files = source.weight_files()
    assert source.bytes_read <= sum(min(f.size, 100_000) for f in files) + 10_000 + location.nbytes


def test_lfs_objects_belong_to_repos(hub, checkpoints, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # Classic LFS, where one object is one upload (through Xet, a repo's upload deduplicates
    # against chunks the client already sent anywhere, as on the Hub).
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    folder = checkpoints("qwen3_vl")
    _seed(hub, "org/owned-source", folder, hub.alice)
    before = len(hub.requests())
    _seed(hub, "org/owned-copy", folder, hub.alice)
    puts = [r for r in hub.requests()[before:] if r["method"] == "PUT"]
    assert puts, "another repo's object was linked without an upload: the Hub never does that"
    copy = HfApi(endpoint=hub.endpoint, token=hub.alice).hf_hub_download(
        "org/owned-copy", "model.safetensors"
    )
    assert Path(copy).read_bytes() == (folder / "model.safetensors").read_bytes()


VARIANT_LOAD = """
import json, sys
import torch, transformers
from safetensors import safe_open
from hubfuse.check.transformers_fusion import is_fused
variant, source = sys.argv[1], sys.argv[2]
model = transformers.AutoModelForImageTextToText.from_pretrained(variant)
state = model.state_dict()
index = json.load(open(source + "/model.safetensors.index.json"))["weight_map"]
def tensor(name):
    with safe_open(source + "/" + index[name], "pt") as f:
        return f.get_tensor(name)
conv = tensor("model.visual.patch_embed.proj.weight")
fused = state["model.visual.patch_embed.linear_proj.weight"]
other = "model.language_model.layers.0.mlp.up_proj.weight"
print(json.dumps({
    "fused": is_fused(model.model.visual.patch_embed),
    "fused_exact": torch.equal(fused, conv.reshape(conv.shape[0], -1)),
    "other_exact": torch.equal(state[other], tensor(other)),
}))
"""


def test_targeted_variant_rewrites_only_the_touched_shard(hub, checkpoints, tmp_path):
    import subprocess
    import sys

    folder = checkpoints("qwen3_vl", dtype="bfloat16", sharded=True)
    _seed(hub, "org/shards", folder, hub.alice)
    before = len(hub.requests())
    # Classic LFS, so that each uploaded file is one PUT to count (Xet would deduplicate the
    # rewritten shards' unchanged tensors against the source's chunks).
    env = hubfuse_env(hub.endpoint, tmp_path, hub.alice, HF_HUB_DISABLE_XET="1")
    done = run_hubfuse("publish", "org/shards", "--variant", "--mode", "targeted", "--json", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["check"]["mode"] == "targeted" and report["verdict"] == "safe"
    assert report["check"]["source"] == "org/shards"
    assert all(p["holds"] for p in report["check"]["families"][0]["proofs"])
    moved = report["variant_transfer"]
    total = len(list(folder.glob("*.safetensors")))
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    touched = {shard for name, shard in weight_map.items() if ".patch_embed.proj." in name}
    untouched = {p.name for p in folder.glob("*.safetensors")} - touched
    assert moved["shards"] == total and moved["rewritten"] == len(touched) < total
    assert moved["files_copied"] == len(untouched) and moved["files_streamed"] == 0
    assert moved["bytes_copied"] == sum((folder / name).stat().st_size for name in untouched)
    assert moved["bytes_streamed"] == 0 and not moved["copy_refused"]
    uploads = [r for r in hub.requests()[before:] if r["method"] == "PUT"]
    assert len(uploads) == len(touched), "only the shards holding the patch embedding are uploaded"
    duplicates = [r for r in hub.requests()[before:] if r["path"].endswith("/lfs-files/duplicate")]
    assert [r["status"] for r in duplicates] == [200]

    api = HfApi(endpoint=hub.endpoint, token=hub.alice)
    variant = api.snapshot_download("org/shards-fused", cache_dir=str(tmp_path / "dl"))
    loaded = subprocess.run(
        [sys.executable, "-c", VARIANT_LOAD, variant, str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == {
        "fused": True,
        "fused_exact": True,
        "other_exact": True,
    }


def test_a_refused_copy_falls_back_to_streaming(hub, checkpoints, tmp_path):
    folder = checkpoints("qwen3_vl", dtype="bfloat16", sharded=True)
    _seed(hub, "org/refused", folder, hub.alice)
    # The Hub refuses cross-region copies; here the duplicate call answers an error, for real.
    hub.add_faults({"method": "POST", "path": "/lfs-files/duplicate$", "action": 403, "times": None})
    before = len(hub.requests())
    env = hubfuse_env(hub.endpoint, tmp_path, hub.alice, HF_HUB_DISABLE_XET="1")  # one PUT a file, as above
    try:
        done = run_hubfuse("publish", "org/refused", "--variant", "--mode", "targeted", "--json", env=env)
    finally:
        hub.clear_faults()
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    moved = report["variant_transfer"]
    weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    touched = {shard for name, shard in weight_map.items() if ".patch_embed.proj." in name}
    untouched = sorted({p.name for p in folder.glob("*.safetensors")} - touched)
    assert moved["files_copied"] == 0 and moved["bytes_copied"] == 0
    assert moved["files_streamed"] == len(untouched) > 0
    assert moved["bytes_streamed"] == sum((folder / name).stat().st_size for name in untouched)
    assert any("refused the server-side copy" in why for why in moved["copy_refused"])
    assert f"{len(untouched)} streamed, {moved['bytes_streamed']} B" in report["actions"][-1]["detail"]
    uploads = [r for r in hub.requests()[before:] if r["method"] == "PUT"]
    assert len(uploads) == len(touched) + len(untouched), "the rewritten shards and the streamed ones"
    api = HfApi(endpoint=hub.endpoint, token=hub.alice)
    for name in untouched:
        path = api.hf_hub_download("org/refused-fused", name, cache_dir=str(tmp_path / "dl"))
        assert Path(path).read_bytes() == (folder / name).read_bytes()


def test_auto_picks_full_only_with_room_to_spare():
    from hubfuse.check.modes import Machine, choose_mode

    runner = Machine(memory_bytes=6 * 10**9, disk_bytes=14 * 10**9)
    assert choose_mode("auto", 3 * 10**9, remote=True, machine=runner) == "full"
    assert choose_mode("auto", 5 * 10**9, remote=True, machine=runner) == "targeted"  # disk: 3x
    assert choose_mode("auto", 5 * 10**9, remote=False, machine=runner) == "targeted"  # memory: 1.5x
    assert choose_mode("full", 470 * 10**9, remote=True, machine=runner) == "full"
