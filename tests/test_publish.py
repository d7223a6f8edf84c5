"""`hubfuse publish` end to end against the local hub: real HTTP, real client, real loads.

Every publish runs as a user runs it (a subprocess with HF_ENDPOINT and HF_TOKEN); every
downstream check is a fresh process doing a plain `from_pretrained` with no fusion argument.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_env import hubfuse_env, run_hubfuse
from huggingface_hub import HfApi, hf_hub_download

from hubfuse.localhub import LocalHub

SAFE = "qwen3_vl"  # the fusion works on this architecture in transformers 5.24
UNSAFE = "qwen2_vl"  # the fused load leaves linear_proj at its random init


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        server.alice = server.add_token("alice", role="write", orgs=["org"])
        server.owner = server.add_token("owner", role="write", orgs=["org"])
        server.reader = server.add_token("reader", role="read", orgs=["org"])
        yield server


@pytest.fixture()
def api(hub):
    return HfApi(endpoint=hub.endpoint, token=hub.alice)


def seed(api: HfApi, repo_id: str, folder: Path) -> str:
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="seed")
    return api.repo_info(repo_id).sha


def run_publish(
    hub, tmp_path: Path, *args: str, token: str | None = "alice"
) -> subprocess.CompletedProcess[str]:
    secret = getattr(hub, token, token) if token is not None else None
    return run_hubfuse("publish", *args, env=hubfuse_env(hub.endpoint, tmp_path, secret))


DOWNSTREAM = textwrap.dedent(
    """
    import json, sys
    import transformers
    from safetensors import safe_open
    repo, revision, source = sys.argv[1], sys.argv[2], sys.argv[3]
    model, info = transformers.AutoModelForImageTextToText.from_pretrained(
        repo, revision=revision, output_loading_info=True
    )
    from hubfuse.check.transformers_fusion import fused_modules
    modules = dict(model.named_modules())
    fused = {n: modules[n] for n in fused_modules(model)}
    expected = None
    with safe_open(source, "pt") as f:
        key = next(k for k in f.keys() if k.endswith("patch_embed.proj.weight"))
        expected = f.get_tensor(key)
    exact = all(
        m.linear_proj.weight.detach().equal(expected.reshape(expected.shape[0], -1)) for m in fused.values()
    )
    print(json.dumps({"fused": sorted(fused), "exact": exact, "missing": sorted(info["missing_keys"])}))
    """
)


def downstream(hub, repo_id: str, revision: str, source_weights: Path) -> dict:
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.endpoint,
        "HF_TOKEN": hub.alice,
        "HF_HOME": str(source_weights.parent / ".dl"),
    }
    result = subprocess.run(
        [sys.executable, "-c", DOWNSTREAM, repo_id, revision, str(source_weights)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def hubfuse_prs(api: HfApi, repo_id: str):
    return [
        d for d in api.get_repo_discussions(repo_id, discussion_type="pull_request") if "(hubfuse)" in d.title
    ]


def test_publish_safe_model_end_to_end(hub, api, checkpoints, tmp_path):
    source = checkpoints(SAFE)
    repo = "org/safe-model"
    sha = seed(api, repo, source)

    result = run_publish(hub, tmp_path, repo, "--variant", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sha"] == sha and report["verdict"] == "safe"
    statuses = {a["step"]: a["status"] for a in report["actions"]}
    assert statuses == {"config_pr": "opened", "variant": "created"}

    # One PR, one commit, only config.json changed, minimal diff.
    prs = hubfuse_prs(api, repo)
    assert len(prs) == 1
    details = api.get_discussion_details(repo, prs[0].num)
    assert details.diff and "fusion_config" in details.diff
    pr_ref = f"refs/pr/{prs[0].num}"
    assert [c.commit_id for c in api.list_repo_commits(repo, revision=pr_ref)][1] == sha
    before = (source / "config.json").read_text()
    after = Path(
        hf_hub_download(
            repo,
            "config.json",
            revision=pr_ref,
            endpoint=hub.endpoint,
            token=hub.alice,
            cache_dir=tmp_path / "c",
        )
    ).read_text()
    assert json.loads(after) == {**json.loads(before), "fusion_config": {"patch_embeddings": True}}
    changed = [
        line
        for line in difflib.ndiff(before.splitlines(), after.splitlines())
        if line.startswith(("+ ", "- "))
    ]
    assert changed == ['+   "fusion_config": {', '+     "patch_embeddings": true', "+   },"]
    description = details.events[0].content
    assert "<!-- hubfuse:" in description and sha in description and "How to load" in description

    # A second run: nothing to do, no download, a handful of requests.
    before_requests = len(hub.requests())
    again = run_publish(hub, tmp_path, repo, "--variant", "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert {a["step"]: a["status"] for a in second["actions"]} == {
        "config_pr": "exists",
        "variant": "up_to_date",
    }
    requests = hub.requests()[before_requests:]
    assert not [r for r in requests if r["path"].endswith(".safetensors")]
    assert len(requests) <= 10, [r["path"] for r in requests]
    assert len(hubfuse_prs(api, repo)) == 1

    # Downstream: the PR revision, main before and after the merge, then the variant.
    weights = source / "model.safetensors"
    seen = downstream(hub, repo, pr_ref, weights)
    assert seen["fused"] and seen["exact"] and not seen["missing"]
    assert downstream(hub, repo, "main", weights)["fused"] == []  # not merged yet
    HfApi(endpoint=hub.endpoint, token=hub.owner).merge_pull_request(repo, prs[0].num)
    merged = downstream(hub, repo, "main", weights)
    assert merged["fused"] and merged["exact"]
    variant = downstream(hub, f"{repo}-fused", "main", weights)
    assert variant["fused"] and variant["exact"] and not variant["missing"]

    card = api.model_info(f"{repo}-fused").card_data
    assert card["base_model"] == repo and "hubfuse" in card["tags"]

    # After the merge main has a new commit: the config is up to date, the variant follows in one commit.
    variant_commits = len(api.list_repo_commits(f"{repo}-fused"))
    third = run_publish(hub, tmp_path, repo, "--variant", "--json")
    assert third.returncode == 0, third.stderr
    assert {a["step"]: a["status"] for a in json.loads(third.stdout)["actions"]} == {
        "config_pr": "up_to_date",
        "variant": "updated",
    }
    assert len(api.list_repo_commits(f"{repo}-fused")) == variant_commits + 1


def test_unsafe_model_gets_nothing(hub, api, checkpoints, tmp_path):
    repo = "org/unsafe-model"
    seed(api, repo, checkpoints(UNSAFE))
    result = run_publish(hub, tmp_path, repo, "--variant")
    assert result.returncode == 3, result.stderr
    assert "UNSAFE" in result.stdout and "nothing written" in result.stdout
    assert hubfuse_prs(api, repo) == []
    assert not api.repo_exists(f"{repo}-fused")


def test_nothing_to_fuse_exits_4(hub, api, checkpoints, tmp_path):
    repo = "org/plain-model"
    seed(api, repo, checkpoints("plain"))
    result = run_publish(hub, tmp_path, repo)
    assert result.returncode == 4, result.stderr
    assert hubfuse_prs(api, repo) == []


def test_dry_run_writes_nothing_and_shows_everything(hub, api, checkpoints, tmp_path):
    repo = "org/dry-model"
    seed(api, repo, checkpoints(SAFE))
    result = run_publish(hub, tmp_path, repo, "--variant", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert '+  "fusion_config": {' in result.stdout
    assert "PR title: Enable fusion_config: patch_embeddings (hubfuse)" in result.stdout
    assert "base_model: org/dry-model" in result.stdout
    assert hubfuse_prs(api, repo) == []
    assert not api.repo_exists(f"{repo}-fused")


@pytest.mark.parametrize(
    ("token", "code", "needle"),
    [
        (None, 5, "no Hub token"),
        ("hf_not_a_real_token_000000", 5, "refused the token"),
        ("reader", 5, "read-only"),
    ],
)
def test_auth_failures_write_nothing(hub, api, checkpoints, tmp_path, token, code, needle):
    repo = f"org/auth-{code}-{abs(hash(str(token))) % 1000}"
    seed(api, repo, checkpoints(SAFE))
    result = run_publish(hub, tmp_path, repo, token=token)
    assert result.returncode == code, result.stdout + result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert hubfuse_prs(api, repo) == []
    for secret in (hub.alice, hub.reader, "hf_not_a_real_token_000000"):
        assert secret not in result.stdout + result.stderr


def test_repo_and_revision_not_found(hub, api, checkpoints, tmp_path):
    seed(api, "org/revisions-model", checkpoints("plain"))
    missing = run_publish(hub, tmp_path, "org/does-not-exist")
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad_revision = run_publish(hub, tmp_path, "org/revisions-model", "--revision", "no-such-branch")
    assert bad_revision.returncode == 2 and "revision not found" in bad_revision.stderr
    assert run_publish(hub, tmp_path, "not a repo id").returncode == 2


def test_opt_out_is_respected_until_force(hub, api, checkpoints, tmp_path):
    repo = "org/opt-out-model"
    seed(api, repo, checkpoints(SAFE))
    assert run_publish(hub, tmp_path, repo).returncode == 0
    (pr,) = hubfuse_prs(api, repo)
    HfApi(endpoint=hub.endpoint, token=hub.owner).change_discussion_status(
        repo, pr.num, "closed", comment="no thanks"
    )

    again = run_publish(hub, tmp_path, repo, "--json")
    assert again.returncode == 0, again.stderr
    assert [a["status"] for a in json.loads(again.stdout)["actions"]] == ["opted_out"]
    assert len(hubfuse_prs(api, repo)) == 1

    forced = run_publish(hub, tmp_path, repo, "--force", "--json")
    assert [a["status"] for a in json.loads(forced.stdout)["actions"]] == ["opened"]
    assert len([p for p in hubfuse_prs(api, repo) if p.status == "open"]) == 1


def test_new_commit_supersedes_the_old_pr(hub, api, checkpoints, tmp_path):
    repo = "org/moving-model"
    seed(api, repo, checkpoints(SAFE))
    assert run_publish(hub, tmp_path, repo).returncode == 0
    (old,) = hubfuse_prs(api, repo)
    api.upload_file(path_or_fileobj=b"# new card\n", path_in_repo="README.md", repo_id=repo)
    new_sha = api.repo_info(repo).sha

    result = run_publish(hub, tmp_path, repo, "--json")
    assert result.returncode == 0, result.stderr
    statuses = [a["status"] for a in json.loads(result.stdout)["actions"]]
    assert statuses == ["opened", "superseded"]
    prs = {p.num: p for p in hubfuse_prs(api, repo)}
    assert prs[old.num].status == "closed"
    (current,) = [p for p in prs.values() if p.status == "open"]
    assert new_sha in api.get_discussion_details(repo, current.num).events[0].content
    # Our own superseded PR is not an opt-out: a later run still finds its open PR.
    assert [
        a["status"] for a in json.loads(run_publish(hub, tmp_path, repo, "--json").stdout)["actions"]
    ] == ["exists"]


def test_variant_name_taken_by_someone_else(hub, api, checkpoints, tmp_path):
    repo = "org/taken-model"
    seed(api, repo, checkpoints(SAFE))
    api.create_repo(f"{repo}-fused")
    api.upload_file(path_or_fileobj=b"# mine\n", path_in_repo="README.md", repo_id=f"{repo}-fused")
    result = run_publish(hub, tmp_path, repo, "--variant")
    assert result.returncode == 7, result.stderr
    assert "not made by hubfuse" in result.stderr
    assert hubfuse_prs(api, repo) == []  # verified, but nothing written while the plan failed


@pytest.mark.parametrize("status", [503, 429])
def test_server_errors_and_rate_limits_are_retried(hub, api, checkpoints, tmp_path, status):
    repo = f"org/flaky-model-{status}"
    seed(api, repo, checkpoints(SAFE))
    hub.add_faults(
        {"method": "GET", "path": f"/api/models/{repo}$", "action": status, "times": 2, "retry_after": 1}
    )
    result = run_publish(hub, tmp_path, repo)
    hub.clear_faults()
    assert result.returncode == 0, result.stderr
    assert "retry" in result.stderr
    assert len(hubfuse_prs(api, repo)) == 1


def test_gated_repo_without_access_is_an_auth_error(hub, api, checkpoints, tmp_path):
    repo = "org/gated-model"
    seed(api, repo, checkpoints(SAFE))
    api.update_repo_settings(repo, gated="manual")
    outsider = hub.add_token("outsider", role="write")
    result = run_publish(hub, tmp_path, repo, token=outsider)
    assert result.returncode == 5, result.stderr
    assert "gated" in result.stderr
    assert hubfuse_prs(api, repo) == []


def test_hub_down_ends_with_exit_6_and_nothing_half_written(hub, api, checkpoints, tmp_path):
    repo = "org/down-model"
    seed(api, repo, checkpoints(SAFE))
    hub.add_faults(
        {"method": "POST", "path": "/api/models/org/down-model-fused/commit", "action": "drop", "times": 100}
    )
    result = run_publish(hub, tmp_path, repo, "--variant")
    hub.clear_faults()
    assert result.returncode == 6, result.stderr
    assert not api.repo_exists(f"{repo}-fused")  # the empty repo it made was removed again
    rerun = run_publish(hub, tmp_path, repo, "--variant", "--json")
    assert rerun.returncode == 0, rerun.stderr
    statuses = {a["step"]: a["status"] for a in json.loads(rerun.stdout)["actions"]}
    assert statuses == {"config_pr": "exists", "variant": "created"}
    assert len(hubfuse_prs(api, repo)) == 1


def test_weight_upload_dropped_midway_is_retried_without_duplicates(hub, api, checkpoints, tmp_path):
    repo = "org/lfs-model"
    # The fused weights differ from the source's, so they are uploaded (a copy moves no bytes).
    source = checkpoints(SAFE, dtype="bfloat16")
    seed(api, repo, source)
    # The connection drops after part of a weight file's xorb went up (Xet, as against the Hub):
    # the upload is retried, and the half-sent bytes never become a xorb or a blob.
    hub.add_faults(
        {"method": "POST", "path": "/v1/xorbs/default/", "action": "drop", "after_bytes": 4096, "times": 1}
    )
    result = run_publish(hub, tmp_path, repo, "--variant", "--json")
    fired = [f for f in hub.faults() if f.get("fired")]
    hub.clear_faults()
    assert result.returncode == 0, result.stderr
    assert fired, "the fault never fired"
    assert len(api.list_repo_commits(f"{repo}-fused")) == 2  # the initial commit and ours
    variant = downstream(hub, f"{repo}-fused", "main", source / "model.safetensors")
    assert variant["fused"] and variant["exact"]


def test_repo_moving_after_verification_is_verified_again(hub, api, checkpoints, tmp_path, monkeypatch):
    from hubfuse.check.verdict_cache import VerdictCache
    from hubfuse.hub import Hub
    from hubfuse.publish import run as pipeline
    from hubfuse.publish.types import PublishOptions

    repo = "org/racing-model"
    first_sha = seed(api, repo, checkpoints(SAFE))
    verified: list[str] = []
    real_verify = pipeline.verify

    def verify_then_someone_pushes(snapshot, options, artifacts, logs):
        report = real_verify(snapshot, options, artifacts, logs)
        verified.append(snapshot.name)
        if len(verified) == 1:  # a maintainer pushes between our verification and our commit
            api.upload_file(path_or_fileobj=b"# pushed meanwhile\n", path_in_repo="README.md", repo_id=repo)
        return report

    monkeypatch.setattr(pipeline, "verify", verify_then_someone_pushes)
    report = pipeline.publish(
        Hub(endpoint=hub.endpoint, token=hub.alice),
        PublishOptions(repo_id=repo),
        cache=VerdictCache(tmp_path / "verdicts"),
    )
    second_sha = api.repo_info(repo).sha
    assert verified == [first_sha, second_sha]  # the new commit was verified, not written blindly
    assert report.sha == second_sha
    assert [a.status for a in report.actions] == ["opened"]
    (pr,) = hubfuse_prs(api, repo)
    commits = [c.commit_id for c in api.list_repo_commits(repo, revision=f"refs/pr/{pr.num}")]
    assert commits[1] == second_sha


def test_private_repo_needs_access_and_keeps_its_variant_private(hub, api, checkpoints, tmp_path):
    repo = "org/private-model"
    api.create_repo(repo, private=True)
    api.upload_folder(repo_id=repo, folder_path=str(checkpoints(SAFE)))
    stranger = hub.add_token("stranger", role="write")
    denied = run_publish(hub, tmp_path, repo, token=stranger)
    assert denied.returncode == 2, denied.stderr
    assert "not found (or private" in denied.stderr
    allowed = run_publish(hub, tmp_path, repo, "--variant")
    assert allowed.returncode == 0, allowed.stderr
    assert api.repo_info(f"{repo}-fused").private


def test_github_actions_logging_and_step_summary(hub, api, checkpoints, tmp_path):
    repo = "org/actions-model"
    seed(api, repo, checkpoints(SAFE))
    summary = tmp_path / "summary.md"
    env = hubfuse_env(
        hub.endpoint, tmp_path, hub.alice, GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary)
    )
    result = subprocess.run(
        [sys.executable, "-m", "hubfuse", "publish", repo, "--dry-run", "--report-dir", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "::group::check patch_embeddings" in result.stderr and "::endgroup::" in result.stderr
    assert "## hubfuse publish: `org/actions-model`" in summary.read_text()
    for path in [summary, tmp_path / "r" / "report.json", tmp_path / "r" / "report.md"]:
        assert hub.alice not in path.read_text()
    failed = subprocess.run(
        [sys.executable, "-m", "hubfuse", "publish", "org/nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("::error::")


def test_variant_carries_card_metadata_in_a_form_the_hub_accepts(hub, api, checkpoints, tmp_path):
    repo = "org/odd-card-model"
    seed(api, repo, checkpoints(SAFE))
    # Cards from before the Hub validated metadata: an id that is not the Hub's, a broken model-index.
    hub.put_legacy_file(
        repo,
        "README.md",
        b"---\nlicense: Acme Research License v2\npipeline_tag: image-text-to-text\n"
        b"model-index:\n- name: odd\n  results:\n  - task: {}\n---\n# Odd card\n",
    )
    result = run_publish(hub, tmp_path, repo, "--variant", "--json")
    assert result.returncode == 0, result.stderr
    card = api.model_info(f"{repo}-fused").card_data.to_dict()
    assert (card["license"], card["license_name"], card["license_link"]) == (
        "other",
        "acme-research-license-v2",
        f"{hub.endpoint}/{repo}",
    )
    assert card["pipeline_tag"] == "image-text-to-text" and "model-index" not in card


def test_variant_refused_before_any_write_when_the_card_cannot_be_carried(hub, api, checkpoints, tmp_path):
    repo = "org/unlicensable-model"
    seed(api, repo, checkpoints(SAFE))
    hub.put_legacy_file(repo, "README.md", b"---\nlicense: {name: custom, terms: see paper}\n---\n# Card\n")
    result = run_publish(hub, tmp_path, repo, "--variant")
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "license" in error and "--variant" in error and "Traceback" not in result.stderr
    assert hubfuse_prs(api, repo) == []  # not even the config PR
    assert not api.repo_exists(f"{repo}-fused")


def _amplifying_card(width: int = 100) -> bytes:
    """About 1.5 KB of aliases that plain yaml.safe_load turns into width**3 eval results."""
    metric = "metric: &m {type: accuracy, value: 1.0}\n"
    result = (
        "result: &r {task: {type: image-text-to-text}, dataset: {type: d, name: d}, metrics: ["
        + ",".join(["*m"] * width)
        + "]}\n"
    )
    entry = "entry: &e {name: amplified, results: [" + ",".join(["*r"] * width) + "]}\n"
    index = "model-index: [" + ",".join(["*e"] * width) + "]\n"
    return ("---\nlicense: mit\n" + metric + result + entry + index + "---\n# Card\n").encode()


def test_variant_refuses_an_upstream_card_whose_aliases_amplify(hub, api, checkpoints, tmp_path):
    repo = "org/amplified-card-model"
    seed(api, repo, checkpoints(SAFE))
    card = _amplifying_card()
    assert len(card) < 2000
    hub.put_legacy_file(repo, "README.md", card)
    result = run_publish(hub, tmp_path, repo, "--variant")
    assert result.returncode == 2, result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert "YAML aliases expand the metadata beyond 10000 extra nodes" in error, error
    assert "Traceback" not in result.stderr
    assert hubfuse_prs(api, repo) == []
    assert not api.repo_exists(f"{repo}-fused")
