"""The main job on the embedded default: everything `hubfuse publish` does, offline.

Starts the local hub on loopback, seeds it with a tiny demo model (random weights, a real
architecture from the installed transformers), publishes it with a variant, and proves the
downstream side: a fresh process's plain `from_pretrained` of the PR revision gets the fused
modules. Everything lives under one data folder; a second run finds the work already done.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from hubfuse import settings
from hubfuse.check.downstream import DownstreamPlan
from hubfuse.cli.options import downstream_plan
from hubfuse.log import log
from hubfuse.publish.types import Action, PublishOptions, PublishReport

DEMO_USER = "demo"
DEMO_ORG = "hubfuse-demo"
DEMO_REPO = f"{DEMO_ORG}/tiny-vision-language"
# The demo's downstream matrix: one release before fusion and the newest, to stay fast on a first
# run (two environments). The product default checks every release that reads fusion_config, and
# would refuse this Qwen3-VL PR: releases 5.6 to 5.20 crash without torchvision.
DEMO_DOWNSTREAM_VERSIONS = ("5.5.4", "5.24.0")


def demo_downstream() -> DownstreamPlan:
    """$HUBFUSE_DOWNSTREAM_VERSIONS when set, else the demo's explicit small matrix."""
    if settings.DOWNSTREAM_DEFAULT.value():
        return downstream_plan(None)
    versions = DEMO_DOWNSTREAM_VERSIONS
    return DownstreamPlan(f"demo subset {', '.join(versions)} (not the full default matrix)", versions)


def _demo_token(hub_server: object, data_dir: Path) -> str:
    token_file = data_dir / "demo-token"
    if token_file.is_file():
        return token_file.read_text().strip()
    token = hub_server.add_token(DEMO_USER, role="write", orgs=[DEMO_ORG])  # type: ignore[attr-defined]
    token_file.write_text(token)
    token_file.chmod(0o600)
    return token


def _seed(hub: object, data_dir: Path) -> None:
    from hubfuse.hub import Hub
    from hubfuse.testing import synth

    assert isinstance(hub, Hub)
    if hub.exists(DEMO_REPO):
        return
    with log.group(f"seed {DEMO_REPO} with a tiny random-weight model"):
        folder = synth.write_demo_checkpoint(data_dir / "demo-model")
        hub.create_repo(DEMO_REPO)
        hub.call(
            f"upload {DEMO_REPO}",
            lambda: hub.api.upload_folder(
                repo_id=DEMO_REPO, folder_path=str(folder), commit_message="Tiny demo model"
            ),
        )


def _downstream_proof(endpoint: str, token: str, revision: str) -> str:
    """A fresh process, like any user: plain from_pretrained, no fusion argument."""
    script = textwrap.dedent(
        f"""
        from transformers import AutoConfig, AutoModel
        import transformers
        config = AutoConfig.from_pretrained({DEMO_REPO!r}, revision={revision!r})
        cls = getattr(transformers, config.architectures[0])
        model = cls.from_pretrained({DEMO_REPO!r}, revision={revision!r})
        from hubfuse.check.transformers_fusion import fused_modules
        print(",".join(fused_modules(model)) or "-")
        """
    )
    env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": token, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600, check=False
    )
    if result.returncode != 0:
        return "failed: " + (result.stderr.strip().splitlines() or ["?"])[-1]
    return result.stdout.strip().splitlines()[-1]


def run_demo(data_dir: Path) -> PublishReport:
    data_dir.mkdir(parents=True, exist_ok=True)
    # The demo never touches the user's own Hugging Face cache or login.
    os.environ["HF_HOME"] = str(data_dir / "hf-home")
    os.environ["HF_XET_CACHE"] = str(data_dir / "hf-home" / "xet")  # uploads go through Xet, as on the Hub

    from hubfuse.hub import Hub
    from hubfuse.localhub import LocalHub
    from hubfuse.publish.rendering import local_hub_pages
    from hubfuse.publish.run import publish

    with LocalHub(data_dir / "hub") as hub_server:
        endpoint = hub_server.endpoint
        token = _demo_token(hub_server, data_dir)
        log.info(f"local hub at {endpoint} (data in {data_dir / 'hub'})")
        hub = Hub(endpoint=endpoint, token=token)
        _seed(hub, data_dir)
        downstream = demo_downstream()
        log.info(f"downstream matrix: {downstream.describe()}")
        report = publish(
            hub,
            PublishOptions(repo_id=DEMO_REPO, variant=True, downstream=downstream),
            logs_dir=data_dir / "report" / "logs",
        )

        pr_revision = next(
            (
                f"refs/pr/{a.url.rsplit('/', 1)[-1]}"
                for a in report.actions
                if a.step == "config_pr" and a.url and "/discussions/" in a.url
            ),
            None,
        )
        if pr_revision and report.check and report.check.verdict == "safe":
            with log.group(f"downstream: plain from_pretrained({DEMO_REPO!r}, revision={pr_revision!r})"):
                fused = _downstream_proof(endpoint, token, pr_revision)
            report.actions.append(
                Action("downstream", "checked", f"fused modules after a plain load: {fused}")
            )
        report.pages = local_hub_pages(endpoint, report)
    port = endpoint.rsplit(":", 1)[-1]
    log.info(
        "the local hub stopped; to open the pages below, serve it again on the same port:"
        f" hubfuse hub serve --data {data_dir / 'hub'} --port {port}"
    )
    return report
