"""`hubfuse run` / `plan` over a spec, against the local hub: ledger, shards, faults, budget.

The tests are one scenario on one hub, in file order: each run starts from the state (PRs,
ledger) the previous ones left, as consecutive scheduled runs do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cli_env import hubfuse_env, run_hubfuse
from huggingface_hub import HfApi

from hubfuse.localhub import LocalHub

ORG = "batch"
LEDGER = f"{ORG}/hubfuse-ledger"
SPEC = f"""
name: batch-test
repos:
  author: {ORG}
  exclude: ["*-fused"]
ledger:
  repo: {LEDGER}
limits:
  max_prs: 10
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory, checkpoints):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        server.token = server.add_token("bot", role="write", orgs=[ORG])
        api = HfApi(endpoint=server.endpoint, token=server.token)
        for name, model_type in [
            ("safe-a", "qwen3_vl"),
            ("safe-b", "qwen3_vl"),
            ("unsafe", "qwen2_vl"),
            ("plain", "plain"),
        ]:
            api.create_repo(f"{ORG}/{name}")
            api.upload_folder(repo_id=f"{ORG}/{name}", folder_path=str(checkpoints(model_type)))
        yield server


def spec_file(tmp_path: Path, text: str = SPEC, name: str = "spec.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def hubfuse(hub, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    extra = {"HUBFUSE_RETRIES": "2", "HUBFUSE_LEDGER_FLUSH_EVERY": "1", **env}
    return run_hubfuse(*args, env=hubfuse_env(hub.endpoint, tmp_path, hub.token, **extra))


def outcomes(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    summary = json.loads(result.stdout)
    return {r["repo_id"]: r["outcome"] for r in summary["repos"]}


def ledger_records(hub) -> dict:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(
        LEDGER,
        "ledgers/batch-test.json",
        repo_type="dataset",
        endpoint=hub.endpoint,
        token=hub.token,
        force_download=True,
    )
    return json.loads(Path(path).read_text())["records"]


def test_broken_spec_points_at_the_line(hub, tmp_path):
    path = spec_file(tmp_path, "repos:\n  author: batch\nlimits:\n  max_prs: many\n")
    result = hubfuse(hub, tmp_path, "run", str(path))
    assert result.returncode == 2
    assert f"{path}:4: limits.max_prs: 'many' is not of type 'integer'" in result.stderr


def test_plan_is_a_matrix(hub, tmp_path):
    result = hubfuse(hub, tmp_path, "plan", str(spec_file(tmp_path)), "--matrix", "--max-per-shard", "2")
    assert result.returncode == 0, result.stderr
    matrix = json.loads(result.stdout)
    assert [entry["shard"] for entry in matrix["include"]] == ["1/2", "2/2"]
    assert sum(entry["repos"] for entry in matrix["include"]) == 4


def test_run_then_rerun_costs_a_few_calls(hub, tmp_path):
    spec = str(spec_file(tmp_path))
    first = hubfuse(hub, tmp_path, "run", spec, "--json")
    assert first.returncode == 0, first.stderr
    assert outcomes(first) == {
        "batch/plain": "not_applicable",
        "batch/safe-a": "published",
        "batch/safe-b": "published",
        "batch/unsafe": "unsafe",
    }
    records = ledger_records(hub)
    assert {repo: r["outcome"] for repo, r in records.items()} == outcomes(first)

    before = len(hub.requests())
    second = hubfuse(hub, tmp_path / "fresh-cache", "run", spec, "--json")  # a new machine: empty caches
    assert second.returncode == 0, second.stderr
    assert set(outcomes(second).values()) == {"skipped"}
    requests = hub.requests()[before:]
    assert not [r for r in requests if r["path"].endswith(".safetensors")]
    assert len(requests) <= 8, [r["path"] for r in requests]


def test_failing_repo_does_not_stop_the_others_and_is_retried(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.upload_file(path_or_fileobj=b"# moved\n", path_in_repo="README.md", repo_id=f"{ORG}/safe-a")
    api.upload_file(path_or_fileobj=b"# moved\n", path_in_repo="README.md", repo_id=f"{ORG}/safe-b")
    hub.add_faults({"path": "/api/models/batch/safe-a/commit", "action": 500, "times": None})
    result = hubfuse(hub, tmp_path, "run", str(spec_file(tmp_path)), "--json")
    hub.clear_faults()
    assert result.returncode == 3, result.stderr
    assert outcomes(result) == {
        "batch/plain": "skipped",
        "batch/safe-a": "error",
        "batch/safe-b": "published",
        "batch/unsafe": "skipped",
    }
    again = hubfuse(hub, tmp_path, "run", str(spec_file(tmp_path)), "--json")
    assert again.returncode == 0, again.stderr
    assert outcomes(again)["batch/safe-a"] == "published"
    assert outcomes(again)["batch/safe-b"] == "skipped"
    open_prs = [
        d
        for d in api.get_repo_discussions(f"{ORG}/safe-a", discussion_type="pull_request")
        if d.status == "open"
    ]
    assert len(open_prs) == 1  # the new commit's PR superseded the old one, no duplicates


def test_kill_switch_and_budget_stop_cleanly(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.upload_file(path_or_fileobj=b"# again\n", path_in_repo="README.md", repo_id=f"{ORG}/safe-b")
    spec = str(spec_file(tmp_path))

    killed = hubfuse(hub, tmp_path, "run", spec, "--json", HUBFUSE_KILL_SWITCH="1")
    assert killed.returncode == 8, killed.stderr + killed.stdout
    assert outcomes(killed)["batch/safe-b"] == "not_reached"
    assert "kill switch" in json.loads(killed.stdout)["stopped"]

    tight = spec_file(tmp_path, SPEC + "  request_budget: 3\n", name="tight.yml")
    starved = hubfuse(hub, tmp_path, "run", str(tight), "--json")
    assert starved.returncode == 8, starved.stderr
    summary = json.loads(starved.stdout)
    assert "budget" in summary["stopped"]
    assert "not_reached" in outcomes(starved).values()

    resumed = hubfuse(hub, tmp_path, "run", spec, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert outcomes(resumed)["batch/safe-b"] == "published"


def test_two_shards_at_once_lose_no_ledger_record(hub, tmp_path):
    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    for name in ("safe-a", "safe-b", "unsafe", "plain"):
        api.upload_file(path_or_fileobj=b"# shard round\n", path_in_repo="NOTES.md", repo_id=f"{ORG}/{name}")
    spec = str(spec_file(tmp_path))
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def shard(index: int) -> None:
        results[str(index)] = hubfuse(
            hub, tmp_path / f"s{index}", "run", spec, "--shard", f"{index}/2", "--json"
        )

    threads = [threading.Thread(target=shard, args=(i,)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seen: dict[str, str] = {}
    for result in results.values():
        assert result.returncode == 0, result.stderr
        seen.update(outcomes(result))
    assert set(seen) == {f"{ORG}/{n}" for n in ("safe-a", "safe-b", "unsafe", "plain")}
    records = ledger_records(hub)
    heads = {name: api.repo_info(f"{ORG}/{name}").sha for name in ("safe-a", "safe-b", "unsafe", "plain")}
    assert {repo: r["sha"] for repo, r in records.items()} == {f"{ORG}/{n}": sha for n, sha in heads.items()}


def test_killed_run_resumes_where_it_stopped(hub, tmp_path, checkpoints):
    import signal
    import time

    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    names = [f"resume-{i}" for i in range(4)]
    for name in names:
        api.create_repo(f"{ORG}/{name}")
        api.upload_folder(repo_id=f"{ORG}/{name}", folder_path=str(checkpoints("qwen3_vl")))
    text = SPEC.replace('exclude: ["*-fused"]', 'include: ["batch/resume-*"]').replace("batch-test", "resume")
    spec = str(spec_file(tmp_path, text, name="resume.yml"))
    env = hubfuse_env(hub.endpoint, tmp_path, hub.token, HUBFUSE_LEDGER_FLUSH_EVERY="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "hubfuse", "run", spec, "--json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def recorded() -> int:
        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(
                LEDGER,
                "ledgers/resume.json",
                repo_type="dataset",
                endpoint=hub.endpoint,
                token=hub.token,
                force_download=True,
            )
        except Exception:
            return 0
        return len(json.loads(Path(path).read_text())["records"])

    deadline = time.monotonic() + 300
    while recorded() < 1 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)  # the run and its workers, mid-batch
    process.wait()
    done_before = recorded()
    assert 1 <= done_before < len(names) or process.returncode == 0

    resumed = hubfuse(hub, tmp_path, "run", spec, "--json")
    assert resumed.returncode == 0, resumed.stderr
    results = outcomes(resumed)
    assert list(results.values()).count("skipped") >= done_before
    assert recorded() == len(names)
    for name in names:  # no repo got a second PR
        prs = [
            d
            for d in api.get_repo_discussions(f"{ORG}/{name}", discussion_type="pull_request")
            if "(hubfuse)" in d.title
        ]
        assert len(prs) == 1, name
