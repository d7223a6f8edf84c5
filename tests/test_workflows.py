"""The GitHub Actions workflows under .github/: actionlint on every file, and act running them.

act runs in host mode (`-P ubuntu-latest=-self-hosted`: no Docker, the steps run as processes here)
on a snapshot of the working tree, against a local hub this test starts and seeds; what the
workflows leave on that hub is then read back through the real `huggingface_hub` client. No remote
action is fetched (act fetches every remote action of a job up front, even one whose `if` is
false): each is replaced by a local stand-in (`--local-repository`). The one for
actions/upload-artifact copies the files to a folder the test reads; the one for actions/setup-python
and actions/cache fails if it ever runs: the setup action finds the installed `hubfuse` on PATH (the
test puts this interpreter's bin folder there) and installs nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from hubfuse.localhub import LocalHub

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
ORG = "hubfuse-demo"  # the organisation workflows/demo.yml selects
LEDGER = f"{ORG}/hubfuse-ledger"
SAFE, UNSAFE, PLAIN = f"{ORG}/tiny-safe", f"{ORG}/tiny-unsafe", f"{ORG}/tiny-plain"
ACT_TIMEOUT_S = 300


def _tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed (it is a test dependency: run scripts/setup.sh)")
    return found


# -- actionlint ---------------------------------------------------------------------------------


def test_actionlint_passes_on_every_workflow():
    files = sorted(WORKFLOWS.glob("*.yml")) + sorted(WORKFLOWS.glob("*.yaml"))
    assert {f.name for f in files} >= {"scheduled.yml", "publish-one.yml", "ci.yml"}
    result = subprocess.run(
        [_tool("actionlint"), "-no-color", *map(str, files)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def _publish_one_steps() -> dict[str, dict]:
    import yaml

    document = yaml.safe_load((WORKFLOWS / "publish-one.yml").read_text())
    return {step.get("name", step.get("uses")): step for step in document["jobs"]["publish"]["steps"]}


def _choose_code(tmp_path: Path, **env: str) -> tuple[int, dict[str, str], str]:
    """publish-one.yml's own "Choose the hubfuse code" script, run by bash as the runner runs it."""
    step = _publish_one_steps()["Choose the hubfuse code"]
    output = tmp_path / "github-output"
    output.write_text("")
    result = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", step["run"]],
        env={"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(output), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    return result.returncode, outputs, result.stdout + result.stderr


def test_publish_one_runs_the_code_of_its_own_commit(tmp_path: Path):
    steps = _publish_one_steps()
    # github.* is the caller's context in a reusable workflow; job.workflow_* is this workflow's.
    chooser = steps["Choose the hubfuse code"]["env"]
    assert chooser["WORKFLOW_SHA"] == "${{ job.workflow_sha }}"
    assert chooser["WORKFLOW_REPOSITORY"] == "${{ job.workflow_repository }}"
    checkout = steps["Check out hubfuse"]["with"]
    assert checkout["repository"] == "${{ steps.code.outputs.repository }}"
    assert checkout["ref"] == "${{ steps.code.outputs.ref }}"

    sha = "0123456789abcdef0123456789abcdef01234567"
    called_by_sha = {
        "WORKFLOW_REPOSITORY": "Owner/hubfuse",
        "WORKFLOW_SHA": sha,
        "CALLER_REPOSITORY": "acme/models",
    }
    for requested in ("", "owner/HUBFUSE"):
        code, outputs, _ = _choose_code(tmp_path, **called_by_sha, REQUESTED_REPOSITORY=requested)
        assert code == 0 and outputs["ref"] == sha
        assert outputs["repository"].lower() == "owner/hubfuse"
    code, outputs, _ = _choose_code(tmp_path, **called_by_sha, REQUESTED_REF="v1.2")
    assert code == 0 and outputs == {"repository": "Owner/hubfuse", "ref": "v1.2"}
    # Another repository's default branch would run unpinned code with the caller's HF_TOKEN.
    code, outputs, log = _choose_code(tmp_path, **called_by_sha, REQUESTED_REPOSITORY="mallory/hubfuse")
    assert code == 2 and outputs == {} and "pass hubfuse_ref" in log
    code, outputs, _ = _choose_code(
        tmp_path, **called_by_sha, REQUESTED_REPOSITORY="mallory/hubfuse", REQUESTED_REF=sha
    )
    assert code == 0 and outputs == {"repository": "mallory/hubfuse", "ref": sha}
    # A runner without job.workflow_* (act): the calling repository, as before.
    code, outputs, _ = _choose_code(tmp_path, CALLER_REPOSITORY="acme/models")
    assert code == 0 and outputs == {"repository": "acme/models", "ref": ""}


# -- act ------------------------------------------------------------------------------------------

NOOP_ACTION = """\
name: stand-in
description: A remote action act must not fetch; it only runs when hubfuse is not installed.
runs:
  using: composite
  steps:
    - shell: bash
      run: echo "stand-in for a remote action" && exit 1
"""

# act copies the repository into the job's workspace only for an actions/checkout step with no
# `repository` or `ref` (it compares them unevaluated); publish-one.yml's has both, so this stand-in
# does what checking out the calling repository does.
CHECKOUT_ACTION = """\
name: checkout stand-in
description: Copies $HUBFUSE_TEST_WORKSPACE (the snapshot act runs on) into the job's workspace.
inputs:
  repository: {required: false}
  ref: {required: false}
  persist-credentials: {required: false}
runs:
  using: composite
  steps:
    - shell: bash
      env:
        REPOSITORY: ${{ inputs.repository }}
        REF: ${{ inputs.ref }}
      run: |
        echo "checkout stand-in: $REPOSITORY@${REF:-default}"
        cp -R "$HUBFUSE_TEST_WORKSPACE"/. "$GITHUB_WORKSPACE"/
"""

UPLOAD_ACTION = """\
name: upload-artifact stand-in
description: Copies the files to $HUBFUSE_TEST_ARTIFACTS/NAME.
inputs:
  name: {required: true}
  path: {required: true}
  if-no-files-found: {required: false}
  retention-days: {required: false}
runs:
  using: composite
  steps:
    - shell: bash
      env:
        NAME: ${{ inputs.name }}
        SOURCE: ${{ inputs.path }}
      run: mkdir -p "$HUBFUSE_TEST_ARTIFACTS/$NAME" && cp -R "$SOURCE"/. "$HUBFUSE_TEST_ARTIFACTS/$NAME/"
"""

# A repository calling the reusable workflow, as another repository would (the path form act resolves).
CALLER = """\
name: caller
on: workflow_dispatch
jobs:
  fuse:
    uses: ./.github/workflows/publish-one.yml
    with:
      repo_id: hubfuse-demo/tiny-safe
      variant: true
      families: patch_embeddings
      downstream_versions: none  # the release matrix has its own tests (tests/test_downstream.py)
      endpoint: ${{ vars.HF_ENDPOINT }}
    secrets:
      HF_TOKEN: ${{ secrets.HF_TOKEN }}
  show:
    needs: fuse
    runs-on: ubuntu-latest
    steps:
      - env:
          VERDICT: ${{ needs.fuse.outputs.verdict }}
          EXIT_CODE: ${{ needs.fuse.outputs.exit_code }}
          PR_URL: ${{ needs.fuse.outputs.pr_url }}
          VARIANT_URL: ${{ needs.fuse.outputs.variant_url }}
          REPORT: ${{ needs.fuse.outputs.report }}
        run: |
          echo "caller saw: verdict=$VERDICT exit_code=$EXIT_CODE pr_url=$PR_URL variant_url=$VARIANT_URL"
          printf '%s' "$REPORT" | python3 -c 'import json, sys; print("caller saw report for", json.load(sys.stdin)["repo_id"])'
"""


@dataclass
class ActRun:
    returncode: int
    output: str
    artifacts: Path
    seconds: float

    def job_results(self) -> list[str]:
        return [line for line in self.output.splitlines() if "🏁" in line]


class Act:
    """act in host mode on a snapshot of the working tree, with its caches and HOME in a temp dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workspace = root / "workspace"
        self.actions = root / "actions"
        self.runs = 0
        self._snapshot()
        self._stand_ins()
        bin_dir = Path(_tool("hubfuse")).parent
        keep = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "RUNNER_", "ACT", "HF_", "HUBFUSE_", "XDG_", "INPUT_"))
        }
        self.env = {
            **keep,
            "HOME": str(root / "home"),
            "XDG_CACHE_HOME": str(root / "cache"),  # act's action cache and the jobs' HF cache
            "XDG_CONFIG_HOME": str(root / "config"),  # no ~/.actrc or actrc from the machine
            "PATH": f"{bin_dir}{os.pathsep}{keep.get('PATH', '')}",  # the setup step finds hubfuse
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HUBFUSE_RETRY_BASE_S": "0.01",
        }
        (root / "home").mkdir()

    def _snapshot(self) -> None:
        """Tracked and untracked-but-not-ignored files, committed in a fresh git repo."""
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO_ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
        for name in filter(None, listed.split("\0")):
            source = REPO_ROOT / name
            if source.is_file():
                target = self.workspace / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        (self.workspace / ".github" / "workflows" / "test-caller.yml").write_text(CALLER)
        git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "commit.gpgsign=false"]
        subprocess.run([*git, "init", "-q", "-b", "main"], cwd=self.workspace, check=True)
        subprocess.run([*git, "add", "-A"], cwd=self.workspace, check=True)
        subprocess.run([*git, "commit", "-q", "-m", "snapshot"], cwd=self.workspace, check=True)

    def _stand_ins(self) -> None:
        for name, text in {
            "noop": NOOP_ACTION,
            "checkout": CHECKOUT_ACTION,
            "upload-artifact": UPLOAD_ACTION,
        }.items():
            (self.actions / name).mkdir(parents=True)
            (self.actions / name / "action.yml").write_text(text)
        (self.root / "empty").write_text("")

    def __call__(
        self,
        event: str,
        workflow: str,
        *,
        secrets: dict[str, str],
        variables: dict[str, str] | None = None,
        inputs: dict[str, str] | None = None,
    ) -> ActRun:
        self.runs += 1
        artifacts = self.root / f"artifacts-{self.runs}"
        secret_file = self.root / f"secrets-{self.runs}"
        secret_file.write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
        empty = str(self.root / "empty")
        command = [
            _tool("act"), event,
            "-W", f".github/workflows/{workflow}",
            "-P", "ubuntu-latest=-self-hosted",
            "--pull=false", "--action-offline-mode", "--no-cache-server",
            "--local-repository", f"actions/checkout@v4={self.actions / 'checkout'}",
            "--local-repository", f"actions/upload-artifact@v4={self.actions / 'upload-artifact'}",
            "--local-repository", f"actions/setup-python@v5={self.actions / 'noop'}",
            "--local-repository", f"actions/cache@v4={self.actions / 'noop'}",
            "--secret-file", str(secret_file),
            "--env-file", empty, "--var-file", empty, "--input-file", empty,
        ]  # fmt: skip
        for key, value in (variables or {}).items():
            command += ["--var", f"{key}={value}"]
        for key, value in (inputs or {}).items():
            command += ["--input", f"{key}={value}"]
        start = time.monotonic()
        try:
            result = subprocess.run(
                command,
                cwd=self.workspace,
                env={
                    **self.env,
                    "HUBFUSE_TEST_ARTIFACTS": str(artifacts),
                    "HUBFUSE_TEST_WORKSPACE": str(self.workspace),
                },
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=ACT_TIMEOUT_S,
            )
        finally:
            secret_file.unlink()
        return ActRun(result.returncode, result.stdout, artifacts, time.monotonic() - start)


@pytest.fixture(scope="module")
def act(tmp_path_factory) -> Act:
    return Act(tmp_path_factory.mktemp("act"))


@pytest.fixture
def hub(tmp_path, checkpoints):
    with LocalHub(tmp_path / "hub") as server:
        server.token = server.add_token("hubfuse-bot", role="write", orgs=[ORG])
        server.api = HfApi(endpoint=server.endpoint, token=server.token)

        def seed(repo_id: str, model_type: str) -> None:
            server.api.create_repo(repo_id)
            server.api.upload_folder(repo_id=repo_id, folder_path=str(checkpoints(model_type)))

        server.seed = seed
        yield server


def pull_requests(api: HfApi, repo_id: str) -> list:
    return list(api.get_repo_discussions(repo_id, discussion_type="pull_request"))


def ledger(hub) -> dict:
    path = hf_hub_download(
        LEDGER,
        "ledgers/demo.json",
        repo_type="dataset",
        endpoint=hub.endpoint,
        token=hub.token,
        force_download=True,
        cache_dir=hub.data_dir.parent / "ledger-cache",
    )
    return json.loads(Path(path).read_text())["records"]


def summary(run: ActRun, artifact: str = "hubfuse-demo-shard-1-of-1") -> dict:
    folder = run.artifacts / artifact
    assert (folder / "summary.json").is_file(), f"no report uploaded as {artifact}\n{run.output}"
    return json.loads((folder / "summary.json").read_text())


def outcomes(report: dict) -> dict[str, str]:
    return {r["repo_id"]: r["outcome"] for r in report["repos"]}


def test_scheduled_run_publishes_and_a_dispatched_rerun_finds_everything_settled(hub, act):
    hub.seed(SAFE, "qwen3_vl")
    hub.seed(UNSAFE, "qwen2_vl")
    hub.seed(PLAIN, "plain")

    # The weekly schedule, pointed at the local hub by repository variables (a schedule has no inputs).
    first = act(
        "schedule",
        "scheduled.yml",
        secrets={"HF_TOKEN": hub.token},
        variables={"HF_ENDPOINT": hub.endpoint, "HUBFUSE_SCHEDULED_SPECS": "workflows/demo.yml"},
    )
    assert first.returncode == 0, first.output
    assert len(first.job_results()) == 2 and all("succeeded" in r for r in first.job_results()), first.output
    assert hub.token not in first.output
    assert "hubfuse is already installed" in first.output  # nothing was installed

    # What it left on the hub, read back through the client.
    api = hub.api
    prs = pull_requests(api, SAFE)
    assert len(prs) == 1 and "(hubfuse)" in prs[0].title and prs[0].status == "open"
    assert api.repo_exists(f"{SAFE}-fused")
    for repo in (UNSAFE, PLAIN):
        assert pull_requests(api, repo) == []
        assert not api.repo_exists(f"{repo}-fused")
    records = ledger(hub)
    assert {repo: r["outcome"] for repo, r in records.items()} == {
        SAFE: "published",
        UNSAFE: "unsafe",
        PLAIN: "not_applicable",
    }

    # The report artifact and the job summary (act prints the summary into its log).
    report = summary(first)
    assert report["exit_code"] == 0 and report["shard"] == "1/1" and not report["dry_run"]
    assert outcomes(report) == {SAFE: "published", UNSAFE: "unsafe", PLAIN: "not_applicable"}
    markdown = (first.artifacts / "hubfuse-demo-shard-1-of-1" / "summary.md").read_text()
    for repo in (SAFE, UNSAFE, PLAIN):
        assert f"`{repo}`" in markdown
        assert f"`{repo}`" in first.output  # the step summary as act shows it
    assert "## hubfuse plan" in first.output

    # A manual rerun: endpoint as a dispatch input, with the rehearsal token (and no HF_TOKEN at all).
    ledger_commits = len(api.list_repo_commits(LEDGER, repo_type="dataset"))
    second = act(
        "workflow_dispatch",
        "scheduled.yml",
        secrets={"HF_REHEARSAL_TOKEN": hub.token},
        inputs={"spec": "workflows/demo.yml", "dry_run": "false", "endpoint": hub.endpoint},
    )
    assert second.returncode == 0, second.output
    assert hub.token not in second.output
    report = summary(second)
    assert report["dry_run"] is False
    assert outcomes(report) == {SAFE: "skipped", UNSAFE: "skipped", PLAIN: "skipped"}
    assert {r["detail"] for r in report["repos"]} == {
        "ledger: published",
        "ledger: unsafe",
        "ledger: not_applicable",
    }
    assert "skipped: 3" in second.output
    assert len(pull_requests(api, SAFE)) == 1
    assert len(api.list_repo_commits(LEDGER, repo_type="dataset")) == ledger_commits


def test_nothing_to_do_skips_the_run_job_and_a_kill_switch_or_a_failing_repo_show(hub, act):
    variables = {"HF_ENDPOINT": hub.endpoint, "HUBFUSE_SCHEDULED_SPECS": "workflows/demo.yml"}

    # No repo: the plan is an empty matrix, and the run job is skipped rather than failing on it.
    empty = act("schedule", "scheduled.yml", secrets={"HF_TOKEN": hub.token}, variables=variables)
    assert empty.returncode == 0, empty.output
    assert "shards=0" in empty.output
    assert len(empty.job_results()) == 1, empty.output  # only the plan job ran

    hub.seed(PLAIN, "plain")

    # Exit 8 (stopped by the kill switch): the job stays green, with a warning, and says what is left.
    killed = act(
        "schedule",
        "scheduled.yml",
        secrets={"HF_TOKEN": hub.token},
        variables={**variables, "HUBFUSE_KILL_SWITCH": "1"},
    )
    assert killed.returncode == 0, killed.output
    assert "hubfuse stopped early" in killed.output
    report = summary(killed)
    assert report["exit_code"] == 8 and "kill switch" in report["stopped"]
    assert outcomes(report) == {PLAIN: "not_reached"}
    assert not hub.api.repo_exists(LEDGER, repo_type="dataset")

    # Exit 3 (a repo errored): the job fails, and the report is still uploaded.
    # repo_info of the default branch, the first thing hubfuse asks about a repo it publishes.
    hub.add_faults({"path": f"^/api/models/{PLAIN}$", "action": 403, "times": None})
    failed = act("schedule", "scheduled.yml", secrets={"HF_TOKEN": hub.token}, variables=variables)
    assert failed.returncode != 0, failed.output
    assert any("failed" in r for r in failed.job_results()), failed.output
    assert "hubfuse run failed" in failed.output
    report = summary(failed)
    assert report["exit_code"] == 3
    assert outcomes(report) == {PLAIN: "error"}
    assert hub.token not in killed.output + failed.output
    assert not any(hub.token in f.read_text() for f in failed.artifacts.rglob("*") if f.is_file())


def test_publish_one_is_callable_and_reports_its_outputs(hub, act):
    hub.seed(SAFE, "qwen3_vl")
    run = act(
        "workflow_dispatch",
        "test-caller.yml",
        secrets={"HF_TOKEN": hub.token},
        variables={"HF_ENDPOINT": hub.endpoint},
    )
    assert run.returncode == 0, run.output
    assert hub.token not in run.output
    prs = pull_requests(hub.api, SAFE)
    assert len(prs) == 1 and "(hubfuse)" in prs[0].title
    assert hub.api.repo_exists(f"{SAFE}-fused")
    pr_url = f"{hub.endpoint}/{SAFE}/discussions/{prs[0].num}"
    assert f"verdict=safe exit_code=0 pr_url={pr_url} variant_url={hub.endpoint}/{SAFE}-fused" in run.output
    assert f"caller saw report for {SAFE}" in run.output
    report = json.loads(
        (run.artifacts / "hubfuse-publish-hubfuse-demo-tiny-safe" / "report.json").read_text()
    )
    assert report["verdict"] == "safe"


# -- the newest transformers -------------------------------------------------------------------


def test_newest_transformers_workflow_is_scheduled_with_read_only_permissions_and_no_secrets():
    import yaml

    text = (WORKFLOWS / "newest-transformers.yml").read_text()
    document = yaml.safe_load(text)
    triggers = document[True]  # YAML 1.1 reads the `on:` key as True
    assert triggers["schedule"] and "workflow_dispatch" in triggers
    assert document["permissions"] == {"contents": "read"}
    assert "secrets." not in text
    (step,) = [s for s in document["jobs"]["core-tests"]["steps"] if "run" in s]
    assert step["run"] == "scripts/test-newest.sh"  # what scripts/test.sh runs after the main suite


def test_newest_transformers_workflow_runs_the_core_tests_on_the_newest_release(act):
    # The environment the workflow builds: built here once (a no-op when it is up to date) and lent
    # to act's workspace, where setup.sh and setup-newest.sh then find nothing to install.
    subprocess.run([str(REPO_ROOT / "scripts" / "setup-newest.sh")], check=True, timeout=1800)
    for venv in (".venv", ".venv-newest"):
        if not (act.workspace / venv).exists():
            (act.workspace / venv).symlink_to(REPO_ROOT / venv)
    newest = subprocess.run(
        [str(REPO_ROOT / ".venv-newest" / "bin" / "python"), "-c",
         "import importlib.metadata as m; print(m.version('transformers'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    test = "tests/test_cli_check.py::test_unknown_family"
    run = act("workflow_dispatch", "newest-transformers.yml", secrets={}, inputs={"tests": test})
    assert run.returncode == 0, run.output[-6000:]
    assert f"core tests under transformers {newest} (left out: " in run.output
    # Hub kernels go off only where `kernels` had to be left out (an index without it).
    left_out = (REPO_ROOT / ".venv-newest" / "left-out.txt").read_text().split()
    kernels_off = any(r.lower().startswith("kernels") for r in left_out)
    assert (", USE_HUB_KERNELS=0" if kernels_off else "") + f": {test}" in run.output
    assert ("USE_HUB_KERNELS=0" in run.output) == kernels_off
    assert "1 passed" in run.output

    bad = act("workflow_dispatch", "newest-transformers.yml", secrets={}, inputs={"tests": "../etc/passwd"})
    assert bad.returncode != 0
    assert "'../etc/passwd' is not a test file or node id of this repository" in bad.output
