"""hubfuse as a user installs it: a wheel built from the source, in a fresh virtual environment.

torch, transformers and the other dependencies come from this checkout's .venv through a path
entry (no download); hubfuse itself comes only from the wheel, run outside the source tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from cli_env import hubfuse_env
from huggingface_hub import HfApi

from hubfuse.localhub import LocalHub

REPO_ROOT = Path(__file__).resolve().parent.parent


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy holding only what a source distribution holds: nothing else to lean on."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "hubfuse", source / "hubfuse", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
        "-w", dist, source)  # fmt: skip
    (wheel,) = dist.glob("hubfuse-*.whl")
    return wheel


def fresh_venv(tmp_path: Path, wheel: Path) -> Path:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    site_packages = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    ).stdout.strip()
    # A bare path line: the dependencies become importable, this checkout's editable hubfuse does not.
    (Path(site_packages) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel)
    return venv


@pytest.mark.slow
def test_installed_wheel_renders_the_variant_card(checkpoints, tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path, build_wheel(tmp_path))
    where = run(venv / "bin" / "python", "-c", "import hubfuse; print(hubfuse.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(venv)), where.stdout

    with LocalHub(tmp_path / "hub") as hub:
        token = hub.add_token("alice", role="write")
        api = HfApi(endpoint=hub.endpoint, token=token)
        api.create_repo("alice/tiny")
        api.upload_folder(repo_id="alice/tiny", folder_path=str(checkpoints("qwen3_vl")))
        env = hubfuse_env(hub.endpoint, tmp_path, token)
        env.pop("PYTHONPATH", None)
        result = subprocess.run(
            [str(venv / "bin" / "hubfuse"), "publish", "alice/tiny", "--variant", "--dry-run"],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    assert "would_create" in result.stdout
    card = result.stdout.split("variant model card:", 1)[1]
    assert "alice/tiny" in card and "base_model: alice/tiny" in card


# transformers' private fusion names: only hubfuse/check/transformers_fusion.py may use them.
_FUSION_INTERNALS = ("fusion" + "_mapping import", "transformers.fusion" + "_mapping\"", "register_fusion_patches",
                     "get_fusion_patch_mapping", "ModuleFusionSpec", "_FUSION_REGISTRY", "make_transforms",
                     "PatchEmbeddingsFusionSpec", "import transformers.fusion" + "_mapping")  # fmt: skip
_ADAPTER = REPO_ROOT / "hubfuse" / "check" / "transformers_fusion.py"


def test_only_the_adapter_names_transformers_fusion_internals() -> None:
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {name}"
        for folder in ("hubfuse", "tests", "bench", "scripts")
        for path in sorted((REPO_ROOT / folder).rglob("*.py"))
        if path not in (_ADAPTER, Path(__file__).resolve())
        # bench/.data holds the benchmarks' environments: transformers itself, not hubfuse's code
        and not any(part.startswith(".") for part in path.relative_to(REPO_ROOT).parts)
        for name in _FUSION_INTERNALS
        if name in path.read_text(encoding="utf-8")
    ]
    assert offenders == []
