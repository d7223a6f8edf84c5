"""The probe host: a downstream probe forked from a process that imported the shared torch once.

Real releases, real probes (tests/test_downstream.py's cached 5.24.0 environment). A forked probe
must judge exactly as a fresh one, and the host must refuse an environment that would import any
other file: a changed file, a module shadowing a shared one, a module the host looked up in vain.
Those environments are hard-linked copies of the real one with that one change (a changed file is
a new file, never an edit of the shared inode).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hubfuse.check import envs, probe_launch, transformers_fusion
from hubfuse.check.downstream import _probe_environ
from hubfuse.check.shared_torch import SHARED_TORCH_VAR
from hubfuse.check.verdict import OUTPUT_TOLERANCE
from hubfuse.configedit import set_top_level_key

RELEASE = "5.24.0"


def _request(source: Path, downstream: Path, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    request = {
        "source": str(source),
        "downstream": str(downstream),
        "variant": None,
        "work_dir": str(work / "scratch"),
        "tolerances": OUTPUT_TOLERANCE,
        "timeout_s": 600,
        "scenario_jobs": 2,
        "shared_torch": _probe_environ()[SHARED_TORCH_VAR],
    }
    (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
    return work / "request.json"


def _probe(
    launcher: probe_launch.ProbeLauncher, env: envs.Env, inputs: tuple[Path, Path], work: Path, **extra: str
) -> dict[str, Any]:
    request = _request(*inputs, work)
    code = launcher.run(env, request, work / "result.json", work / "probe.log", 600, extra or None)
    assert code == 0, (work / "probe.log").read_text()
    document: dict[str, Any] = json.loads((work / "result.json").read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="module")
def recorded(checkpoints, tmp_path_factory):
    """5.24.0's environment, the probe inputs, and a fresh probe's document (its record kept)."""
    env, _ = envs.ensure_env(RELEASE)
    work = tmp_path_factory.mktemp("probe-host")
    source = checkpoints("qwen3_vl")
    downstream = work / "downstream"
    shutil.copytree(source, downstream)
    edited = set_top_level_key(
        (source / "config.json").read_text(), "fusion_config", {"patch_embeddings": True}
    )
    (downstream / "config.json").write_text(edited)
    (env.path / probe_launch.SHARED_MODULES_RECORD).unlink(missing_ok=True)
    with probe_launch.ProbeLauncher([], _probe_environ()) as launcher:
        fresh = _probe(launcher, env, (source, downstream), work / "fresh")
        assert not launcher.forked  # not a candidate of this launcher: the probe starts fresh, and records
    probe_launch.keep_shared_modules(env, fresh)
    return env, (source, downstream), fresh


def test_with_no_record_yet_the_probe_is_forked_after_import_torch_alone(recorded, tmp_path):
    """A machine's first matrix: the host imports torch alone, and the probe records as a fresh one."""
    env, inputs, fresh = recorded
    copy = _copy_env(env, tmp_path / "copy")  # the same files, hard-linked
    (copy.path / probe_launch.SHARED_MODULES_RECORD).unlink()
    with probe_launch.ProbeLauncher([copy], _probe_environ()) as launcher:
        forked = _probe(launcher, copy, inputs, tmp_path / "forked")
        assert launcher.forked == [copy.path.name] and not launcher.refused
    assert forked["started"].startswith(probe_launch.FORKED_AFTER_ROOT)
    assert forked["cells"] == fresh["cells"] and forked["failures"] == fresh["failures"]
    # What a fresh start imports of the shared torch, module for module and in the same order.
    assert forked["shared_modules"] == fresh["shared_modules"]
    probe_launch.keep_shared_modules(copy, forked)
    assert probe_launch.shared_modules_record(copy) == fresh["shared_modules"]


def test_a_probe_forked_from_the_host_judges_as_a_fresh_one(recorded, tmp_path):
    env, inputs, fresh = recorded
    assert fresh["started"] == probe_launch.FRESH
    record = probe_launch.shared_modules_record(env)
    assert record and {"torch", "torch._dynamo"} <= set(record)  # what the host preloads

    with probe_launch.ProbeLauncher([env], _probe_environ()) as launcher:
        forked = _probe(launcher, env, inputs, tmp_path / "forked")
        assert launcher.forked == [env.path.name] and not launcher.refused

    assert forked["started"].startswith(probe_launch.FORKED)
    assert forked["cells"] == fresh["cells"]
    assert forked["cells"]["config"]["outcome"] == "safe"
    assert (forked["failures"], forked["transformers"], forked["torch"]) == (
        fresh["failures"],
        fresh["transformers"],
        fresh["torch"],
    )
    # What the forked probe holds of the shared torch is what the fresh one imported, no module more.
    assert set(forked["shared_modules"]) == set(fresh["shared_modules"])
    # 5.24.0's `_LazyModule.__dir__` is the known one: both probes ran the linear twin.
    assert forked["lazy_module_dir"] == fresh["lazy_module_dir"] == transformers_fusion.LAZY_DIR_LINEAR


def _copy_env(env: envs.Env, target: Path) -> envs.Env:
    subprocess.run(["cp", "-al", str(env.path), str(target)], check=True)
    return envs.Env(env.transformers, env.extras, target)


def _site(env: envs.Env) -> Path:
    (site,) = env.path.glob("lib/python*/site-packages")
    return site


def _changed_file(copy: envs.Env) -> str:
    original = _site(copy) / "typing_extensions.py"
    changed = original.with_suffix(".new")
    changed.write_text(original.read_text(encoding="utf-8") + "\n# another release of this file\n")
    os.replace(changed, original)  # a new inode: the original environment's file is untouched
    return "typing_extensions: .* is not the file the host loaded"


def _shadowing_module(copy: envs.Env) -> str:
    shared = Path(_probe_environ()[SHARED_TORCH_VAR])
    shutil.copytree(shared / "mpmath", _site(copy) / "mpmath")  # same bytes, found first
    return "mpmath resolves to .*/site-packages/mpmath/__init__.py there"


def _module_looked_up_in_vain(copy: envs.Env) -> str:
    (_site(copy) / "opt_einsum.py").write_text("__version__ = '3.4.0'\n")  # torch asks for it
    return "opt_einsum exists there, and the host found no such module"


@pytest.mark.parametrize("change", [_changed_file, _shadowing_module, _module_looked_up_in_vain])
def test_the_host_refuses_an_environment_that_would_import_other_files(recorded, tmp_path, change):
    env, inputs, _ = recorded
    copy = _copy_env(env, tmp_path / "copy")
    expected = change(copy)
    with probe_launch.ProbeLauncher([env, copy], _probe_environ()) as launcher:
        document = _probe(launcher, copy, inputs, tmp_path / "copy-probe")
        assert not launcher.forked
        assert list(launcher.refused) == [copy.path.name]
    assert re.search(expected, launcher.refused[copy.path.name]), launcher.refused
    assert document["started"] == probe_launch.FRESH  # run as it is, from a fresh interpreter
    assert document["transformers"] == RELEASE


def test_a_stand_in_with_its_own_variables_starts_fresh(recorded, tmp_path):
    env, inputs, fresh = recorded
    with probe_launch.ProbeLauncher([env], _probe_environ()) as launcher:
        document = _probe(launcher, env, inputs, tmp_path / "stand-in", USE_HUB_KERNELS="0")
        assert not launcher.forked
    assert document["started"] == probe_launch.FRESH
    assert document["cells"] == fresh["cells"]


def test_the_host_imports_only_what_every_record_holds():
    assert probe_launch._common(
        [["torch", "a", "b", "c"], ["c", "torch", "b"], ["b", "torch", "c", "d"]]
    ) == [
        "torch",
        "b",
        "c",
    ]
