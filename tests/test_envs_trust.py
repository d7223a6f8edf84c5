"""The matrix's environments run nothing hubfuse did not build, and no Hub token reaches them.

Issue 15 item 6: a folder under the environments root holding a marker was run, and pip and the
probe interpreters got the whole environment, the write token included. Real subprocesses: uv
builds the environment, the real downstream probe runs in it, the real CLI starts the workers.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cli_env import assert_one_line_error, run_hubfuse

from hubfuse.check import envs, envs_root, shared_torch
from hubfuse.check.downstream import DownstreamPlan, MatrixInputs, run_matrix
from hubfuse.errors import BadInputError

TESTS = Path(__file__).resolve().parent
TOKEN = "hf_" + "s3cr3t" * 6
RECORDER_PTH = (
    "import os, json; _t = os.environ.get('HUBFUSE_TEST_ENV_RECORD'); "
    "_t and open(_t + '.' + str(os.getpid()), 'w').write(json.dumps(dict(os.environ)))\n"
)


def _records(prefix: Path) -> list[dict[str, str]]:
    return [json.loads(path.read_text()) for path in prefix.parent.glob(prefix.name + ".*")]


def _assert_no_token(recorded: dict[str, str]) -> None:
    assert TOKEN not in json.dumps(recorded)
    assert not {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"} & set(recorded)
    assert recorded["HF_HUB_DISABLE_IMPLICIT_TOKEN"] == "1"


def test_a_planted_environment_is_never_run_and_probes_get_no_token(
    checkpoints, tmp_path, monkeypatch
) -> None:
    # A private environments root, the test cache's uv cache (warm: the build takes seconds).
    shared_cache = envs_root.envs_root() / "uv-cache"
    root = tmp_path / "envs"
    root.mkdir(mode=0o700)
    monkeypatch.setenv("HUBFUSE_ENVS", str(root))
    monkeypatch.setenv("UV_CACHE_DIR", os.environ.get("UV_CACHE_DIR", str(shared_cache)))
    record_prefix = tmp_path / "recorded-env"
    monkeypatch.setenv("HUBFUSE_TEST_ENV_RECORD", str(record_prefix))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", TOKEN)

    # Planted: the old marker, a build record exactly as hubfuse writes it, and a fake interpreter.
    planted = root / envs.env_name("5.24.0", ())
    (planted / "bin").mkdir(parents=True)
    ran = tmp_path / "PLANTED-PYTHON-RAN"
    fake = planted / "bin" / "python"
    fake.write_text(f"#!/bin/sh\nenv > {ran}\nexit 1\n")
    fake.chmod(0o755)
    (planted / "hubfuse-env.json").write_text("{}")
    record = envs._expected_record("5.24.0", (), ())
    (planted / envs.BUILD_RECORD).write_text(json.dumps({**record, "left_out": []}))
    assert envs.build_record(envs.Env("5.24.0", (), planted)) is None

    # Planted too: a fake torch in the shared-torch folder every probe puts on its path.
    shared = Path(shared_torch.shared_torch_environ()[shared_torch.SHARED_TORCH_VAR])
    (shared / "torch").unlink()
    (shared / "torch").mkdir()
    torch_ran = tmp_path / "PLANTED-TORCH-RAN"
    (shared / "torch" / "__init__.py").write_text(f"open({str(torch_ran)!r}, 'w').close()\n")

    env, created = envs.ensure_env("5.24.0")
    assert created is not None and not ran.exists()  # rebuilt by uv, the planted python never ran
    assert env.path == planted and os.path.realpath(env.python) == record["python"]
    assert envs.build_record(env) is not None

    # The real probe in that environment records its own environment at start-up (a .pth file).
    site = next(env.path.glob("lib/python*/site-packages"))
    (site / "zz-record-env.pth").write_text(RECORDER_PTH)
    source = checkpoints("qwen3_vl")
    downstream = tmp_path / "downstream"
    downstream.mkdir()
    for path in source.iterdir():
        (downstream / path.name).symlink_to(path)
    _columns, cells, _ = run_matrix(
        DownstreamPlan("test", ("5.24.0",)), MatrixInputs(source, downstream, None), tmp_path, 600, 1
    )
    assert [c.transformers for c in cells if c.env == envs.BASE_ENV] == ["5.24.0"]
    assert cells[0].outcome == "ignored", cells[0]  # config.json without fusion_config: a real load ran
    recorded = _records(record_prefix)
    assert recorded, "the probe interpreter never started"
    for environment in recorded:
        _assert_no_token(environment)
    assert not ran.exists() and not torch_ran.exists()
    assert (shared / "torch").is_symlink()  # the shared-torch folder was rebuilt


def test_check_workers_get_no_token(checkpoints, tmp_path) -> None:
    record_prefix = tmp_path / "worker-env"
    env = {
        **os.environ,
        "HF_TOKEN": TOKEN,
        "HUGGING_FACE_HUB_TOKEN": TOKEN,
        "HUBFUSE_WORKER_PRELOAD": "env_recorder",
        "PYTHONPATH": str(TESTS),
        "HUBFUSE_TEST_ENV_RECORD": str(record_prefix),
        "HUBFUSE_CACHE": str(tmp_path / "verdicts"),
    }
    result = run_hubfuse("check", str(checkpoints("qwen3_vl")), "--downstream-versions", "none", env=env)
    assert result.returncode == 0, result.stderr
    recorded = _records(record_prefix)
    assert recorded, "the forkserver never imported the recorder"
    for environment in recorded:
        _assert_no_token(environment)


def test_an_environments_root_others_can_write_is_refused(checkpoints, tmp_path, monkeypatch) -> None:
    open_root = tmp_path / "world-writable"
    open_root.mkdir()
    open_root.chmod(0o777)
    env = {**os.environ, "HUBFUSE_ENVS": str(open_root), "HUBFUSE_CACHE": str(tmp_path / "verdicts")}
    result = run_hubfuse("check", str(checkpoints("qwen3_vl")), "--downstream-versions", "==5.24.0", env=env)
    assert_one_line_error(result, 2, str(open_root), "can be written by another user")
    assert list(open_root.iterdir()) == []  # nothing built, nothing run

    # A folder above it that others can write is as bad; a sticky one (like /tmp) is not.
    monkeypatch.setenv("HUBFUSE_ENVS", str(open_root / "envs"))
    with pytest.raises(BadInputError, match=r"world-writable.*can be written by another user"):
        envs_root.envs_root()
    open_root.chmod(0o777 | stat.S_ISVTX)
    assert envs_root.envs_root() == (open_root / "envs").resolve()
    (open_root / "envs").mkdir(mode=0o775)
    (open_root / "envs").chmod(0o775)
    with pytest.raises(BadInputError, match="mode 775"):
        envs_root.envs_root()
