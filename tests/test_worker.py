"""The isolated worker processes: results, failures, and the clean-registry guarantee."""

from __future__ import annotations

import os
import sys

import pytest

from hubfuse.check.worker import WorkerFailure, run_isolated

MODULE = "worker_probes"


@pytest.fixture(autouse=True)
def importable(monkeypatch):
    monkeypatch.syspath_prepend(os.path.dirname(__file__))


def call(probe, *args, tmp_path, timeout=120.0, **limits):
    log_path = tmp_path / "probe.log"
    return run_isolated(probe, *args, log_path=log_path, timeout=timeout, module=MODULE, **limits)


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
        "from hubfuse.check import transformers_fusion\n"
        "assert transformers_fusion.fusion_module() is not None\n"
        "mods = [m for m in list(sys.modules.values()) if isinstance(m, _LazyModule)]\n"
        "before = [_LazyModule.__dir__(m) for m in mods]\n"
        "import hubfuse.check.probes\n"
        "after = [_LazyModule.__dir__(m) for m in mods]\n"
        "assert _LazyModule.__dir__ is transformers_fusion._linear_lazy_module_dir\n"
        "assert len(mods) > 3 and before == after, 'dir() changed'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_a_lazy_dir_that_is_not_the_known_one_is_left_alone():
    """A release whose `__dir__` differs in any way (here: sorted) keeps its own."""
    import subprocess

    script = (
        "import transformers\n"
        "from transformers.utils.import_utils import _LazyModule\n"
        "from hubfuse.check import transformers_fusion as adapter\n"
        "def other(self):\n"
        "    result = list(super(_LazyModule, self).__dir__())\n"
        "    for attr in self.__all__:\n"
        "        if attr not in result:\n"
        "            result.append(attr)\n"
        "    return sorted(result)\n"
        "_LazyModule.__dir__ = other\n"
        "print(adapter.use_linear_lazy_module_dir())\n"
        "assert _LazyModule.__dir__ is other\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "transformers' own (its __dir__ differs from the known one)"


@pytest.mark.parametrize("how", ["python", "torch"])
def test_a_worker_past_its_memory_limit_fails_in_one_line(tmp_path, how):
    limit = 256 << 20  # beyond what the worker starts with (torch and transformers already mapped)
    assert call("allocate", 64, how, tmp_path=tmp_path, memory_limit=limit)["bytes"] == 64 << 20
    with pytest.raises(WorkerFailure) as failure:
        call("allocate", 2048, how, tmp_path=tmp_path, memory_limit=limit)
    assert "out of memory" in str(failure.value) and "memory limit of 0.25 GiB" in str(failure.value)
    assert "\n" not in str(failure.value)
    assert not failure.value.raised, (
        "the machine's bound, not an exception of the probed model: error, never unsafe"
    )


def test_mapped_weights_count_beside_the_memory_limit(tmp_path):
    weights = tmp_path / "weights.bin"
    with open(weights, "wb") as f:
        f.truncate(1 << 30)  # sparse: address space to map, no memory or disk
    limit = 256 << 20
    with pytest.raises(WorkerFailure, match="memory limit"):
        call("map_file", str(weights), tmp_path=tmp_path, memory_limit=limit)
    mapped = call("map_file", str(weights), tmp_path=tmp_path, memory_limit=limit, mapped_bytes=1 << 30)
    assert mapped["bytes"] == 1 << 30
