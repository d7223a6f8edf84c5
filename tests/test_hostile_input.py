"""Hostile checkpoints and arguments, as a user meets them: `hubfuse` subprocesses, the local hub.

Each refusal is exit 2 with one line, decided from the JSON and headers alone, in well under a
second of CPU (the subprocess's own start-up included in the bound). Nothing hubfuse did not
validate is ever loaded or republished.
"""

from __future__ import annotations

import json
import resource
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_env import assert_one_line_error, hubfuse_env, run_hubfuse
from huggingface_hub import HfApi

from hubfuse.errors import CheckpointError
from hubfuse.localhub import LocalHub
from hubfuse.safetensors_header import MAX_CHECKPOINT_HEADER_BYTES, HeaderBudget, read_header

TESTS = Path(__file__).resolve().parent
# A pickle that runs `touch` if anything unpickles it without weights_only (and that torch.load
# with weights_only refuses, failing the load).
POISON = "cos\nsystem\n(S'touch {marker}'\ntR."
# The subprocess imports hubfuse's CLI (no torch) and refuses: the bound covers both with room for
# a loaded machine. The old header path took 143 s for the 4.8 MB header below.
REFUSAL_CPU_S = 3.0


def cpu_seconds_of(run: Callable[[], object]) -> tuple[object, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def check(folder: Path, *args: str, **env: str):
    return run_hubfuse(
        "check", str(folder), *args, env=hubfuse_env("http://127.0.0.1:9", folder.parent, None, **env)
    )


@pytest.fixture()
def model(checkpoints, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(checkpoints("qwen3_vl"), target)
    return target


def write_safetensors(path: Path, header: bytes, data: bytes = b"\0" * 8) -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def edit_json(path: Path, **changes: object) -> None:
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


def to_sharded(folder: Path, index: str) -> None:
    """The single-file checkpoint as one shard, with `index` as its shard index's text."""
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    (folder / "model.safetensors.index.json").write_text(index)


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def huge_dims_header(dims: list[str]) -> bytes:
    return ('{"a":{"dtype":"F32","shape":[' + ",".join(dims) + '],"data_offsets":[0,8]}}').encode()


# name -> (damage the copy, words the one error line holds)
HOSTILE: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "config nested 100k deep": (
        lambda m: (m / "config.json").write_text('{"model_type": "qwen3_vl", "x": ' + deep(100_000) + "}"),
        ("config.json", "nests 100001 levels deep"),
    ),
    "config integer of 5000 digits": (
        lambda m: (m / "config.json").write_text('{"model_type": "qwen3_vl", "x": ' + "9" * 5000 + "}"),
        ("config.json", "5000-character number"),
    ),
    "index nested 100k deep": (
        lambda m: to_sharded(m, '{"weight_map": ' + deep(100_000) + "}"),
        ("model.safetensors.index.json", "nests"),
    ),
    "index with an empty weight_map": (
        lambda m: to_sharded(m, '{"metadata": {}, "weight_map": {}}'),
        ("model.safetensors.index.json", "weight_map is empty"),
    ),
    "index naming a shard no filesystem can hold": (
        lambda m: to_sharded(m, json.dumps({"weight_map": {"a": "x" * 5000 + ".safetensors"}})),
        ("model.safetensors.index.json", "not a possible file name"),
    ),
    "header nested 100k deep": (
        lambda m: write_safetensors(m / "model.safetensors", ('{"a": ' + deep(100_000) + "}").encode()),
        ("model.safetensors", "nests"),
    ),
    # 4.8 MB of shape: before, a quadratic product of 4299-digit integers (143 s), then exit 1.
    "header with 4.8 MB of 4299-digit dimensions": (
        lambda m: write_safetensors(m / "model.safetensors", huge_dims_header(["9" * 4299] * 1120)),
        ("model.safetensors", "4299-character number"),
    ),
    # Digits within every limit, yet the product of 230k dimensions grew quadratically.
    "header with 230k dimensions of 2**63": (
        lambda m: write_safetensors(m / "model.safetensors", huge_dims_header([str(2**63)] * 230_000)),
        ("model.safetensors", "more elements than 64 bits can count"),
    ),
    "header dimension 2**70": (
        lambda m: write_safetensors(m / "model.safetensors", huge_dims_header([str(2**70)])),
        ("model.safetensors", "64-bit integers"),
    ),
    "header offset 2**70": (
        lambda m: write_safetensors(
            m / "model.safetensors",
            f'{{"a":{{"dtype":"U8","shape":[8],"data_offsets":[0,{2**70}]}}}}'.encode(),
        ),
        ("model.safetensors", "64-bit integers"),
    ),
    "tokenizer_config.json with auto_map": (
        lambda m: (m / "tokenizer_config.json").write_text(
            json.dumps({"auto_map": {"AutoTokenizer": ["tokenizer_x.XTokenizer", None]}})
        ),
        ("tokenizer_config.json declares custom code (auto_map)", "--trust-remote-code"),
    ),
    "processor_config.json with a nested auto_map": (
        lambda m: (m / "processor_config.json").write_text(
            json.dumps({"image_processor": {"auto_map": {"AutoImageProcessor": "proc.P"}}})
        ),
        ("processor_config.json declares custom code", "--trust-remote-code"),
    ),
    "tokenizer.json nested 100k deep": (
        lambda m: (m / "tokenizer.json").write_text(deep(100_000)),
        ("tokenizer.json", "nests"),
    ),
    "config.json pointing transformers at other weights": (
        lambda m: (
            shutil.copyfile(m / "model.safetensors", m / "other.safetensors"),
            edit_json(m / "config.json", transformers_weights="other.safetensors"),
        ),
        ("transformers_weights", "other.safetensors"),
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_checkpoint_is_refused_in_one_line_fast(model: Path, case: str) -> None:
    damage, needles = HOSTILE[case]
    damage(model)
    result, cpu = cpu_seconds_of(lambda: check(model))
    assert_one_line_error(result, 2, *needles)
    assert cpu < REFUSAL_CPU_S, f"{case}: {cpu:.1f} s of CPU"


def test_pickle_beside_unrecognised_safetensors_is_never_loaded(model: Path, tmp_path: Path) -> None:
    """transformers loads `pytorch_model.bin` when no safetensors file has a name it knows.

    Before, hubfuse validated `weights.safetensors` while every load unpickled the .bin.
    """
    marker = tmp_path / "UNPICKLED"
    (model / "model.safetensors").rename(model / "weights.safetensors")
    (model / "pytorch_model.bin").write_text(POISON.format(marker=marker))
    assert_one_line_error(check(model), 2, "no model.safetensors", "weights.safetensors")
    assert not marker.exists()


def test_registered_family_hubfuse_cannot_verify(model: Path, tmp_path: Path) -> None:
    """transformers registers a second family: the default checks what hubfuse can verify and
    names the rest as skipped. The folder also holds a poisoned pickle that no load may touch."""
    marker = tmp_path / "UNPICKLED"
    (model / "pytorch_model.bin").write_text(POISON.format(marker=marker))
    plugin = {"HUBFUSE_WORKER_PRELOAD": "extra_family", "PYTHONPATH": str(TESTS)}
    result = check(model, "--json", **plugin)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [(f["name"], f["verdict"]) for f in report["families"]] == [("patch_embeddings", "safe")]
    assert list(report["skipped_families"]) == ["extra_family"]
    assert "cannot verify" in report["skipped_families"]["extra_family"]
    assert not marker.exists()

    assert_one_line_error(check(model, "--family", "extra_family", **plugin), 2, "'extra_family'")


def test_unknown_family_is_refused_before_any_download(tmp_path: Path) -> None:
    # Nothing listens on port 9: a single Hub call would end as exit 6, not 2.
    env = hubfuse_env("http://127.0.0.1:9", tmp_path, "hf_unused")
    result = run_hubfuse("publish", "org/model", "--family", "nonsense", "--dry-run", env=env)
    assert_one_line_error(result, 2, "unknown fusion family 'nonsense'")

    spec = tmp_path / "spec.yml"
    spec.write_text("repos: {ids: [org/model]}\nfamilies:\n  - patch_embeddings\n  - nonsense\n")
    assert_one_line_error(run_hubfuse("validate", str(spec), env=env), 2, "spec.yml:4", "'nonsense'")
    assert_one_line_error(run_hubfuse("run", str(spec), "--dry-run", env=env), 2, "'nonsense'")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        server.alice = server.add_token("alice", role="write")
        yield server


def test_variant_never_republishes_custom_code(hub, checkpoints, tmp_path: Path) -> None:
    """A tokenizer_config.json's auto_map is refused like config.json's; trusted, the code stays home."""
    folder = tmp_path / "repo"
    shutil.copytree(checkpoints("qwen3_vl"), folder)
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["tokenizer_x.XTokenizer", None]}})
    )
    (folder / "tokenizer_x.py").write_text("raise SystemExit('custom tokenizer code ran')\n")
    api = HfApi(endpoint=hub.endpoint, token=hub.alice)
    api.create_repo("alice/custom-tok")
    api.upload_folder(repo_id="alice/custom-tok", folder_path=str(folder))
    env = hubfuse_env(hub.endpoint, tmp_path, hub.alice)

    refused = run_hubfuse("publish", "alice/custom-tok", "--variant", "--dry-run", env=env)
    assert_one_line_error(refused, 2, "tokenizer_config.json declares custom code (auto_map)")
    assert not api.repo_exists("alice/custom-tok-fused")

    trusted = run_hubfuse("publish", "alice/custom-tok", "--variant", "--trust-remote-code", env=env)
    assert trusted.returncode == 0, trusted.stderr
    files = set(api.list_repo_files("alice/custom-tok-fused"))
    assert "tokenizer_config.json" in files and "model.safetensors" in files
    assert not [name for name in files if name.endswith(".py")]


# Hostile repos on the Hub, read in both modes: full mode downloads them, targeted mode reads the
# listing, the index and the headers by range. Both refuse alike, in one line, before any
# worker starts (the marker a worker's preload leaves never appears).


def _seed(hub, name: str, folder: Path) -> str:
    api = HfApi(endpoint=hub.endpoint, token=hub.alice)
    api.create_repo(f"alice/{name}")
    api.upload_folder(repo_id=f"alice/{name}", folder_path=str(folder))
    return f"alice/{name}"


def _hostile_repo(hub, checkpoints, tmp_path: Path, name: str, damage: Callable[[Path], None]) -> str:
    folder = tmp_path / name
    shutil.copytree(checkpoints("qwen3_vl"), folder)
    damage(folder)
    return _seed(hub, name, folder)


def check_remote(hub, repo_id: str, mode: str, tmp_path: Path, *args: str):
    marker = tmp_path / f"worker-started-{mode}"
    env = hubfuse_env(
        hub.endpoint,
        tmp_path / mode,
        hub.alice,
        HUBFUSE_WORKER_PRELOAD="worker_marker",
        WORKER_MARKER=str(marker),
        PYTHONPATH=str(TESTS),
    )
    result = run_hubfuse("check", repo_id, "--mode", mode, *args, env=env, timeout=120)
    assert not marker.exists(), f"{mode}: a worker started before the refusal"
    return result


def claim_layers(folder: Path, layers: int) -> None:
    config = json.loads((folder / "config.json").read_text())
    assert config["text_config"]["num_hidden_layers"] == 2  # what the headers hold
    config["text_config"]["num_hidden_layers"] = layers
    (folder / "config.json").write_text(json.dumps(config))


# name -> (damage the copy, words the one error line holds); the reproductions.
HOSTILE_REPOS: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    # Before: plain json.loads, RecursionError, "internal error", exit 1.
    "index nested 200k deep": (
        lambda m: to_sharded(m, '{"weight_map": ' + deep(200_000) + "}"),
        ("model.safetensors.index.json", "nests 200001 levels deep"),
    ),
    # Before: targeted mode checked legacy.safetensors' neighbour and said safe; the variant
    # it published raised OSError in from_pretrained.
    "transformers_weights naming another file": (
        lambda m: (
            shutil.copyfile(m / "model.safetensors", m / "legacy.safetensors"),
            edit_json(m / "config.json", transformers_weights="legacy.safetensors"),
        ),
        ("transformers_weights names 'legacy.safetensors'", "not model.safetensors"),
    ),
    "only weights.safetensors": (
        lambda m: (m / "model.safetensors").rename(m / "weights.safetensors"),
        ("no model.safetensors or model.safetensors.index.json", "weights.safetensors"),
    ),
    # Before: the key-set worker built a 20,000-layer meta model for 240.9 s.
    "2 layers stored, 20,000 claimed": (
        lambda m: claim_layers(m, 20_000),
        ("text_config.num_hidden_layers is 20000", "holds more than 2"),
    ),
}


@pytest.mark.parametrize("case", HOSTILE_REPOS)
def test_hostile_repo_is_refused_alike_in_both_modes(hub, checkpoints, tmp_path: Path, case: str) -> None:
    damage, needles = HOSTILE_REPOS[case]
    repo_id = _hostile_repo(hub, checkpoints, tmp_path, case.replace(" ", "-").replace(",", ""), damage)
    for mode in ("targeted", "full"):
        assert_one_line_error(check_remote(hub, repo_id, mode, tmp_path), 2, *needles)


@pytest.mark.parametrize("case", ["transformers_weights naming another file", "only weights.safetensors"])
def test_targeted_publish_of_unloadable_weights_writes_nothing(
    hub, checkpoints, tmp_path: Path, case: str
) -> None:
    damage, needles = HOSTILE_REPOS[case]
    repo_id = _hostile_repo(hub, checkpoints, tmp_path, "publish-" + case.replace(" ", "-"), damage)
    before = len(hub.requests())
    env = hubfuse_env(hub.endpoint, tmp_path, hub.alice)
    result = run_hubfuse("publish", repo_id, "--variant", "--mode", "targeted", env=env, timeout=120)
    assert_one_line_error(result, 2, *needles)
    api = HfApi(endpoint=hub.endpoint, token=hub.alice)
    assert not api.repo_exists(f"{repo_id}-fused")
    assert not list(api.get_repo_discussions(repo_id))
    assert {r["method"] for r in hub.requests()[before:]} <= {"GET", "HEAD"}


def _pad_json(path: Path, document: dict, total_bytes: int) -> None:
    """`document` as JSON of `total_bytes` bytes: a valid document, the rest of it one string."""
    text = json.dumps({**document, "pad": ""})
    path.write_text(text[:-2] + " " * (total_bytes - len(text)) + '"}')


OVERSIZED_JSON: dict[str, tuple[Callable[[Path], None], str]] = {
    # Before: read whole (at 150 MiB: 505 MB RSS) and, in targeted mode, a safe verdict where full
    # mode refused. Just over the limit reproduces it, at less than half the upload.
    "65 MiB shard index": (
        lambda m: (
            (m / "model.safetensors").rename(m / "model-00001-of-00001.safetensors"),
            _pad_json(
                m / "model.safetensors.index.json",
                {"weight_map": {"x": "model-00001-of-00001.safetensors"}},
                65 << 20,
            ),
        ),
        "model.safetensors.index.json",
    ),
    # Before: config.json was downloaded whole before its 64 MiB check.
    "65 MiB config.json": (
        lambda m: _pad_json(m / "config.json", json.loads((m / "config.json").read_text()), 65 << 20),
        "config.json",
    ),
}


@pytest.mark.parametrize("case", OVERSIZED_JSON)
def test_oversized_json_is_refused_from_the_listing(hub, checkpoints, tmp_path: Path, case: str) -> None:
    damage, file_name = OVERSIZED_JSON[case]
    repo_id = _hostile_repo(hub, checkpoints, tmp_path, case.replace(" ", "-"), damage)
    publish_env = hubfuse_env(hub.endpoint, tmp_path / "publish", hub.alice)
    runs = {
        "check, targeted": lambda: check_remote(hub, repo_id, "targeted", tmp_path),
        "check, full": lambda: check_remote(hub, repo_id, "full", tmp_path),
        # publish pulls what it needs itself
        "publish, full": lambda: run_hubfuse(
            "publish", repo_id, "--mode", "full", env=publish_env, timeout=120
        ),
    }
    for name, run in runs.items():
        before = len(hub.requests())
        assert_one_line_error(run(), 2, f"{repo_id}@", f"/{file_name}: is ", "67108864-byte limit")
        requests = hub.requests()[before:]
        assert not [r for r in requests if r["path"].endswith(f"/{file_name}")], (
            f"{name}: {file_name} was fetched"
        )
        assert {r["method"] for r in requests} <= {"GET", "HEAD"}, name


def headers_over_budget(folder: Path) -> None:
    """Three shards of one tensor each, every header padded (as safetensors allows) to 35 MB:
    each within safetensors' 100 MB, 105 MB together, over the checkpoint's budget."""
    (folder / "model.safetensors").unlink()
    weight_map = {}
    for i in range(3):
        shard = f"model-0000{i + 1}-of-00003.safetensors"
        header = json.dumps({f"t{i}": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}}).encode()
        write_safetensors(folder / shard, header.ljust(MAX_CHECKPOINT_HEADER_BYTES * 35 // 100))
        weight_map[f"t{i}"] = shard
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


BUDGET_WORDS = ("safetensors headers hold more than 100000000 bytes together", "model-00003-of-00003")


def test_header_bytes_are_budgeted_per_checkpoint(model: Path, tmp_path: Path) -> None:
    """Before, each header was bounded alone, and every parsed header was kept (~1.4 GB of
    memory per 100 MB header): the third shard is refused from its length prefix, unread."""
    headers_over_budget(model)
    assert_one_line_error(check(model), 2, *BUDGET_WORDS)


def test_header_bytes_are_budgeted_per_repo_in_targeted_mode(hub, checkpoints, tmp_path: Path) -> None:
    repo_id = _hostile_repo(hub, checkpoints, tmp_path, "headers-over-budget", headers_over_budget)
    before = len(hub.requests())
    assert_one_line_error(check_remote(hub, repo_id, "targeted", tmp_path), 2, repo_id, *BUDGET_WORDS)
    third = [r for r in hub.requests()[before:] if r["path"].endswith("model-00003-of-00003.safetensors")]
    assert sum(r["bytes_sent"] for r in third) <= 100_000, "the third header was read past its prefix"


def test_tensor_count_is_budgeted_across_shards(checkpoints) -> None:
    folder = checkpoints("qwen3_vl", sharded=True)
    shards = sorted(folder.glob("*.safetensors"))
    counts = [len(read_header(shard).tensors) for shard in shards]
    budget = HeaderBudget(str(folder), max_tensors=sum(counts) - 1)
    for shard in shards[:-1]:
        budget.tensors_of(read_header(shard, budget=budget))
    with pytest.raises(CheckpointError, match=f"more than {sum(counts) - 1} tensors together"):
        budget.tensors_of(read_header(shards[-1], budget=budget))
