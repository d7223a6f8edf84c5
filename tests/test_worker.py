"""The isolated worker processes: results, failures, and the clean-registry guarantee."""

from __future__ import annotations

import os
import sys

import pytest

from hubfuse.fusion.worker import WorkerFailure, run_isolated

MODULE = "worker_probes"


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    monkeypatch.syspath_prepend(os.path.dirname(__file__))


def call(probe, *args, tmp_path, timeout=120.0):
    return run_isolated(probe, *args, log_path=tmp_path / "probe.log", timeout=timeout, module=MODULE)


def test_result_comes_back_and_output_goes_to_the_log(tmp_path):
    result = call("answer", 21, tmp_path=tmp_path)
    assert result["value"] == 42 and result["pid"] != os.getpid()
    assert "to the log" in (tmp_path / "probe.log").read_text()


def test_exception_becomes_one_line_and_traceback_stays_in_log(tmp_path):
    with pytest.raises(WorkerFailure) as failure:
        call("fail", tmp_path=tmp_path)
    assert failure.value.raised
    assert str(failure.value) == "ValueError: first line of the cause"
    assert "Traceback" in (tmp_path / "probe.log").read_text()


@pytest.mark.parametrize(("probe", "needle"), [("die", "SIGKILL"), ("exit_quietly", "status 3")])
def test_crash_is_reported_not_hung(tmp_path, probe, needle):
    with pytest.raises(WorkerFailure) as failure:
        call(probe, tmp_path=tmp_path)
    assert not failure.value.raised
    assert needle in str(failure.value)


def test_timeout_kills_the_worker(tmp_path):
    with pytest.raises(WorkerFailure) as failure:
        call("hang", tmp_path=tmp_path, timeout=2)
    assert "timed out" in str(failure.value)


def test_a_fused_load_never_leaks_into_the_next_worker(checkpoints, tmp_path):
    loads = call("fused_load", str(checkpoints("qwen3_vl")), tmp_path=tmp_path)
    assert loads["fused"]
    # What this release really does in one process: global registration (5.6-5.24) keeps the patch
    # and a later plain load is fused too; the init-context generation (5.25 on) keeps nothing.
    sticky = loads["sticky_generation"]
    assert loads["registered"] is sticky and loads["plain_after_is_fused"] is sticky
    assert call("registry_is_clean", tmp_path=tmp_path)["clean"]
    # ... nor into this process
    if "transformers.monkey_patching" in sys.modules:
        from transformers.monkey_patching import get_patch_mapping

        assert not get_patch_mapping()


def test_linear_lazy_dir_matches_transformers(tmp_path):
    import subprocess

    script = (
        "import sys, transformers, transformers.models.qwen3_vl.modeling_qwen3_vl\n"
        "from transformers.utils.import_utils import _LazyModule\n"
        "from hubfuse.fusion import transformers_fusion\n"
        "assert transformers_fusion.fusion_module() is not None\n"
        "mods = [m for m in list(sys.modules.values()) if isinstance(m, _LazyModule)]\n"
        "before = [_LazyModule.__dir__(m) for m in mods]\n"
        "import hubfuse.fusion.probes\n"
        "after = [_LazyModule.__dir__(m) for m in mods]\n"
        "assert _LazyModule.__dir__ is hubfuse.fusion.probes._linear_lazy_module_dir\n"
        "assert len(mods) > 3 and before == after, 'dir() changed'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
