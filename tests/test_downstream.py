"""The downstream matrix: real transformers releases, each in its own cached environment.

The environments live in the user's cache folder (tests/conftest.py), so only a machine's first
run creates them (uv, from the package index; torch is shared, never downloaded). The releases:
5.5.4 (before fusion_mapping.py), 5.13.1 (5.6-5.20: the fusion's patching path imports
torchvision), 5.24.0 (the installed one). Expected outcomes: /work/shared/fusion-facts.md.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_env import hubfuse_env, run_hubfuse
from huggingface_hub import HfApi

from hubfuse.check import env_commands, envs, envs_root, shared_torch, uv
from hubfuse.check.downstream import (
    DEFAULT_ENV_VAR,
    DownstreamPlan,
    MatrixInputs,
    resolve_plan,
    run_matrix,
    summarize,
)
from hubfuse.check.verdict import CheckReport, LoadCheck
from hubfuse.configedit import set_top_level_key
from hubfuse.errors import BadInputError
from hubfuse.localhub import LocalHub
from hubfuse.render.report import render_text
from hubfuse.render.tables import release_story

VERSIONS = ("5.5.4", "5.13.1", "5.24.0")
SMALL_MATRIX = " || ".join(f"=={v}" for v in VERSIONS)


def _config_only_copy(source: Path, target: Path) -> Path:
    """The checkpoint as a user sees it after the config PR: fusion_config in config.json."""
    target.mkdir()
    for path in source.iterdir():
        if path.name != "config.json":
            (target / path.name).symlink_to(path.resolve())
    edited = set_top_level_key(
        (source / "config.json").read_text(), "fusion_config", {"patch_embeddings": True}
    )
    (target / "config.json").write_text(edited)
    return target


def test_plans_come_from_the_package_index(monkeypatch):
    monkeypatch.delenv(DEFAULT_ENV_VAR)
    default = resolve_plan(None)
    assert default.selection == "default"
    # The newest release before fusion_mapping.py, then the latest patch of every later minor.
    assert default.gating[:2] == ("5.5.4", "5.6.2")
    assert {"5.13.1", "5.20.2", "5.24.0"} <= set(default.gating)
    assert not {"5.6.0", "5.6.1", "5.5.3", "5.0.0"} & set(default.gating)
    assert default.outside == ()

    narrowed = resolve_plan(">=5.21")
    assert narrowed.gating[0] == "5.21.1" and "5.24.0" in narrowed.gating
    assert "5.13.1" in narrowed.outside and "5.21.1" not in narrowed.outside  # reported, not gating

    monkeypatch.setenv(DEFAULT_ENV_VAR, SMALL_MATRIX)
    assert resolve_plan(None).gating == VERSIONS
    assert resolve_plan("==5.24.0").outside == ("5.5.4", "5.13.1")
    assert not resolve_plan("none").enabled
    with pytest.raises(BadInputError, match="not a PEP 440 specifier"):
        resolve_plan("five-ish")
    with pytest.raises(BadInputError, match="matches no transformers release"):
        resolve_plan("==0.0.1")


def test_qwen2_5_vl_is_ignored_then_crashes_then_silently_random(checkpoints, tmp_path):
    source = checkpoints("qwen2_5_vl")
    inputs = MatrixInputs(source, _config_only_copy(source, tmp_path / "downstream"), None)
    columns, cells, variant_cells = run_matrix(
        DownstreamPlan("test", VERSIONS), inputs, tmp_path, timeout=600, jobs=2
    )
    base = {c.transformers: c for c in cells if c.env == envs.BASE_ENV}
    assert {v: c.outcome for v, c in base.items()} == {
        "5.5.4": "ignored",
        "5.13.1": "crash",
        "5.24.0": "unsafe",
    }
    assert "No module named 'torchvision'" in base["5.13.1"].reason
    assert "patch_embed.linear_proj.weight" in base["5.24.0"].reason
    assert variant_cells == []
    if columns[envs.TORCHVISION_ENV] is not None:  # PyPI's torchvision does not load beside a CPU torch
        assert "torchvision" in columns[envs.TORCHVISION_ENV]
        assert {c.env for c in cells} == {envs.BASE_ENV}
    else:  # with torchvision: 5.13 maps Qwen2_5_VLModel to Qwen2VLModel and loads a random patch embed
        with_tv = {c.transformers: c.outcome for c in cells if c.env == envs.TORCHVISION_ENV}
        assert with_tv["5.13.1"] == "unsafe" and with_tv["5.24.0"] == "unsafe"

    # Each environment runs the installed torch through the shared folder, never its own copy.
    env, created = envs.ensure_env("5.24.0")
    assert created is None
    torch_file = subprocess.run(
        [str(env.python), "-I", "-c", "import torch; print(torch.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=shared_torch.shared_torch_environ(),
    ).stdout.strip()
    assert "/shared-torch-" in torch_file
    # Without the caller naming its torch, the environment has none: it holds no path of its own.
    alone = subprocess.run([str(env.python), "-I", "-c", "import torch"], capture_output=True, text=True)
    assert alone.returncode != 0 and "No module named 'torch'" in alone.stderr
    assert not list(env.path.glob("lib/python*/site-packages/torch"))


def test_a_release_that_does_not_know_the_architecture_is_unsupported_not_ignored(checkpoints, tmp_path):
    # qwen4_exp is newer than 5.13.1: that release cannot load the model at all, fusion_config or not.
    source = checkpoints("qwen4_exp")
    inputs = MatrixInputs(source, _config_only_copy(source, tmp_path / "downstream"), None)
    columns, cells, _ = run_matrix(DownstreamPlan("test", ("5.13.1",)), inputs, tmp_path, timeout=600, jobs=1)
    (cell,) = [c for c in cells if c.env == envs.BASE_ENV]
    assert cell.outcome == "unsupported"
    assert cell.reason.startswith(
        "transformers 5.13.1 does not know qwen4_exp/Qwen4ExpForConditionalGeneration"
    )
    assert summarize(cells) == []  # it does not block the publish ...
    assert summarize(cells, outcomes=("unsupported",)) == [  # ... and is never counted as proven
        f"unsupported on transformers 5.13.1 (base): {cell.reason}"
    ]
    story = release_story(LoadCheck(versions=["5.13.1"], environments=columns, cells=cells))
    assert story[0] == f"not proven on transformers 5.13.1: unsupported, {cell.reason}"
    assert not any(line.startswith(("safe", "unaffected")) for line in story)


def test_a_family_unsafe_on_the_installed_release_still_gets_every_cell(checkpoints, tmp_path):
    from cli_env import run_hubfuse

    from hubfuse.check import transformers_fusion

    env = {**hubfuse_env("http://127.0.0.1:9", tmp_path, None), DEFAULT_ENV_VAR: "none"}
    result = run_hubfuse(
        "check", str(checkpoints("qwen2_5_vl")), "--downstream-versions", "==5.5.4 || ==5.24.0", "--json",
        env=env,
    )  # fmt: skip
    report = json.loads(result.stdout)
    (family,) = report["families"]
    # 5.13-5.24 load its patch embedding randomly (the sticky class-name mapping); 5.25 exactly.
    installed_unsafe = transformers_fusion.registration_is_sticky()
    assert family["verdict"] == ("unsafe" if installed_unsafe else "safe"), family["reasons"]
    assert result.returncode == (3 if installed_unsafe else 0), result.stderr
    outcomes = {c["transformers"]: c["outcome"] for c in family["downstream"]["cells"] if c["env"] == "base"}
    assert outcomes == {"5.5.4": "ignored", "5.24.0": "unsafe"}
    text = render_text(CheckReport.from_dict(report))  # the check report tells the same releases
    assert "unaffected on transformers 5.5.4: fusion_config has no effect there" in text
    assert "unsafe on transformers 5.24.0 (without torchvision): config-only load " in text
    if installed_unsafe:  # no variant is made from an unproven fused save, so it has no cells
        assert family["fused_layout"]["cells"] == []


def test_a_failed_environment_creation_leaves_nothing_behind():
    with pytest.raises(env_commands.EnvError, match=r"uv pip install transformers==0\.0\.1") as raised:
        envs.ensure_env("0.0.1")
    assert not isinstance(raised.value, uv.RequirementUnavailable)  # no release, not a missing dependency
    root = envs_root.envs_root()
    assert not list(root.glob("env-transformers-0.0.1-*"))
    assert not list(root.glob(".building-env-transformers-0.0.1-*"))


@pytest.fixture
def index_without_kernels(tmp_path, monkeypatch):
    """A package index lacking what transformers 5.25.0 requires (kernels>=0.19.1), as this machine's
    index was until 2026-12-03 and as a user's mirror may be: a folder of the real wheels of 5.25.0
    and its requirements, kernels taken out, as pip's only source (PIP_NO_INDEX, PIP_FIND_LINKS; the
    matrix's builder carries pip's settings over to uv). Environments go to a fresh folder, so an
    environment built from a fuller index is not reused."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(wheels),
         "transformers==5.25.0"],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    for wheel in wheels.glob("kernels-*.whl"):
        wheel.unlink()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("HUBFUSE_ENVS", str(tmp_path / "envs"))
    uv.pip_configuration.cache_clear()
    yield wheels
    uv.pip_configuration.cache_clear()


def test_a_release_whose_requirement_is_missing_is_unavailable_beside_a_stand_in(
    checkpoints, tmp_path, index_without_kernels
):
    """transformers 5.25.0 requires kernels>=0.19.1,<0.20, which this index lacks. Its cell is
    `unavailable` (never passing), and the stand-in (5.25.0 without kernels, hub kernels off) runs
    for real beside it, labelled, not gating."""
    from hubfuse.check.downstream import apply_matrix
    from hubfuse.check.verdict import FamilyResult
    from hubfuse.render.tables import first_reasons, matrix_rows

    source = checkpoints("qwen3_vl")
    inputs = MatrixInputs(source, _config_only_copy(source, tmp_path / "downstream"), None)
    family = FamilyResult("patch_embeddings", "safe")
    apply_matrix(family, DownstreamPlan("test", ("5.25.0",)), inputs, tmp_path, timeout=600, jobs=2)
    assert family.verdict == "unsafe"  # not proven on 5.25.0: nothing may be published
    cells = {(c.transformers, c.env): c for c in family.downstream.cells}
    unavailable = cells[("5.25.0", envs.BASE_ENV)]
    assert (unavailable.outcome, unavailable.gating, unavailable.stand_in) == ("unavailable", True, False)
    assert "kernels>=0.19.1,<0.20" in unavailable.reason
    assert "leave it out with --downstream-versions none" in unavailable.reason  # the only release
    stand_in = cells[("5.25.0", "base-without-kernels")]
    assert (stand_in.outcome, stand_in.gating, stand_in.stand_in) == ("safe", False, True)  # 5.25: exact
    assert "without kernels>=0.19.1,<0.20, USE_HUB_KERNELS=0" in stand_in.notes[0]
    assert family.reasons == [f"downstream: unavailable on transformers 5.25.0 (base): {unavailable.reason}"]
    header, rows = matrix_rows(family.downstream)
    assert header[-1] == "base-without-kernels"
    assert rows[-1][:2] == ["5.25.0", "unavailable"] and rows[-1][-1] == "safe"
    assert any("stand-in" in line and "never gating" in line for line in first_reasons(family.downstream))
    story = release_story(family.downstream)
    assert any(line.startswith("not proven on transformers 5.25.0") and "kernels" in line for line in story)
    assert any(
        line.startswith("stand-in, not gating, safe on transformers 5.25.0 (base-without-kernels)")
        for line in story
    )
    assert not any(line.startswith("safe on") and "5.25.0" in line for line in story)

    # The stand-in's name and record say what was left out.
    without = ("kernels",)
    stand_in_env = envs.Env(
        "5.25.0", (), envs_root.envs_root() / envs.env_name("5.25.0", (), without), without
    )
    assert "without-kernels" in stand_in_env.path.name
    assert envs.build_record(stand_in_env)["left_out"] == ["kernels<0.20,>=0.19.1"]


def test_uv_gets_pips_index_settings(tmp_path):
    """uv reads none of pip's configuration: pip's effective settings (its files and PIP_*
    variables, as `pip config list` merges them) become uv's options."""
    constraint = tmp_path / "pins.txt"
    constraint.write_text("tqdm<99\n")
    config = tmp_path / "pip.conf"
    config.write_text(
        f"[global]\nextra-index-url = file:///nowhere/a file:///nowhere/b\nconstraint = {constraint}\n"
    )
    script = "from hubfuse.check import uv; import json; print(json.dumps(uv.pip_configuration()))"
    env = {
        **os.environ,
        "PIP_CONFIG_FILE": str(config),
        "PIP_FIND_LINKS": str(tmp_path),
        "PIP_DEFAULT_TIMEOUT": "7",
    }
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    options, environ = json.loads(out.stdout)
    pairs = list(itertools.pairwise(options))
    assert ("--index-strategy", "unsafe-best-match") in pairs
    assert ("--extra-index-url", "file:///nowhere/a") in pairs and (
        "--extra-index-url",
        "file:///nowhere/b",
    ) in pairs
    assert ("--constraint", str(constraint)) in pairs
    assert ("--find-links", str(tmp_path)) in pairs  # the variable wins over the files' find-links
    assert ("--find-links", "/opt/wheels") not in pairs
    assert ["UV_HTTP_TIMEOUT", "7"] in environ


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with LocalHub(tmp_path_factory.mktemp("hub")) as server:
        server.alice = server.add_token("alice", role="write", orgs=["org"])
        yield server


def _seed(hub, repo_id: str, folder: Path) -> HfApi:
    api = HfApi(endpoint=hub.endpoint, token=hub.alice)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder))
    return api


def test_publish_refuses_when_a_release_crashes(hub, checkpoints, tmp_path):
    api = _seed(hub, "org/qwen3-vl-crash", checkpoints("qwen3_vl"))
    seeded = api.repo_info("org/qwen3-vl-crash").sha
    env = hubfuse_env(hub.endpoint, tmp_path, hub.alice, **{DEFAULT_ENV_VAR: "none"})
    result = run_hubfuse("publish", "org/qwen3-vl-crash", "--downstream-versions", "==5.13.1", env=env)
    assert result.returncode == 3, result.stderr
    assert "crash on transformers 5.13.1 (base)" in result.stdout
    assert "No module named 'torchvision'" in result.stdout
    assert "nothing written" in result.stdout
    assert list(api.get_repo_discussions("org/qwen3-vl-crash")) == []
    assert api.repo_info("org/qwen3-vl-crash").sha == seeded


def test_publish_with_a_narrowed_range_says_what_breaks_outside_it(hub, checkpoints, tmp_path):
    api = _seed(hub, "org/qwen3-vl-narrowed", checkpoints("qwen3_vl"))
    env = hubfuse_env(hub.endpoint, tmp_path, hub.alice, **{DEFAULT_ENV_VAR: SMALL_MATRIX})
    result = run_hubfuse(
        "publish",
        "org/qwen3-vl-narrowed",
        "--downstream-versions",
        "==5.24.0",
        "--variant",
        "--json",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    downstream = report["check"]["families"][0]["downstream"]
    assert downstream["versions"] == list(VERSIONS)
    base = {c["transformers"]: c for c in downstream["cells"] if c["env"] == "base"}
    assert {v: (c["outcome"], c["gating"]) for v, c in base.items()} == {
        "5.5.4": ("ignored", False),
        "5.13.1": ("crash", False),
        "5.24.0": ("safe", True),
    }
    variant = {
        c["transformers"]: c["outcome"] for c in report["check"]["families"][0]["fused_layout"]["cells"]
    }
    assert variant == {
        "5.5.4": "unsafe",
        "5.13.1": "crash",
        "5.24.0": "safe",
    }  # old releases: random patch embed

    (pr,) = api.get_repo_discussions("org/qwen3-vl-narrowed")
    description = api.get_discussion_details("org/qwen3-vl-narrowed", pr.num).events[0].content
    first_lines = description[: description.index("This pull request adds")]
    _assert_story_tells_every_cell(first_lines, downstream["cells"])
    assert "crash on transformers 5.13.1 (without torchvision)" in first_lines
    assert "No module named 'torchvision'" in first_lines
    assert "decided on the transformers releases `==5.24.0`" in first_lines
    assert "| 5.24.0 | safe |" in description

    (variant_action,) = [a for a in report["actions"] if a["step"] == "variant"]
    variant_repo = "/".join(variant_action["url"].rstrip("/").split("/")[-2:])
    card = Path(api.hf_hub_download(variant_repo, "README.md")).read_text(encoding="utf-8")
    card_first_lines = card[card.index(f"# {variant_repo}") : card.index("Fused-layout variant of")]
    _assert_story_tells_every_cell(card_first_lines, report["check"]["families"][0]["fused_layout"]["cells"])
    assert "unsafe on transformers 5.5.4 (without torchvision)" in card_first_lines
    assert "| 5.13.1 (not gating) | crash |" in description


def _assert_story_tells_every_cell(first_lines: str, cells: list[dict]) -> None:
    """Each cell of the run is in the text's first lines: its release on its outcome's line, with why."""
    words = {"safe": "safe on", "ignored": "unaffected on", "unsupported": "not proven on"}
    for cell in cells:
        word = words.get(cell["outcome"], f"{cell['outcome']} on")
        lines = [
            line
            for line in first_lines.splitlines()
            if line.startswith(f"- {word} transformers ") and cell["transformers"] in line
        ]
        assert len(lines) == 1, (cell, first_lines)
        assert cell["outcome"] in ("safe", "ignored") or cell["reason"] in lines[0]


def test_cached_verdicts_and_ledger_records_are_keyed_by_the_matrix(tmp_path):
    from hubfuse.check.downstream import matrix_digest
    from hubfuse.check.verdict import DownstreamCell, FamilyResult
    from hubfuse.check.verdict_cache import VerdictCache
    from hubfuse.ledger import Record
    from hubfuse.publish.steps import Source, verdict_key
    from hubfuse.publish.types import PublishOptions

    family = FamilyResult("patch_embeddings", "safe")
    family.downstream.versions = ["5.24.0"]
    family.downstream.cells = [DownstreamCell("5.24.0", "base", "safe")]
    report = CheckReport(
        "org/m", "qwen3_vl", "Qwen3VLForConditionalGeneration", "5.24.0", "2.13", "0.1", [family]
    )
    source = Source("org/m", "a" * 40, False, False, None)
    today = DownstreamPlan("default", ("5.5.4", "5.24.0"))
    tomorrow = DownstreamPlan("default", ("5.5.4", "5.24.0", "5.25.0"))  # a new release in the index
    cache = VerdictCache(tmp_path)
    cache.put(verdict_key(source, PublishOptions("org/m", downstream=today)), report)
    cached = cache.get(verdict_key(source, PublishOptions("org/m", downstream=today)))
    assert cached is not None and cached.families[0].downstream.cells == family.downstream.cells
    assert cache.get(verdict_key(source, PublishOptions("org/m", downstream=tomorrow))) is None
    assert cache.get(verdict_key(source, PublishOptions("org/m"))) is None

    record = Record(
        "org/m", "a" * 40, [], "0.1", "5.24.0", "2.13", "published", downstream=matrix_digest(today)
    )
    versions = {"hubfuse": "0.1", "transformers": "5.24.0", "torch": "2.13"}
    assert record.settles("a" * 40, [], {**versions, "downstream": matrix_digest(today)})
    assert not record.settles("a" * 40, [], {**versions, "downstream": matrix_digest(tomorrow)})


def test_uvs_explanation_is_read_however_uv_wraps_it() -> None:
    """uv wraps its resolver explanation to the terminal's width (this one is from a CI run, where
    `.ci/run` read the 5.25.0 cell as `error`): the missing requirement is found in any wrapping."""
    from hubfuse.check.uv import unavailable_requirement

    wrapped = (
        "error: No solution found when resolving dependencies\n"
        "  cause: Because only kernels<=0.17.2 is available and transformers>=5.25.0\n"
        "         depends on kernels>=0.19.1,<0.20, we can conclude that\n"
        "         transformers>=5.25.0 cannot be used.\n"
        "         And because you require transformers==5.25.0, we can conclude that your\n"
        "         requirements are unsatisfiable.\n"
    )
    assert unavailable_requirement(wrapped) == "kernels>=0.19.1,<0.20"
    assert unavailable_requirement(" ".join(wrapped.split())) == "kernels>=0.19.1,<0.20"
    # A release alone in the locations uv may use: "all versions of transformers depend on".
    alone = (
        "  cause: Because kernels was not found in the provided package locations and all versions of\n"
        "         transformers depend on kernels>=0.19.1,<0.20, we can conclude that all versions of\n"
        "         transformers cannot be used."
    )
    assert unavailable_requirement(alone) == "kernels>=0.19.1,<0.20"
