"""`hubfuse check` / `verify` as a user runs them: real subprocesses, real loads."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from cli_env import assert_one_line_error


def hubfuse(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubfuse", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.fixture()
def broken(checkpoints, tmp_path: Path):
    """A writable copy of a good tiny checkpoint, to damage."""
    target = tmp_path / "model"
    shutil.copytree(checkpoints("qwen2_vl"), target)
    return target


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_missing_path(tmp_path):
    assert_one_line_error(hubfuse("check", tmp_path / "nope"), 2, "no such file")


def test_no_config(broken):
    (broken / "config.json").unlink()
    assert_one_line_error(hubfuse("check", broken), 2, "no config.json")


def test_malformed_json(broken):
    (broken / "config.json").write_text('{"model_type": "qwen2_vl",')
    assert_one_line_error(hubfuse("check", broken), 2, "malformed JSON")


def test_unknown_model_type(broken):
    _edit_config(broken, model_type="not_a_model")
    assert_one_line_error(hubfuse("check", broken), 2, "unknown to the installed transformers")


def test_pickle_only_is_refused_without_unpickling(broken):
    for path in broken.glob("*.safetensors"):
        path.unlink()
    # A pickle that would run code if anything unpickled it.
    (broken / "pytorch_model.bin").write_bytes(b"cos\nsystem\n(S'touch PWNED'\ntR.")
    result = hubfuse("check", broken)
    assert_one_line_error(result, 2, "never unpickles", "safetensors")
    assert not (Path.cwd() / "PWNED").exists()


def test_custom_code_needs_trust(broken):
    _edit_config(broken, auto_map={"AutoModel": "modeling_x.XModel"})
    assert_one_line_error(hubfuse("check", broken), 2, "--trust-remote-code")


@pytest.mark.parametrize("value", [{"no_such_family": True}, {"patch_embeddings": "yes"}, "patch_embeddings"])
def test_invalid_existing_fusion_config(broken, value):
    _edit_config(broken, fusion_config=value)
    assert_one_line_error(hubfuse("check", broken), 2, "breaks every plain")


def test_truncated_safetensors(broken):
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert_one_line_error(hubfuse("check", broken), 2, "truncated")


def test_header_offsets_lie(broken):
    weights = broken / "model.safetensors"
    raw = weights.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    # Swap the offsets of two tensors of different sizes: same header length, lying offsets.
    names = [k for k in header if k != "__metadata__"]
    size = {n: header[n]["data_offsets"][1] - header[n]["data_offsets"][0] for n in names}
    first = names[0]
    second = next(n for n in names if size[n] != size[first])
    header[first]["data_offsets"], header[second]["data_offsets"] = (
        header[second]["data_offsets"],
        header[first]["data_offsets"],
    )
    encoded = json.dumps(header, separators=(",", ":")).encode().ljust(length)
    assert len(encoded) == length
    weights.write_bytes(raw[:8] + encoded + raw[8 + length :])
    result = hubfuse("check", broken)
    assert_one_line_error(result, 2, "model.safetensors")


def test_unknown_family(checkpoints):
    assert_one_line_error(
        hubfuse("check", checkpoints("qwen2_vl"), "--family", "nope"), 2, "unknown fusion family"
    )


def test_nothing_to_fuse_exits_4(checkpoints):
    result = hubfuse("check", checkpoints("plain"), "--json")
    assert result.returncode == 4, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "not_applicable"
    assert report["families"][0]["verdict"] == "not_applicable"
    assert report["families"][0]["reasons"]


def test_json_document_shape_and_report_dir(checkpoints, tmp_path):
    result = hubfuse("check", checkpoints("qwen2_vl"), "--json", "--report-dir", tmp_path / "r")
    report = json.loads(result.stdout)  # stdout is exactly one JSON document
    assert result.returncode in (0, 3)
    for key in ("source", "transformers_version", "torch_version", "verdict", "families"):
        assert key in report
    family = report["families"][0]
    assert family["name"] == "patch_embeddings"
    assert family["verdict"] in ("safe", "unsafe")
    assert set(family["roundtrip"]) >= {
        "tensors_bit_exact",
        "tensors_compared",
        "mismatches",
        "files_byte_identical",
        "config_changes",
    }
    assert set(family["downstream"]) >= {"weights_match", "max_abs_output_diff"}
    assert (tmp_path / "r" / "report.json").is_file()
    assert "hubfuse check" in (tmp_path / "r" / "report.md").read_text()
    assert list((tmp_path / "r" / "logs").glob("*.log"))


def test_verify_lists_every_tensor(checkpoints):
    result = hubfuse("verify", checkpoints("qwen2_vl"))
    assert result.returncode in (0, 3), result.stderr
    assert "tensor by tensor" in result.stdout
    assert "visual.patch_embed.proj.weight" in result.stdout


def test_a_release_whose_default_load_cannot_run_here_says_so_in_one_line(checkpoints, monkeypatch):
    """transformers that requires `kernels` (5.25 on) loads with hub kernels on by default.

    Where that requirement is not installed, the check is refused with the fix before any
    verdict; where the release needs no kernels (or they are installed) the check runs.
    """
    import os

    from hubfuse.check import transformers_fusion

    monkeypatch.setenv("USE_HUB_KERNELS", "1")
    problem = transformers_fusion.default_load_problem()
    result = hubfuse("check", checkpoints("qwen3_vl"), "--downstream-versions", "none", env=dict(os.environ))
    if problem is not None:
        assert_one_line_error(result, 2, transformers_fusion.hub_kernels_requirement(), "USE_HUB_KERNELS=0")
        assert not result.stdout.strip()
    else:
        assert result.returncode == 0, result.stderr
