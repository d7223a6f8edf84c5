"""Downstream cells shared by proven case (hubfuse/check/cell_case.py, cell_store.py, shared_cells.py).

The negative cases are key computations on real tiny checkpoints, each differing from the
reference in exactly one field; the positive case goes through `hubfuse run` over the local hub
with a one-release matrix: the second repo of the same case runs no probe, its PR names the
first repo and commit, and a fresh runner (empty caches) finds the cell beside the ledger. That
run also shows the matrix progress on stderr (in Actions' folds) with stdout one JSON document.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from cli_env import hubfuse_env, run_hubfuse
from huggingface_hub import HfApi

from hubfuse.check.cell_case import CellCase, case_for, key_name_modulo_layer
from hubfuse.check.cell_store import CellStore, StoredCell
from hubfuse.check.families import PLUGINS
from hubfuse.check.shared_cells import CELLS_FILE, HubCells
from hubfuse.check.verify import open_checked
from hubfuse.checkpoint_compare import index_checkpoint
from hubfuse.hub import Hub
from hubfuse.localhub import LocalHub
from hubfuse.testing import synth

FAMILY = "patch_embeddings"
MODEL_TYPE = "qwen3_vl"


def _case(folder: Path) -> CellCase | None:
    # The check names the fused module (the patch embed); synth names its Conv3d (`.proj`).
    fused = [path.rsplit(".", 1)[0] for path in synth.conv3d_architecture(MODEL_TYPE).fusable_paths]
    return case_for(open_checked(folder), FAMILY, fused, index_checkpoint(folder))


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _rewrite_tensors(folder: Path, change) -> None:
    import safetensors.torch

    path = folder / "model.safetensors"
    tensors = dict(safetensors.torch.load_file(path))
    change(tensors)
    safetensors.torch.save_file(tensors, path, metadata={"format": "pt"})


def _touched(tensors) -> str:
    return next(name for name in tensors if name.endswith("patch_embed.proj.weight"))


def _edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def _other_class(folder: Path) -> None:
    _edit_config(folder, lambda c: c.update(architectures=["Qwen3VLModel"]))


def _renamed_key(folder: Path) -> None:
    def rename(tensors):
        name = next(n for n in sorted(tensors) if "patch_embed" not in n)
        tensors[name + "_renamed"] = tensors.pop(name)

    _rewrite_tensors(folder, rename)


def _touched_shape(folder: Path) -> None:
    import torch

    def widen(tensors):
        name = _touched(tensors)
        tensors[name] = torch.cat([tensors[name], tensors[name][:1]])

    _rewrite_tensors(folder, widen)


def _touched_dtype(folder: Path) -> None:
    import torch

    def cast(tensors):
        name = _touched(tensors)
        tensors[name] = tensors[name].to(torch.bfloat16)

    _rewrite_tensors(folder, cast)


def _config_field(field: str):
    def change(folder: Path) -> None:
        def bump(config):
            section = config.get(PLUGINS[FAMILY].config_section) or config
            value = section.get(field, 1)
            section[field] = value + 1 if isinstance(value, int) else 7

        _edit_config(folder, bump)

    return change


ONE_FIELD_CHANGES = {
    "model class": _other_class,
    "a key name": _renamed_key,
    "a touched tensor's shape": _touched_shape,
    "a touched tensor's dtype": _touched_dtype,
    # Every config field the family definition says it reads, none listed here.
    **{f"config field {field}": _config_field(field) for field in PLUGINS[FAMILY].config_fields},
}


@pytest.fixture(scope="module")
def reference(checkpoints) -> Path:
    return checkpoints(MODEL_TYPE)


def test_the_same_case_has_the_same_key(reference, tmp_path):
    case = _case(reference)
    assert case is not None
    # Other weights (another seed) in another folder: the same case, the same digest.
    other = tmp_path / "other-seed"
    import torch

    synth.make_tiny_checkpoint(MODEL_TYPE, other, dtype=torch.float32, seed=7)
    assert _case(other) == case and _case(other).digest == case.digest
    assert any("#" in name for name in case.case["key_names"])  # layer indices folded
    assert key_name_modulo_layer("model.layers.12.mlp.0.weight") == "model.layers.#.mlp.#.weight"
    touched = case.case["touched_tensors"]
    assert touched and all(name.endswith(("proj.weight", "proj.bias")) for name in touched)
    fields = case.case["config_fields"][PLUGINS[FAMILY].config_section]
    assert set(fields) == set(PLUGINS[FAMILY].config_fields)
    # Remote code: the class is the repo's own, nothing can be shown to be the same.
    remote = open_checked(reference)
    from dataclasses import replace

    assert case_for(replace(remote, trust_remote_code=True), FAMILY, ["x.patch_embed"], {}) is None


@pytest.mark.parametrize("change", list(ONE_FIELD_CHANGES), ids=list(ONE_FIELD_CHANGES))
def test_one_field_apart_never_shares_a_cell(reference, tmp_path, change):
    changed = _copy(reference, tmp_path / "changed")
    ONE_FIELD_CHANGES[change](changed)
    before, after = _case(reference), _case(changed)
    assert before is not None and after is not None
    assert after.digest != before.digest
    # And the store, given the other case, finds nothing proven on the reference.
    store = CellStore(tmp_path / "cells")
    key = {"release": "5.24.0", "column": "base", "case": before.digest, "probe": "p"}
    store.put(
        StoredCell(key, before.case, {"config": {"outcome": "safe", "reason": "", "notes": []}}, "a", "1")
    )
    assert CellStore(tmp_path / "cells").get(key, before) is not None
    assert CellStore(tmp_path / "cells").get({**key, "case": after.digest}, after) is None


def test_error_is_never_stored_and_a_forged_cell_is_not_read(reference, tmp_path):
    case = _case(reference)
    key = {"release": "5.24.0", "column": "base", "case": case.digest, "probe": "p"}
    store = CellStore(tmp_path)
    store.put(
        StoredCell(key, case.case, {"config": {"outcome": "error", "reason": "oom", "notes": []}}, "a", "1")
    )
    assert not list(tmp_path.glob("*.json"))
    # A cell whose case is not the case (edited on disk) is not a cell.
    store.put(
        StoredCell(key, case.case, {"config": {"outcome": "safe", "reason": "", "notes": []}}, "a", "1")
    )
    (written,) = tmp_path.glob("*.json")
    document = json.loads(written.read_text())
    document["case"]["model_type"] = "other"
    written.write_text(json.dumps(document))
    assert CellStore(tmp_path).get(key, case) is None


# -- end to end: hubfuse run over repos of one case ------------------------------------------------

ORG = "cells"
LEDGER = f"{ORG}/hubfuse-ledger"
RELEASE = "5.24.0"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, checkpoints):
    import torch

    root = tmp_path_factory.mktemp("cell-repos")
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        server.token = server.add_token("bot", role="write", orgs=[ORG])
        server.mallory = server.add_token("mallory", role="write", orgs=[ORG])
        api = HfApi(endpoint=server.endpoint, token=server.token)
        for name, seed in [("a", 1), ("b", 2)]:
            folder = root / name
            synth.make_tiny_checkpoint(MODEL_TYPE, folder, dtype=torch.float32, seed=seed)
            api.create_repo(f"{ORG}/{name}")
            api.upload_folder(repo_id=f"{ORG}/{name}", folder_path=str(folder))
        yield server


def _run(hub, home: Path, repos: list[str], **extra: str):
    spec = home / "spec.yml"
    home.mkdir(parents=True, exist_ok=True)
    spec.write_text(
        f"name: cells\nrepos: {{ids: [{', '.join(repos)}]}}\nledger: {{repo: {LEDGER}}}\n"
        f"downstream_versions: '=={RELEASE}'\nvariant: {{enabled: false}}\n"
    )
    env = hubfuse_env(
        hub.endpoint,
        home,
        hub.token,
        HUBFUSE_RETRIES="2",
        HUBFUSE_CELL_CACHE=str(home / "cells"),
        HUBFUSE_DOWNSTREAM_VERSIONS=f"=={RELEASE}",
        **extra,
    )
    result = run_hubfuse("run", str(spec), "--json", "--ledger-dir", str(home / "ledgers"), env=env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # progress went to stderr: stdout is one JSON document
    assert {r["repo_id"]: r["outcome"] for r in summary["repos"]} == {r: "published" for r in repos}
    return result


def _pr_text(hub, repo: str) -> str:
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    (pr,) = api.get_repo_discussions(repo)
    return api.get_discussion_details(repo, pr.num).events[0].content


def test_repos_of_one_case_share_the_cell_across_repos_and_runners(hub, reference, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    sha_a = api.repo_info(f"{ORG}/a").sha
    run = _run(hub, tmp_path / "runner-1", [f"{ORG}/a", f"{ORG}/b"], GITHUB_ACTIONS="true")
    # One environment made ready, one probe: for the first repo only; the second reuses its cell.
    assert len(re.findall(r"matrix: environment 1/1 ready: transformers 5\.24\.0 \(base\)", run.stderr)) == 1
    assert len(re.findall(r"matrix: cell 1/1 done", run.stderr)) == 2, run.stderr
    assert f"config safe, variant safe, proven on {ORG}/a@{sha_a[:12]} (same case)" in run.stderr
    # In Actions the matrix folds on its own, inside no other fold (Actions cannot nest them).
    lines = run.stderr.splitlines()
    assert f"::group::publish {ORG}/b › check patch_embeddings" in "\n".join(lines)
    assert any(line.endswith("› downstream matrix for patch_embeddings") for line in lines)
    depth = 0
    for line in lines:
        depth += line.startswith("::group::") - line.startswith("::endgroup::")
        assert depth in (0, 1), run.stderr
    assert depth == 0

    assert f"proven on {ORG}/a@{sha_a[:12]} (same case): transformers {RELEASE} (base)" in _pr_text(
        hub, f"{ORG}/b"
    )
    assert "proven on" not in _pr_text(hub, f"{ORG}/a")  # proven there: nothing extra said

    # Beside the ledger, for the next runners: written by hubfuse's user, naming who proved it.
    hub_cells = HubCells(Hub(hub.endpoint, hub.token), LEDGER)
    (cell,) = hub_cells._read()[1].values()
    assert (cell.repo, cell.sha, cell.key["release"]) == (f"{ORG}/a", sha_a, RELEASE)
    assert cell.subjects["config"]["outcome"] == "safe"
    # A fresh runner (no local cache, nothing in memory) finds it there for a repo of the same case.
    fresh = CellStore(None, HubCells(Hub(hub.endpoint, hub.token), LEDGER))
    case = _case(reference)
    assert cell.key["case"] == case.digest
    assert fresh.get(cell.key, case).repo == f"{ORG}/a"


def test_shared_cells_someone_else_touched_are_not_trusted(hub, reference, tmp_path):
    case = _case(reference)
    key = {"release": RELEASE, "column": "base", "case": case.digest, "probe": "forged"}
    bot = HubCells(Hub(hub.endpoint, hub.token), f"{ORG}/trust-ledger")
    bot.add(StoredCell(key, case.case, {"config": {"outcome": "safe", "reason": "", "notes": []}}, "x", "1"))
    bot.flush()
    digest = StoredCell(key, case.case, {"config": {}}, "", "").digest
    assert HubCells(Hub(hub.endpoint, hub.token), f"{ORG}/trust-ledger").get(digest) is not None

    # Mallory (write access to the ledger repo) rewrites the file: nothing in it counts any more.
    path = tmp_path / "cells.json"
    text = HfApi(endpoint=hub.endpoint, token=hub.mallory).hf_hub_download(
        f"{ORG}/trust-ledger", CELLS_FILE, repo_type="dataset", local_dir=tmp_path / "dl"
    )
    path.write_text(Path(text).read_text().replace('"x"', '"y"'))
    HfApi(endpoint=hub.endpoint, token=hub.mallory).upload_file(
        path_or_fileobj=str(path), path_in_repo=CELLS_FILE, repo_id=f"{ORG}/trust-ledger", repo_type="dataset"
    )
    assert HubCells(Hub(hub.endpoint, hub.token), f"{ORG}/trust-ledger").get(digest) is None
    # A commit of another file by someone else leaves hubfuse's own file trusted.
    bot = HubCells(Hub(hub.endpoint, hub.token), f"{ORG}/trust-ledger")
    bot.add(StoredCell(key, case.case, {"config": {"outcome": "safe", "reason": "", "notes": []}}, "x", "1"))
    bot.flush()
    HfApi(endpoint=hub.endpoint, token=hub.mallory).upload_file(
        path_or_fileobj=b"stop\n",
        path_in_repo="KILL_SWITCH",
        repo_id=f"{ORG}/trust-ledger",
        repo_type="dataset",
    )
    assert HubCells(Hub(hub.endpoint, hub.token), f"{ORG}/trust-ledger").get(digest).repo == "x"


def test_progress_redraws_one_line_in_a_terminal_and_prints_lines_elsewhere():
    import io

    from hubfuse.check.matrix_progress import MatrixProgress
    from hubfuse.log import Logger

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, github in ((Terminal(), False), (io.StringIO(), False), (Terminal(), True)):
        logger = Logger(stream, github=github)
        progress = MatrixProgress(2, 3, logger)
        progress.environment("5.5.4", "base", 4.25, 4.3)
        progress.cell("5.5.4", "base", "config ignored", 6.0)
        logger.info("a plain line")
        text = stream.getvalue()
        assert "environment 1/2 ready: transformers 5.5.4 (base), built in 4.2 s" in text
        assert "cell 1/3 done: transformers 5.5.4 (base): config ignored, 6.0 s" in text
        if isinstance(stream, Terminal) and not github:  # redrawn in place, cleared before a line
            assert "\r\x1b[K" in text and text.endswith("\r\x1b[Ka plain line\n")
        else:
            assert "\r" not in text and text.count("\n") == 3


def test_a_local_folder_reuses_its_own_cells_and_never_lends_them_to_a_hub_repo(hub, reference, tmp_path):
    home = tmp_path / "home"
    env = hubfuse_env(
        hub.endpoint,
        home,
        hub.token,
        HUBFUSE_CELL_CACHE=str(home / "cells"),
        HUBFUSE_DOWNSTREAM_VERSIONS=f"=={RELEASE}",
    )
    folder = _copy(reference, tmp_path / "local")
    runs = [run_hubfuse("check", str(folder), "--json", env=env) for _ in range(2)]
    for run in runs:
        assert run.returncode in (0, 3), run.stderr
    first, second = (
        {c["env"]: c for c in json.loads(r.stdout)["families"][0]["downstream"]["cells"]} for r in runs
    )
    assert "matrix: environment 1/1 ready" in runs[0].stderr
    assert "matrix: environment" not in runs[1].stderr  # no probe: the cell of the first check
    assert second["base"]["proven_on"] == f"the local folder {folder.resolve()}"
    assert not first["base"].get("proven_on")
    assert {k: v for k, v in second["base"].items() if k != "proven_on"} == {
        k: v for k, v in first["base"].items() if k != "proven_on"
    }
    (stored,) = [json.loads(p.read_text()) for p in (home / "cells").glob("*.json")]
    assert stored["local"] is True and stored["repo"] == str(folder.resolve())

    # A Hub repo of the same case proves its own cell: a folder of one machine is nothing to cite.
    HfApi(endpoint=hub.endpoint, token=hub.token).create_repo(f"{ORG}/c")
    HfApi(endpoint=hub.endpoint, token=hub.token).upload_folder(repo_id=f"{ORG}/c", folder_path=str(folder))
    published = _run(hub, home, [f"{ORG}/c"])
    assert "matrix: environment 1/1 ready" in published.stderr
    assert "local folder" not in _pr_text(hub, f"{ORG}/c")
    assert "local folder" not in published.stdout
