"""Trust nothing hubfuse did not write (issue 8): spoofed PRs, variant names, tokens, could-not-check
verdicts, plan/run selection, tolerant ledgers, the kill switch, reports of failed publishes.
Some tests cover several items in one scenario, to keep the number of verifications low.

Every publish and batch run is a `hubfuse` subprocess against one local hub, as a user runs it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from cli_env import hubfuse_env, run_hubfuse
from huggingface_hub import CommitOperationAdd, HfApi

from hubfuse.localhub import LocalHub
from hubfuse.localhub.auth import AuthStore

SAFE = "qwen3_vl"
FAMILY = "patch_embeddings"
# An OAuth-style token with characters every escaping changes: it must vanish in every form.
BOT_TOKEN = f"hf_oauth_{secrets.token_hex(12)}/+=\"'\\x"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        AuthStore(server.data_dir / "auth.json").add_token("bot", "write", ["org", "ns"], token=BOT_TOKEN)
        server.bot = BOT_TOKEN
        server.owner = server.add_token("owner", role="write", orgs=["org", "acme"])
        server.alice = server.add_token("alice", role="write")
        server.mallory = server.add_token("mallory", role="write")
        yield server


def api_for(hub, token: str) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=token)


def seed(hub, repo_id: str, folder: Path, token: str | None = None) -> str:
    api = api_for(hub, token or hub.owner)
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="seed")
    return api.repo_info(repo_id).sha


def hubfuse(
    hub, home: Path, *args: str, token: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    extra = {"HUBFUSE_RETRIES": "2", "HUBFUSE_LEDGER_FLUSH_EVERY": "1", **env}
    return run_hubfuse(*args, env=hubfuse_env(hub.endpoint, home, token or hub.bot, **extra))


def statuses(document: dict) -> list[str]:
    return [a["status"] for a in document["actions"]]


def outcomes(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {r["repo_id"]: r["outcome"] for r in json.loads(result.stdout)["repos"]}


def pull_requests(hub, repo_id: str) -> list:
    return list(api_for(hub, hub.owner).get_repo_discussions(repo_id, discussion_type="pull_request"))


def secret_forms(secret: str) -> set[str]:
    return {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], quote(secret, safe=""), quote_plus(secret)}


# -- 1 + 4 + 11: spoofed PRs; a token with a trailing newline; a publish failing part way -------


def test_own_prs_only_token_never_shows_and_a_failed_publish_still_reports(hub, checkpoints, tmp_path):
    from hubfuse.render.cards import pr_title
    from hubfuse.render.markers import PR_MARKER, Marker

    repo = "org/spoofed"
    sha = seed(hub, repo, checkpoints(SAFE))
    mallory = api_for(hub, hub.mallory)
    config = json.loads((checkpoints(SAFE) / "config.json").read_text())
    edited = json.dumps({**config, "fusion_config": {FAMILY: True}}, indent=2).encode()
    copied = f"Copied text.\n\n<!-- {PR_MARKER}: {Marker(sha, (FAMILY,), '0').to_json()} -->\n"
    for close in (False, True):  # one left open ("PR exists"), one closed by its author ("opt-out")
        pr = mallory.create_commit(
            repo,
            [CommitOperationAdd("config.json", edited)],
            commit_message=pr_title([FAMILY]),
            commit_description=copied,
            create_pr=True,
        )
        if close:
            mallory.change_discussion_status(repo, pr.pr_num, "closed")

    # The variant's commit never gets through: the PR is opened, then the publish fails (exit 6).
    hub.add_faults(
        {"method": "POST", "path": f"/api/models/{repo}-fused/commit", "action": "drop", "times": 100}
    )
    report_dir = tmp_path / "report"
    token = hub.bot + "\n"
    result = hubfuse(
        hub, tmp_path, "publish", repo, "--variant", "--json", "--report-dir", str(report_dir), token=token
    )
    hub.clear_faults()
    assert result.returncode == 6, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: commit to {repo}-fused")
    ours = [p for p in pull_requests(hub, repo) if p.author == "bot"]
    assert len(ours) == 1 and ours[0].status == "open"  # despite the copies, its own PR
    for document in (json.loads(result.stdout), json.loads((report_dir / "report.json").read_text())):
        assert document["verdict"] == "safe" and document["check"]["families"]
        assert [(a["step"], a["status"]) for a in document["actions"]] == [("config_pr", "opened")]
        assert document["actions"][0]["url"].endswith(f"/discussions/{ours[0].num}")
        assert document["error"]["exit_code"] == 6 and f"{repo}-fused" in document["error"]["message"]
    assert f"Failed: commit to {repo}-fused" in (report_dir / "report.md").read_text()

    again = hubfuse(hub, tmp_path, "publish", repo, "--json", token=token)
    assert again.returncode == 0, again.stderr
    assert statuses(json.loads(again.stdout)) == ["exists"]  # its own PR, recognised by author

    details = api_for(hub, hub.owner).get_discussion_details(repo, ours[0].num)
    texts = [result.stdout, result.stderr, again.stdout, again.stderr, details.events[0].content]
    texts += [path.read_text() for path in report_dir.rglob("*") if path.is_file()]
    for form in secret_forms(hub.bot) | secret_forms(token):
        assert not any(form in text for text in texts), form


def test_redaction_covers_every_form_of_a_registered_secret():
    from hubfuse.log import redact, register_secret

    token = f'hf_oauth_{secrets.token_hex(10)}/+&"\\'
    register_secret(token + "\n")
    for form in secret_forms(token) | secret_forms(token + "\n"):
        assert token[:16] not in redact(f"header {form} rejected"), form
    unregistered = f"hf_oauth_{secrets.token_hex(16)}"
    assert unregistered not in redact(f"Bearer {unregistered}")


# -- 2 + 9: variant names ------------------------------------------------------------------------


def test_two_sources_never_share_a_variant(hub, checkpoints, tmp_path):
    seed(hub, "acme/dup", checkpoints(SAFE))
    seed(hub, "alice/dup", checkpoints(SAFE), token=hub.alice)
    spec = tmp_path / "dup.yml"
    spec.write_text(
        "repos: {ids: [acme/dup, alice/dup]}\n"
        "variant: {enabled: true, namespace: ns, name_template: '{name}-fused'}\n"
    )
    result = hubfuse(hub, tmp_path, "run", str(spec), "--json", "--ledger-dir", str(tmp_path / "ledgers"))
    assert result.returncode == 7, result.stderr
    assert outcomes(result) == {"acme/dup": "published", "alice/dup": "conflict"}
    (conflict,) = [r for r in json.loads(result.stdout)["repos"] if r["outcome"] == "conflict"]
    assert "ns/dup-fused is the variant of acme/dup" in conflict["detail"]

    owner = api_for(hub, hub.owner)
    assert owner.model_info("ns/dup-fused").card_data["hubfuse"]["source"] == "acme/dup"
    assert len(owner.list_repo_commits("ns/dup-fused")) == 2  # the initial commit and acme/dup's
    assert pull_requests(hub, "alice/dup") == []  # refused before anything was written

    single = hubfuse(hub, tmp_path, "publish", "alice/dup", "--variant-repo", "ns/dup-fused", "--force")
    assert single.returncode == 7, single.stderr  # --force never takes another source's variant
    assert len(owner.list_repo_commits("ns/dup-fused")) == 2

    # A member of the variant's namespace edits it, marker and all: no longer known to be hubfuse's.
    member = api_for(hub, hub.add_token("member", role="write", orgs=["ns"]))
    card = member.hf_hub_download("ns/dup-fused", "README.md", cache_dir=tmp_path / "dl")
    member.upload_file(
        path_or_fileobj=Path(card).read_bytes() + b"\nEdited.\n",
        path_in_repo="README.md",
        repo_id="ns/dup-fused",
    )
    edited = hubfuse(hub, tmp_path, "publish", "acme/dup", "--variant-repo", "ns/dup-fused")
    assert edited.returncode == 7 and "not made by hubfuse" in edited.stderr, edited.stderr


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ("{name}-{foo}", "unknown placeholder {foo}"),
        ("{name", "expected '}' before end of string"),
        ("{name}/x", "not a valid repo name"),
        ("fused", "must contain {name}"),
    ],
)
def test_validate_rejects_bad_name_templates(hub, tmp_path, template, needle):
    spec = tmp_path / "bad.yml"
    spec.write_text(f"repos: {{ids: [org/x]}}\nvariant:\n  enabled: true\n  name_template: '{template}'\n")
    commands = ["validate", "run", "plan"] if template == "{name}-{foo}" else ["validate"]
    for command in commands:  # a template `validate` passes never crashes `run`
        result = hubfuse(hub, tmp_path, command, str(spec))
        assert result.returncode == 2, (command, result.stderr)
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {spec}:4: variant.name_template") and needle in line, line
    if template == "{name}-{foo}":
        published = hubfuse(hub, tmp_path, "publish", "org/x", "--variant-name-template", template)
        assert published.returncode == 2 and needle in published.stderr


def test_name_templates_name_the_source_namespace(tmp_path):
    from hubfuse.naming import variant_repo_id

    assert variant_repo_id("acme/dup", "{namespace}-{name}-fused", "ns") == "ns/acme-dup-fused"
    assert variant_repo_id("alice/dup", "{org}-{name}-fused", "ns") == "ns/alice-dup-fused"
    assert variant_repo_id("alice/dup") == "alice/dup-fused"
    spec = tmp_path / "ok.yml"
    spec.write_text("repos: {ids: [org/x]}\nvariant: {enabled: true, name_template: '{org}-{name}-fused'}\n")
    result = run_hubfuse("validate", str(spec))
    assert result.returncode == 0, result.stderr


# -- 6 + 9: one selection for plan and run; a tolerant ledger -------------------------------------


@pytest.fixture(scope="module")
def no_config_repos(hub):
    """Repos without config.json: every publish of them fails at once, with no worker started."""
    owner = api_for(hub, hub.owner)
    names = [f"org/sel-{i}" for i in range(8)]
    for name in names:
        owner.create_repo(name)
        owner.upload_file(path_or_fileobj=b"no model here\n", path_in_repo="NOTES.md", repo_id=name)
    return {name: owner.repo_info(name).sha for name in names}


def test_plan_matrix_and_run_shards_select_the_same_repos(hub, no_config_repos, tmp_path):
    spec = tmp_path / "sel.yml"
    spec.write_text("repos: {author: org, include: ['org/sel-*']}\nlimits: {max_repos: 3}\n")
    planned = hubfuse(hub, tmp_path, "plan", str(spec), "--json", "--max-per-shard", "2")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["count"] == 3 and len(plan["matrix"]["include"]) == 2
    ran: set[str] = set()
    for entry in plan["matrix"]["include"]:
        result = hubfuse(
            hub, tmp_path, "run", str(spec), "--shard", entry["shard"], "--dry-run", "--json",
            "--ledger-dir", str(tmp_path / "ledgers"),
        )  # fmt: skip
        assert result.returncode == 3, result.stderr  # each repo errs: no config.json
        repos = set(outcomes(result))
        assert len(repos) == entry["repos"], entry
        ran |= repos
    assert ran == {r["repo_id"] for r in plan["repos"]}


def test_ledger_records_are_read_tolerantly(hub, no_config_repos, tmp_path):
    from hubfuse import __version__
    from hubfuse.check.downstream import DownstreamPlan, matrix_digest
    from hubfuse.check.modes import installed_versions

    settled, broken, fresh = "org/sel-0", "org/sel-1", "org/sel-2"
    spec = tmp_path / "tolerant.yml"
    spec.write_text(f"repos: {{ids: [{settled}, {broken}, {fresh}]}}\nfamilies: [{FAMILY}]\n")
    # The run's downstream matrix is off (tests/conftest.py); a record names the matrix it holds for.
    matrix = matrix_digest(DownstreamPlan("none"))
    versions = {"hubfuse": __version__, **installed_versions(), "downstream": matrix}
    ledger = tmp_path / "ledgers" / "tolerant.json"
    ledger.parent.mkdir()
    records = {
        settled: {
            "repo_id": settled,
            "sha": no_config_repos[settled],
            "families": [FAMILY],
            **versions,
            "outcome": "published",
            "reviewed_by": "a newer hubfuse",  # a field this version does not know
        },
        broken: {"repo_id": broken, "families": "not a list"},
    }
    ledger.write_text(json.dumps({"format": 1, "records": records}))

    result = hubfuse(hub, tmp_path, "run", str(spec), "--json", "--ledger-dir", str(ledger.parent))
    assert result.returncode == 3, result.stderr  # the two unsettled repos have no config.json
    assert outcomes(result) == {settled: "skipped", broken: "error", fresh: "error"}
    after = json.loads(ledger.read_text())["records"]
    assert after[settled]["reviewed_by"] == "a newer hubfuse" and after[settled]["outcome"] == "published"
    assert after[broken]["outcome"] == "error" and after[fresh]["outcome"] == "error"


# -- 5: could-not-check is not unsafe -------------------------------------------------------------


def test_could_not_check_is_retried_never_cached_or_final(hub, checkpoints, tmp_path):
    repo = "org/timing-out"
    seed(hub, repo, checkpoints(SAFE))
    spec = tmp_path / "slow.yml"
    spec.write_text(f"repos: {{ids: [{repo}]}}\n")
    ledger_dir = tmp_path / "ledgers"

    def run(timeout: str) -> subprocess.CompletedProcess[str]:
        return hubfuse(
            hub, tmp_path, "run", str(spec), "--json", "--ledger-dir", str(ledger_dir), "--timeout", timeout
        )

    timed_out = run("0.01")  # a real worker timeout
    assert timed_out.returncode == 3, timed_out.stderr
    assert outcomes(timed_out) == {repo: "error"}
    assert "timed out" in json.loads(timed_out.stdout)["repos"][0]["detail"]
    record = json.loads((ledger_dir / "slow.json").read_text())["records"][repo]
    assert record["outcome"] == "error" and record["errors"] == 1
    assert record["retry_after"] > time.time() + 600  # bounded back-off: one hour first
    assert not list((tmp_path / "verdicts").glob("*.json"))  # never cached

    backing_off = run("0.01")
    assert backing_off.returncode == 0, backing_off.stderr
    assert outcomes(backing_off) == {repo: "deferred"}

    retried = run("600")  # a larger timeout retries at once
    assert retried.returncode == 0, retried.stderr
    assert outcomes(retried) == {repo: "published"}
    assert json.loads((ledger_dir / "slow.json").read_text())["records"][repo]["outcome"] == "published"


# -- 10: the kill switch between two writes -------------------------------------------------------


def test_kill_switch_engaged_between_two_writes_stops_the_second(hub, checkpoints, tmp_path):
    first, second, ledger = "org/kill-a", "org/kill-b", "org/kill-ledger"
    for repo in (first, second):
        seed(hub, repo, checkpoints(SAFE))
    owner = api_for(hub, hub.owner)
    owner.create_repo(ledger, repo_type="dataset")
    spec = tmp_path / "kill.yml"
    spec.write_text(f"repos: {{ids: [{first}, {second}]}}\nledger: {{repo: {ledger}}}\n")
    # The second repo's first read answers 503 with Retry-After: 3 s more between the two writes.
    hub.add_faults(
        {"method": "GET", "path": f"/api/models/{second}$", "action": 503, "after": 1, "retry_after": 3}
    )
    env = hubfuse_env(hub.endpoint, tmp_path, hub.bot, HUBFUSE_RETRIES="3")
    process = subprocess.Popen(
        [sys.executable, "-m", "hubfuse", "run", str(spec), "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    engaged = threading.Event()

    def engage_after_the_first_write() -> None:
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            if pull_requests(hub, first):
                owner.upload_file(
                    path_or_fileobj=b"stop\n", path_in_repo="KILL_SWITCH", repo_id=ledger, repo_type="dataset"
                )
                engaged.set()
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=engage_after_the_first_write)
    watcher.start()
    stdout, stderr = process.communicate(timeout=600)
    watcher.join()
    hub.clear_faults()
    assert engaged.is_set()
    assert process.returncode == 8, stderr
    summary = json.loads(stdout)
    assert "kill switch" in summary["stopped"]
    assert {r["repo_id"]: r["outcome"] for r in summary["repos"]} == {
        first: "published",
        second: "not_reached",
    }
    assert pull_requests(hub, second) == []
